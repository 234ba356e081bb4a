"""`word_overlap`: the share of the query's words found in the document, mapped to a grade."""

from __future__ import annotations

from pydantic import Field

from serm.agents import AgentParams
from serm.annotation.base import AnnotationAgent, AnnotationContext, grade_from_thresholds, votes_frame


class WordOverlap(AnnotationAgent):
    name = "word_overlap"

    class Params(AgentParams):
        thresholds: tuple[float, float, float] = (0.2, 0.5, 0.8)

    def vote(self, ctx: AnnotationContext):
        rows = []
        for r in ctx.pairs.itertuples(index=False):
            words = set(str(r.query).lower().split())
            doc = set(f"{r.doc_title} {r.doc_text}".lower().replace("_", " ").split())
            share = len(words & doc) / len(words) if words else 0.0
            grade = grade_from_thresholds(share, self.params.thresholds) if words else None
            rows.append((r.query_id, r.doc_id, self.name, 0, grade, f"{share:.2f} of the query words in the document",
                         0.0, 0, 0.0))
        return votes_frame(rows)
