"""People in the loop.

- `human` (agent): votes the grade a reviewer gave a pair (escalations resolved with
  `serm escalations import`), and abstains on every other pair. A human vote decides the
  label (status `human`), whatever the other agents said.
- `SimulatedHuman`: stands in for reviewers in the default run and benchmarks. It resolves up
  to `budget` escalations per round with the hidden gold grade; every report names it as a
  simulation.
"""

from __future__ import annotations

from serm.agents import AgentParams
from serm.annotation.base import AnnotationAgent, AnnotationContext, votes_frame
from serm.schema import LabelStatus


class HumanJudge(AnnotationAgent):
    name = "human"
    cacheable = False  # a pair it abstained on yesterday may have a reviewer's grade today

    class Params(AgentParams):
        pass

    def vote(self, ctx: AnnotationContext):
        resolved = {}
        if ctx.resolved is not None and len(ctx.resolved):
            latest = ctx.resolved.drop_duplicates(["query_id", "doc_id"], keep="last")
            reviewers = latest["reviewer"] if "reviewer" in latest else [""] * len(latest)
            resolved = {(q, d): (int(g), r) for q, d, g, r in zip(latest.query_id, latest.doc_id, latest.grade, reviewers)}
        rows = []
        for r in ctx.pairs.itertuples(index=False):
            hit = resolved.get((r.query_id, r.doc_id))
            if hit is None:
                rows.append((r.query_id, r.doc_id, self.name, 0, None, "no human resolution", 0.0, 0, 0.0))
            else:
                rows.append((r.query_id, r.doc_id, self.name, 0, hit[0], f"resolved by reviewer {hit[1] or '(unnamed)'}",
                             0.0, 0, 0.0))
        return votes_frame(rows)


class SimulatedHuman:
    name = "human(simulated)"

    def __init__(self, budget: int, truth):
        self.budget = budget
        self.truth = truth  # (query_id, doc_id) -> the hidden grade

    def resolve(self, escalated):
        """Returns the resolved rows (status 'human') and the still-open rest."""
        take = escalated.head(self.budget).copy()
        take["grade"] = [int(self.truth(q, d)) for q, d in zip(take.query_id, take.doc_id)]
        take["grade"] = take["grade"].astype("Int8")
        take["agreement"] = 1.0
        take["status"] = LabelStatus.HUMAN.value
        take["why"] = "resolved by " + self.name
        return take, escalated.iloc[len(take):].copy()
