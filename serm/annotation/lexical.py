"""`lexical`: BM25 (bm25s) over the locale's documents; the pair's score relative to the best
document for the query is mapped to a grade by thresholds."""

from __future__ import annotations

import time

from pydantic import Field

from serm.agents import AgentParams
from serm.annotation.base import (AnnotationAgent, AnnotationContext, grade_from_thresholds, pair_rng, perturb,
                                  votes_frame)


class LexicalJudge(AnnotationAgent):
    name = "lexical"

    class Params(AgentParams):
        samples: int = Field(3, ge=1, le=20, description="repeated judgments on perturbed queries")
        perturbation: float = Field(0.15, ge=0.0, lt=1.0, description="share of query words dropped per sample")
        thresholds: tuple[float, float, float] = (0.35, 0.6, 0.85)
        k1: float = Field(1.2, gt=0.0)
        b: float = Field(0.75, ge=0.0, le=1.0)

    def vote(self, ctx: AnnotationContext):
        import bm25s
        import numpy as np

        p = self.params
        rows = []
        for locale, pairs in ctx.pairs.groupby("locale", sort=False):
            docs = ctx.documents[ctx.documents["locale"] == locale].reset_index(drop=True)
            t0 = time.perf_counter()
            corpus = (docs["title"].str.replace("_", " ") + " " + docs["text"]).tolist()
            retriever = bm25s.BM25(k1=p.k1, b=p.b)
            retriever.index(bm25s.tokenize(corpus, stopwords=None, show_progress=False), show_progress=False)
            pos = {d: i for i, d in enumerate(docs["doc_id"])}
            for r in pairs.itertuples(index=False):
                rng = pair_rng(ctx.seed, 0, r.query_id, r.doc_id)
                for s in range(p.samples):
                    q = r.query if s == 0 else perturb(r.query, p.perturbation, rng)
                    toks = bm25s.tokenize([q], stopwords=None, show_progress=False, return_ids=False)[0]
                    scores = retriever.get_scores(toks) if toks else np.zeros(len(docs))
                    best = float(scores.max()) if len(scores) else 0.0
                    if r.doc_id not in pos or best <= 0:
                        grade, why = None, "no query term matches any document" if best <= 0 else "document not in corpus"
                    else:
                        rel = float(scores[pos[r.doc_id]]) / best
                        grade = grade_from_thresholds(rel, p.thresholds)
                        why = f"bm25 {scores[pos[r.doc_id]]:.2f} = {rel:.2f} of the best document"
                    rows.append((r.query_id, r.doc_id, self.name, s, grade, why,
                                 round((time.perf_counter() - t0) * 1000, 2), 0, 0.0))
                    t0 = time.perf_counter()
        return votes_frame(rows)
