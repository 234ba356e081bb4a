"""`click_model`: users find a pair attractive, once position bias is taken out, but the model
scores it low.

A position-based click model (PBM; Chuklin, Markov & de Rijke, "Click Models for Web Search",
2015, ch. 3.3 and 4.2) explains each impression's click as C = E·A: the user examines rank k
with probability θ_k and, having examined it, is attracted by document d for query q with
probability α_qd. Raw CTR confounds the two (a good document shown at rank 5 gets few clicks);
EM on the batch's impressions separates them:

    E-step, for a skipped impression at rank k:
        P(A=1 | C=0) = (1-θ_k)·α_qd / (1 - θ_k·α_qd)      P(E=1 | C=0) = θ_k·(1-α_qd) / (1 - θ_k·α_qd)
    M-step:
        α_qd = (Σ_clicks 1 + Σ_skips P(A=1|C=0) + s·m) / (impressions_qd + s)
        θ_k  = (Σ_clicks 1 + Σ_skips P(E=1|C=0)) / impressions_k

`m, s` are a Beta prior on α (pseudo-impressions: a pair seen twice should not get α = 1 from
one click). θ has a prior too: `examination_strength` pseudo-impressions per rank at
θ_k = 1/k^`examination_exponent` (M-step θ_k = (Σ … + s_θ·θ0_k) / (impressions_k + s_θ)).
PBM is identified only up to a factor between θ and α, so θ is scaled after each step so that
rank 1 is always examined; beyond that, telling θ from α needs the same documents shown at
several ranks. Where each pair was shown at one rank only (the stream simulator serves one
ranking per query), the data cannot separate them and θ comes from its prior: that prior is
what keeps the fit meaningful on small batches, and thousands of impressions per rank outweigh it.
"""

from __future__ import annotations

from pydantic import Field

from serm.agents import AgentParams
from serm.mining.base import MiningAgent, MiningContext, Picks


def fit_pbm(pair: "object", rank: "object", impressions: "object", clicks: "object", n_pairs: int,
            prior_mean: float = 0.2, prior_strength: float = 2.0, examination_exponent: float = 1.0,
            examination_strength: float = 0.0, max_iter: int = 200, tol: float = 1e-6):
    """EM for the position-based model on grouped impressions.

    Each row is one (pair, rank) cell: `pair` (row index, 0..n_pairs-1), `rank` (1-based),
    `impressions` and `clicks` there. Returns (alpha per pair, theta per rank (index 0 = rank 1),
    iterations run). Pairs without impressions keep the prior mean; ranks never shown keep
    the examination prior.
    """
    import numpy as np

    pair = np.asarray(pair, dtype=np.int64)
    k = np.asarray(rank, dtype=np.int64) - 1
    n = np.asarray(impressions, dtype=np.float64)
    c = np.asarray(clicks, dtype=np.float64)
    n_ranks = int(k.max()) + 1 if len(k) else 1
    skips = n - c
    n_pair = np.bincount(pair, n, minlength=n_pairs)
    n_rank = np.bincount(k, n, minlength=n_ranks)
    alpha = (np.bincount(pair, c, minlength=n_pairs) + prior_strength * prior_mean) / (n_pair + prior_strength)
    theta0 = 1.0 / np.arange(1, n_ranks + 1) ** examination_exponent
    theta = np.minimum(theta0, 0.5)  # θ = 1 is a fixed point of EM (skips never explained by
    theta[0] = 1.0                     # non-examination): start below it
    it = 0
    for it in range(1, max_iter + 1):
        t, a = theta[k], alpha[pair]
        denom = np.clip(1.0 - t * a, 1e-12, None)
        attracted = c + skips * (1.0 - t) * a / denom
        examined = c + skips * t * (1.0 - a) / denom
        new_alpha = (np.bincount(pair, attracted, minlength=n_pairs) + prior_strength * prior_mean) / (n_pair + prior_strength)
        s_t = examination_strength
        new_theta = np.divide(np.bincount(k, examined, minlength=n_ranks) + s_t * theta0, n_rank + s_t,
                              out=theta0.copy(), where=n_rank + s_t > 0)
        top = new_theta[0] if new_theta[0] > 0 else 1.0
        new_theta = np.clip(new_theta / top, 1e-6, 1.0)
        new_alpha = np.clip(new_alpha * top, 0.0, 1.0)
        change = max(np.abs(new_alpha - alpha).max(initial=0.0), np.abs(new_theta - theta).max(initial=0.0))
        alpha, theta = new_alpha, new_theta
        if change < tol:
            break
    return alpha, theta, it


