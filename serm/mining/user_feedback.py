"""`user_feedback`: users engaged (clicked, or dwelled long) but the model scored the pair low —
false negatives of the production model, the first sign of drift."""

from __future__ import annotations

from pydantic import Field

from serm.agents import AgentParams
from serm.mining.base import MiningAgent, MiningContext, Picks


class UserFeedback(MiningAgent):
    name = "user_feedback"
    needs_model = False  # engagement alone chooses what to score; "scored low" needs the score

    class Params(AgentParams):
        min_clicks: int = Field(1, ge=1, description="clicks that count as engagement")
        min_dwell_s: float = Field(10.0, ge=0.0, description="mean dwell (s) that counts as engagement")
        max_score: float = Field(1.5, ge=0.0, le=3.0, description="expected grade below which the model 'scored low'")

    def flag(self, ctx: MiningContext):
        p = self.params
        clicks = ctx.pairs["clicks"].fillna(0).to_numpy()
        dwell = ctx.pairs["mean_dwell_s"].fillna(0).to_numpy()
        return (clicks >= p.min_clicks) | (dwell >= p.min_dwell_s) & (clicks > 0)

    def select(self, ctx: MiningContext) -> Picks:
        import numpy as np

        p = self.params
        clicks = ctx.pairs["clicks"].fillna(0).to_numpy()
        dwell = ctx.pairs["mean_dwell_s"].fillna(0).to_numpy()
        engaged = self.flag(ctx)
        low = ctx.scored & (np.nan_to_num(ctx.score, nan=np.inf) < p.max_score)
        idx = np.flatnonzero(engaged & low)
        priority = (p.max_score - ctx.score[idx]) * (1.0 + np.log1p(clicks[idx]))
        reasons = [f"clicked {int(clicks[i])}x (mean dwell {dwell[i]:.0f}s) but scored {ctx.score[i]:.2f} < {p.max_score}"
                   for i in idx]
        return Picks(idx, priority, reasons, {"engaged": int(engaged.sum()), "engaged_scored": int((engaged & ctx.scored).sum())})
