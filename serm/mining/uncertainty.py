"""`uncertainty`: the model is unsure of the grade (entropy, margin or least-confidence over
the 4 grade probabilities). Picks the most uncertain `top_share` of the scored pairs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from serm.agents import AgentParams
from serm.mining.base import MiningAgent, MiningContext, Picks


def uncertainty(proba, measure: str):
    """Higher = more uncertain, for each row of a (n, 4) probability matrix."""
    import numpy as np

    if measure == "entropy":
        return -(proba * np.log(np.clip(proba, 1e-12, 1.0))).sum(axis=1)
    top2 = np.sort(proba, axis=1)[:, -2:]
    if measure == "margin":
        return 1.0 - (top2[:, 1] - top2[:, 0])
    return 1.0 - top2[:, 1]  # least_confidence


class Uncertainty(MiningAgent):
    name = "uncertainty"

    class Params(AgentParams):
        measure: Literal["entropy", "margin", "least_confidence"] = "entropy"
        top_share: float = Field(0.1, gt=0.0, le=1.0, description="share of the scored pairs to pick")
        min_value: float = Field(0.0, ge=0.0, description="pick nothing below this uncertainty")

    def select(self, ctx: MiningContext) -> Picks:
        import numpy as np

        rows = np.flatnonzero(ctx.scored)
        u = uncertainty(ctx.proba[rows], self.params.measure)
        n = int(np.ceil(len(u) * self.params.top_share))
        top = np.argsort(-u, kind="stable")[:n]
        top = top[u[top] >= self.params.min_value]
        idx = rows[top]
        reasons = [f"{self.params.measure} {u[j]:.2f} (P(grade)={[round(float(x), 2) for x in ctx.proba[i]]})"
                   for i, j in zip(idx, top)]
        return Picks(idx, u[top], reasons)
