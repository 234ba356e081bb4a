"""`noisy_judge` (simulation only): a stand-in for an imperfect assessor in benchmarks. It knows
the hidden grade and reports it with probability `accuracy`, otherwise a grade `max_error`
steps away at most (never the true one). It needs the simulation's hidden grades
(`AnnotationContext.truth`), which a workspace round never hands out: it cannot run on a real
stream, and every vote's rationale names it as simulated.
"""

from __future__ import annotations

from pydantic import Field

from serm.agents import AgentParams
from serm.annotation.base import AnnotationAgent, AnnotationContext, pair_rng, votes_frame
from serm.errors import DataError


class NoisyJudge(AnnotationAgent):
    name = "noisy_judge"

    class Params(AgentParams):
        accuracy: float = Field(0.7, ge=0.0, le=1.0, description="P(reporting the hidden grade)")
        max_error: int = Field(3, ge=1, le=3, description="a wrong grade is at most this far from the truth")
        samples: int = Field(1, ge=1, le=20, description="independent draws per pair")

    def vote(self, ctx: AnnotationContext):
        if ctx.truth is None:
            raise DataError("noisy_judge is a simulation agent: it needs hidden grades, which only `serm bench` "
                            "provides; remove it from the policy of a real workspace")
        p = self.params
        rows = []
        for r in ctx.pairs.itertuples(index=False):
            truth = int(ctx.truth(r.query_id, r.doc_id))
            rng = pair_rng(ctx.seed, 23, r.query_id, r.doc_id)
            wrong = [g for g in range(4) if g != truth and abs(g - truth) <= p.max_error]
            for s in range(p.samples):
                right = rng.random() < p.accuracy
                grade = truth if right else int(rng.choice(wrong))
                rows.append((r.query_id, r.doc_id, self.name, s, grade,
                             f"simulated judge: hidden grade kept with P={p.accuracy}", 0.0, 0, 0.0))
        return votes_frame(rows)
