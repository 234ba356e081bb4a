"""`click_evidence`: grades from position-debiased engagement. Under a position-based click
model, attractiveness ≈ CTR / P(examine position); P(examine k) = 1 / k ** decay.
Abstains when too few impressions make the estimate meaningless."""

from __future__ import annotations

from pydantic import Field

from serm.agents import AgentParams
from serm.annotation.base import AnnotationAgent, AnnotationContext, grade_from_thresholds, votes_frame


class ClickEvidence(AnnotationAgent):
    name = "click_evidence"

    class Params(AgentParams):
        min_sessions: int = Field(1, ge=1, description="impressions needed before the agent votes")
        examination_decay: float = Field(1.0, ge=0.0)
        thresholds: tuple[float, float, float] = (0.1, 0.3, 0.6)
        min_expected_clicks: float = Field(0.5, ge=0.0, description="abstain on unclicked pairs examined less than this")

    def vote(self, ctx: AnnotationContext):
        import numpy as np

        p = self.params
        rows = []
        for r in ctx.pairs.itertuples(index=False):
            imp = 0 if r.impressions != r.impressions else int(r.impressions or 0)
            clicks = 0 if r.clicks != r.clicks else int(r.clicks or 0)
            pos = float(r.mean_position) if r.mean_position == r.mean_position and r.mean_position else 1.0
            examine = 1.0 / pos ** p.examination_decay
            if imp < p.min_sessions:
                grade, why = None, f"only {imp} impression(s)"
            elif clicks == 0 and imp * examine < p.min_expected_clicks:
                grade, why = None, f"no clicks, but rank {pos:.0f} was rarely examined"
            else:
                attract = min(1.0, clicks / imp / examine)
                grade = grade_from_thresholds(attract, p.thresholds)
                why = f"{clicks}/{imp} clicks at mean rank {pos:.1f}: attractiveness {attract:.2f}"
            rows.append((r.query_id, r.doc_id, self.name, 0, grade, why, 0.0, 0, 0.0))
        return votes_frame(rows)
