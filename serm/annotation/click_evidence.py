"""`click_evidence`: grades from position-debiased engagement.

`model: pbm` (default) fits the position-based click model of the miner's `click_model` agent
(`serm.mining.click_model.fit_pbm`, EM on the batch's impressions) and grades each pair by its
estimated attractiveness α. `model: ctr` uses the one-line estimate α ≈ CTR / P(examine rank),
with P(examine k) = 1 / k ** examination_decay, for contexts without per-impression events.
Abstains when too few impressions make the estimate meaningless.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from serm.agents import AgentParams
from serm.annotation.base import AnnotationAgent, AnnotationContext, grade_from_thresholds, votes_frame


class ClickEvidence(AnnotationAgent):
    name = "click_evidence"
    uses_engagement = True
    # Its grade follows the batch's clicks, which the vote cache's key (params, query and
    # document text) does not see; it costs milliseconds, so it is never cached.
    cacheable = False

    class Params(AgentParams):
        model: Literal["pbm", "ctr"] = "pbm"
        min_sessions: int = Field(1, ge=1, description="impressions needed before the agent votes")
        examination_decay: float = Field(1.0, ge=0.0, description="P(examine rank k) = 1/k^decay (ctr; pbm prior)")
        thresholds: tuple[float, float, float] = (0.1, 0.3, 0.6)
        min_expected_clicks: float = Field(0.5, ge=0.0, description="abstain on unclicked pairs examined less than this")
        prior_mean: float = Field(0.2, gt=0.0, lt=1.0, description="pbm: Beta prior on α, mean")
        prior_strength: float = Field(2.0, ge=0.0, description="pbm: Beta prior on α, pseudo-impressions")

    def vote(self, ctx: AnnotationContext):
        import numpy as np

        p = self.params
        pairs = ctx.pairs.reset_index(drop=True)
        imp = np.nan_to_num(pairs["impressions"].to_numpy(dtype=float), nan=0.0).astype(int)
        clicks = np.nan_to_num(pairs["clicks"].to_numpy(dtype=float), nan=0.0).astype(int)
        pos = np.nan_to_num(pairs["mean_position"].to_numpy(dtype=float), nan=1.0)
        pos[pos <= 0] = 1.0
        examine = 1.0 / pos ** p.examination_decay
        if p.model == "pbm":
            from serm.mining.click_model import fit_pbm, impression_cells

            cell_pair, rank, n, c = impression_cells(pairs, ctx.events)
            alpha, _, _ = fit_pbm(cell_pair, rank, n, c, len(pairs), p.prior_mean, p.prior_strength,
                                  p.examination_decay, 1000.0)
        else:
            alpha = np.minimum(1.0, np.divide(clicks, imp * examine, out=np.zeros(len(pairs)), where=imp > 0))
        rows = []
        for i, r in enumerate(pairs.itertuples(index=False)):
            if imp[i] < p.min_sessions:
                grade, why = None, f"only {imp[i]} impression(s)"
            elif clicks[i] == 0 and imp[i] * examine[i] < p.min_expected_clicks:
                grade, why = None, f"no clicks, but rank {pos[i]:.0f} was rarely examined"
            else:
                grade = grade_from_thresholds(float(alpha[i]), p.thresholds)
                why = f"{clicks[i]}/{imp[i]} clicks at mean rank {pos[i]:.1f}: {p.model} attractiveness {alpha[i]:.2f}"
            rows.append((r.query_id, r.doc_id, self.name, 0, grade, why, 0.0, 0, 0.0))
        return votes_frame(rows)
