"""`lexical`: BM25 (bm25s) over the locale's documents; the pair's score relative to the best
document for the query is mapped to a grade by thresholds, fixed or learned from labelled
pairs (`calibration: learned`, `serm.annotation.calibration`)."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field

from serm.agents import AgentParams
from serm.annotation.base import (AnnotationAgent, AnnotationContext, grade_from_thresholds, labelled_token,
                                  pair_rng, perturb, votes_frame)
from serm.annotation.calibration import fit_by_locale, labelled_pairs


class LexicalJudge(AnnotationAgent):
    name = "lexical"

    class Params(AgentParams):
        samples: int = Field(3, ge=1, le=20, description="repeated judgments on perturbed queries")
        perturbation: float = Field(0.15, ge=0.0, lt=1.0, description="share of query words dropped per sample")
        thresholds: tuple[float, float, float] = Field(
            (0.35, 0.6, 0.85), description="[t1, t2, t3] on the BM25 share of the best document (calibration: fixed)")
        calibration: Literal["fixed", "learned"] = Field(
            "fixed", description="learned: fit the thresholds on the labelled pairs every round "
            "(serm.annotation.calibration)")
        k1: float = Field(1.2, gt=0.0)
        b: float = Field(0.75, ge=0.0, le=1.0)

    def cache_token(self, ctx: AnnotationContext) -> str:
        return labelled_token(ctx) if self.params.calibration == "learned" else ""

    def _index(self, documents, locale):
        import bm25s

        docs = documents[documents["locale"] == locale].reset_index(drop=True)
        corpus = (docs["title"].fillna("").str.replace("_", " ") + " " + docs["text"].fillna("")).tolist()
        retriever = bm25s.BM25(k1=self.params.k1, b=self.params.b)
        retriever.index(bm25s.tokenize(corpus, stopwords=None, show_progress=False), show_progress=False)
        return retriever, {d: i for i, d in enumerate(docs["doc_id"])}, len(docs)

    @staticmethod
    def _relative(retriever, pos, n_docs, query, doc_id):
        """(BM25 of the document / BM25 of the best document, raw BM25), or a reason to abstain."""
        import bm25s
        import numpy as np

        toks = bm25s.tokenize([query], stopwords=None, show_progress=False, return_ids=False)[0]
        scores = retriever.get_scores(toks) if toks else np.zeros(n_docs)
        best = float(scores.max()) if len(scores) else 0.0
        if doc_id not in pos:
            return None, "document not in corpus"
        if best <= 0:
            return None, "no query term matches any document"
        return float(scores[pos[doc_id]]) / best, float(scores[pos[doc_id]])

    def learn(self, ctx: AnnotationContext):
        """The score -> grade mapping fitted on the context's labelled pairs."""
        labelled = labelled_pairs(ctx)
        docs = ctx.documents
        scores, grades, locales = [], [], []
        for locale, part in labelled.groupby("locale", sort=False):
            if not (docs["locale"] == locale).any():
                continue            # no catalogue to score against in this locale
            retriever, pos, n = self._index(docs, locale)
            for r in part.itertuples(index=False):
                rel, _ = self._relative(retriever, pos, n, r.query, r.doc_id)
                if rel is not None:
                    scores.append(rel)
                    grades.append(int(r.grade))
                    locales.append(locale)
        return fit_by_locale(scores, grades, locales)

    def vote(self, ctx: AnnotationContext):
        p = self.params
        cal = self.learn(ctx) if p.calibration == "learned" else None
        rows = []
        for locale, pairs in ctx.pairs.groupby("locale", sort=False):
            if not (ctx.documents["locale"] == locale).any():
                rows += [(r.query_id, r.doc_id, self.name, s, None, f"no {locale} documents to rank against", 0.0, 0, 0.0)
                         for r in pairs.itertuples(index=False) for s in range(p.samples)]
                continue
            thresholds = p.thresholds if cal is None else cal.for_locale(locale).thresholds
            note = "" if cal is None else f"; {cal.describe(locale)}"
            t0 = time.perf_counter()
            retriever, pos, n = self._index(ctx.documents, locale)
            for r in pairs.itertuples(index=False):
                rng = pair_rng(ctx.seed, 0, r.query_id, r.doc_id)
                for s in range(p.samples):
                    q = r.query if s == 0 else perturb(r.query, p.perturbation, rng)
                    rel, raw = self._relative(retriever, pos, n, q, r.doc_id)
                    if rel is None:
                        grade, why = None, raw
                    else:
                        grade = grade_from_thresholds(rel, thresholds)
                        why = f"bm25 {raw:.2f} = {rel:.2f} of the best document{note if s == 0 else ''}"
                    rows.append((r.query_id, r.doc_id, self.name, s, grade, why,
                                 round((time.perf_counter() - t0) * 1000, 2), 0, 0.0))
                    t0 = time.perf_counter()
        return votes_frame(rows)
