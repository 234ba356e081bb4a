"""`disagreement`: query by committee — pairs on which model versions disagree.

The committee is the production model and earlier versions (`production`, `previous` or `vN`)
when the workspace has at least two of them; otherwise it is the production model under Monte
Carlo dropout (Gal & Ghahramani, 2016) with `mc_dropout_passes` stochastic passes; by default
only the last encoder layer and the classifier are sampled (`mc_dropout_layers: 1`), the layers
below running once per pair for every pass (a pass then costs ~1/6 of a forward on MiniLM-L6;
`null` samples every layer, as in the paper). Disagreement
is the mean KL divergence of each member's grade distribution to the committee mean, or the
entropy of the members' votes (McCallum & Nigam, 1998; Settles, "Active Learning Literature
Survey", 3.2). Picks the most disputed `top_share` of the scored pairs.

The production member is the round's shared scoring pass; every other member scores again.
Those extra passes are counted in the agent's stats, and `max_share` caps them: only that share
of the scored pairs, the most uncertain under the production model first, goes to the committee,
so the committee costs (members - 1) × max_share of one scoring pass (under MC dropout, one pass
of the unsampled layers plus passes × the sampled ones, × max_share).
"""

from __future__ import annotations

import contextlib
import re
from typing import Literal

from pydantic import Field, field_validator

from serm.agents import AgentParams
from serm.mining.base import MiningAgent, MiningContext, Picks
from serm.mining.uncertainty import uncertainty


def committee_disagreement(members, measure: str):
    """Per-pair disagreement of a committee: `members` is a list of (n, 4) probability matrices."""
    import numpy as np

    p = np.clip(np.stack(members).astype(np.float64), 1e-12, 1.0)  # (C, n, 4)
    if measure == "vote_entropy":
        votes = np.eye(p.shape[-1])[p.argmax(-1)].mean(0)  # (n, 4) share of members voting each grade
        return -(votes * np.log(np.clip(votes, 1e-12, 1.0))).sum(-1)
    mean = p.mean(0)
    return (p * (np.log(p) - np.log(mean))).sum(-1).mean(0)  # kl_to_mean


@contextlib.contextmanager
def seeded(seed: int):
    """torch's RNG (CPU and CUDA) seeded for the block and restored after it, so dropout passes
    repeat without touching the caller's random state."""
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):   # manual_seed seeds CUDA too: fork it as well
        torch.manual_seed(seed)
        yield


class Disagreement(MiningAgent):
    name = "disagreement"

    class Params(AgentParams):
        committee: list[str] = Field(default_factory=lambda: ["production", "previous"], min_length=1,
                                     description="model versions: production, previous or vN")
        measure: Literal["kl_to_mean", "vote_entropy"] = "kl_to_mean"
        mc_dropout_passes: int = Field(4, ge=2, le=64, description="dropout passes when fewer than 2 versions exist")
        mc_dropout_layers: int | None = Field(1, ge=1, description="sample dropout in the last N encoder layers "
                                              "and the classifier only; the layers below run once per pair for "
                                              "all passes (null: every layer, each pass a full forward)")
        top_share: float = Field(0.1, gt=0.0, le=1.0, description="share of the scored pairs to pick")
        max_share: float = Field(1.0, gt=0.0, le=1.0, description="share of the scored pairs the committee "
                                 "re-scores, most uncertain under production first")
        min_value: float = Field(0.0, ge=0.0, description="pick nothing below this disagreement")
        seed: int = 0

        @field_validator("committee")
        @classmethod
        def _names(cls, v):
            bad = [n for n in v if not re.fullmatch(r"production|previous|v\d+", n)]
            if bad:
                raise ValueError(f"unknown committee member(s) {bad}; use production, previous or vN (e.g. v3)")
            return v

    def select(self, ctx: MiningContext) -> Picks:
        import numpy as np

        p = self.params
        rows = np.flatnonzero(ctx.scored)
        if ctx.models is None or not len(rows):
            return Picks(np.zeros(0, dtype=int), np.zeros(0), [], {"skipped": "no model versions or no scored pairs"})
        n_scored = len(rows)
        if p.max_share < 1.0:
            u = uncertainty(ctx.proba[rows], "entropy")
            rows = np.sort(rows[np.argsort(-u, kind="stable")[:int(np.ceil(n_scored * p.max_share))]])
        frame = ctx.pairs.iloc[rows]
        prod = ctx.models.production
        versions = ctx.models.resolve(p.committee)
        members, names = [], []
        if len(versions) >= 2:
            for v in versions:
                members.append(ctx.proba[rows] if v == prod else ctx.models.load(v).score_frame(frame))
                names.append(f"v{v}")
            extra = len(rows) * sum(v != prod for v in versions)
            mode = "versions"
        else:
            model = ctx.models.load(prod)
            members.append(ctx.proba[rows])
            with seeded(p.seed):
                members += list(model.score_frame(frame, dropout=True, passes=p.mc_dropout_passes,
                                                  dropout_layers=p.mc_dropout_layers))
            names = [f"v{prod}"] + [f"v{prod}~dropout{i + 1}" for i in range(p.mc_dropout_passes)]
            extra = len(rows) * p.mc_dropout_passes
            mode = "mc_dropout"
        d = committee_disagreement(members, p.measure)
        n = int(np.ceil(n_scored * p.top_share))
        top = np.argsort(-d, kind="stable")[:n]
        top = top[d[top] >= p.min_value]
        grades = np.stack([m.argmax(-1) for m in members])  # (C, rows)
        expected = np.stack([(m.astype(np.float64) * np.arange(4)).sum(-1) for m in members])
        label = "committee " + ("of " + ", ".join(names) if mode == "versions" else f"v{prod} + {p.mc_dropout_passes} MC-dropout passes")
        reasons = [f"{label} disagree: {p.measure} {d[j]:.3f}; expected grades "
                   f"{np.round(expected[:, j], 2).tolist()}, votes {grades[:, j].tolist()}" for j in top]
        stats = {"mode": mode, "committee": names, "rescored_pairs": int(len(rows)), "extra_forward_passes": int(extra)}
        if mode == "mc_dropout":
            stats["sampled_layers"] = p.mc_dropout_layers or "all"
        return Picks(rows[top], d[top], reasons, stats)