def impression_cells(pairs, events=None):
    """(pair row, rank, impressions, clicks) cells from the batch's events, or from the pair
    aggregates (rank = rounded mean position) when the context has no events."""
    import numpy as np
    import pandas as pd

    keys = pd.MultiIndex.from_frame(pairs[["query_id", "doc_id"]])
    if events is not None and len(events):
        g = events.groupby(["query_id", "doc_id", "position"], sort=False)["clicked"].agg(["size", "sum"]).reset_index()
        row = keys.get_indexer(pd.MultiIndex.from_frame(g[["query_id", "doc_id"]]))
        keep = row >= 0
        return row[keep], g["position"].to_numpy()[keep], g["size"].to_numpy()[keep], g["sum"].to_numpy()[keep]
    imp = pairs["impressions"].fillna(0).to_numpy()
    keep = imp > 0
    rank = np.maximum(1, np.round(pairs["mean_position"].fillna(1).to_numpy()))
    return (np.flatnonzero(keep), rank[keep].astype(int), imp[keep], pairs["clicks"].fillna(0).to_numpy()[keep])


class ClickModel(MiningAgent):
    name = "click_model"
    needs_model = False  # the click model alone chooses what to score; "scored low" needs the score

    class Params(AgentParams):
        min_attractiveness: float = Field(0.4, gt=0.0, le=1.0, description="PBM attractiveness α above which users "
                                          "want the document (τ_cm)")
        max_score: float = Field(1.5, ge=0.0, le=3.0, description="expected grade below which the model 'scored low'")
        min_impressions: int = Field(1, ge=1, description="ignore pairs shown fewer times")
        prior_mean: float = Field(0.2, gt=0.0, lt=1.0, description="Beta prior on α: mean")
        prior_strength: float = Field(2.0, ge=0.0, description="Beta prior on α: pseudo-impressions")
        examination_exponent: float = Field(1.0, ge=0.0, le=5.0, description="prior on θ: θ_k = 1/k^exponent")
        examination_strength: float = Field(1000.0, ge=0.0, description="prior on θ: pseudo-impressions per rank")
        max_iter: int = Field(200, ge=1, le=10_000, description="EM iterations at most")

    def fit(self, ctx: MiningContext):
        """(alpha per pair row, theta per rank, iterations), fitted once per context."""
        key = str(self)
        if key not in ctx.shared:
            p = self.params
            pair, rank, n, c = impression_cells(ctx.pairs, ctx.events)
            ctx.shared[key] = fit_pbm(pair, rank, n, c, len(ctx.pairs), p.prior_mean, p.prior_strength,
                                      p.examination_exponent, p.examination_strength, p.max_iter)
        return ctx.shared[key]

    def flag(self, ctx: MiningContext):
        alpha, _, _ = self.fit(ctx)
        imp = ctx.pairs["impressions"].fillna(0).to_numpy()
        return (alpha >= self.params.min_attractiveness) & (imp >= self.params.min_impressions)

    def select(self, ctx: MiningContext) -> Picks:
        import numpy as np

        p = self.params
        alpha, theta, iters = self.fit(ctx)
        attractive = self.flag(ctx)
        low = ctx.scored & (np.nan_to_num(ctx.score, nan=np.inf) < p.max_score)
        idx = np.flatnonzero(attractive & low)
        # Users' verdict minus the model's, both on a 0-1 scale.
        priority = alpha[idx] - ctx.score[idx] / 3.0
        pairs = ctx.pairs
        clicks, imp, pos = (pairs[c].fillna(0).to_numpy() for c in ("clicks", "impressions", "mean_position"))
        reasons = [f"PBM attractiveness {alpha[i]:.2f} >= {p.min_attractiveness} ({int(clicks[i])} clicks in "
                   f"{int(imp[i])} impressions at rank {pos[i]:.0f}, examined {theta[min(len(theta), max(1, round(pos[i]))) - 1]:.2f}) "
                   f"but scored {ctx.score[i]:.2f} < {p.max_score}" for i in idx]
        stats = {"theta": [round(float(t), 3) for t in theta[:10]], "em_iterations": int(iters),
                 "attractive": int(attractive.sum())}
        return Picks(idx, priority, reasons, stats)
