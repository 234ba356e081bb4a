"""`teacher`: a stronger relevance model (a model directory or a workspace version) grades the
pair: with the most probable grade of its 4-grade head (`calibration: argmax`, the default), or
with cut points on its expected grade learned from the labelled pairs (`calibration: learned`,
`serm.annotation.calibration`, per locale once a locale has 20 labelled pairs).

Why learned cuts: a head trained with class weights (`training.class_weighting`) over-predicts
the rare grades by design, and a head trained on one language's grade mix carries it into the
next. The cuts are fitted on what the labelled pairs say, every round. A teacher that was
trained on those labelled pairs (a workspace version trained on the seed set) is fitted
in-sample, and its cuts are then as optimistic as its scores there; a teacher trained apart
(a model directory, as `serm bench` builds) is not. The agreement tuning cross-fits by query,
so its estimate never grades a pair with cuts fitted on that pair.

Repeated samples (`samples > 1`) score perturbed queries (a share of the words dropped), so
level-1 agreement asks whether the teacher's grade survives small changes of the input. The
teacher abstains where its most probable grade is below `min_confidence`.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field

from serm.agents import AgentParams
from serm.annotation.base import (AnnotationAgent, AnnotationContext, grade_from_thresholds, labelled_token,
                                  pair_rng, perturb, votes_frame)
from serm.annotation.calibration import fit_by_locale, labelled_pairs
from serm.errors import DataError


class Teacher(AnnotationAgent):
    name = "teacher"
    cache_ignore = frozenset({"batch_size"})

    class Params(AgentParams):
        model: str = Field(description="a model directory, or a version of the workspace (v3)")
        samples: int = Field(1, ge=1, le=20, description="1 + perturbed re-scorings")
        perturbation: float = Field(0.15, ge=0.0, lt=1.0, description="share of query words dropped per extra sample")
        min_confidence: float = Field(0.0, ge=0.0, le=1.0, description="abstain below this top-grade probability")
        batch_size: int | None = Field(None, ge=1)
        calibration: Literal["argmax", "learned"] = Field(
            "argmax", description="argmax: the head's most probable grade; learned: cut points on the expected "
            "grade fitted on the labelled pairs every round (serm.annotation.calibration)")

    def cache_token(self, ctx: AnnotationContext) -> str:
        """The teacher's weights, so a retrained directory or version is a new judge (and, with
        learned cuts, the labelled pairs they are fitted on)."""
        import hashlib

        if ctx.models is None:
            return ""
        labelled = labelled_token(ctx) if self.params.calibration == "learned" else ""
        net = ctx.models(self.params.model).model
        h = hashlib.sha256()
        for p in (*list(net.parameters())[:1], *list(net.parameters())[-2:]):
            h.update(p.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()[:16] + labelled

    def learn(self, ctx: AnnotationContext, model):
        """The expected grade -> grade cuts fitted on the context's labelled pairs."""
        labelled = labelled_pairs(ctx)
        proba = model.predict_proba(labelled["query"].tolist(), labelled["doc_title"].tolist(),
                                    labelled["doc_text"].tolist(), self.params.batch_size)
        return fit_by_locale(model.expected_grade(proba), labelled["grade"].astype(int).to_numpy(),
                             labelled["locale"].to_numpy())

    def vote(self, ctx: AnnotationContext):
        p = self.params
        if ctx.models is None:
            raise DataError("the teacher agent needs a model loader in its context; run it through the annotate stage")
        model = ctx.models(p.model)
        cal = self.learn(ctx, model) if p.calibration == "learned" else None
        pairs = ctx.pairs.reset_index(drop=True)
        queries = []
        for s in range(p.samples):
            if s == 0:
                queries.append(pairs["query"].tolist())
                continue
            qs = []
            for r in pairs.itertuples(index=False):
                rng = pair_rng(ctx.seed, 11, r.query_id, r.doc_id, s)
                qs.append(perturb(r.query, p.perturbation, rng))
            queries.append(qs)
        t0 = time.perf_counter()
        flat = [q for qs in queries for q in qs]
        n = len(pairs)
        proba = model.predict_proba(flat, pairs["doc_title"].tolist() * p.samples,
                                    pairs["doc_text"].tolist() * p.samples, p.batch_size)
        per_vote_ms = round((time.perf_counter() - t0) * 1000 / max(1, len(flat)), 2)
        top = proba.argmax(axis=1)
        conf = proba.max(axis=1)
        expected = model.expected_grade(proba)
        rows = []
        for s in range(p.samples):
            for i, r in enumerate(pairs.itertuples(index=False)):
                j = s * n + i
                if conf[j] < p.min_confidence:
                    grade, why = None, f"top grade {int(top[j])} has P={conf[j]:.2f} < min_confidence {p.min_confidence}"
                elif cal is None:
                    grade, why = int(top[j]), f"P(grade {int(top[j])})={conf[j]:.2f}, expected grade {expected[j]:.2f}"
                else:
                    grade = grade_from_thresholds(float(expected[j]), cal.for_locale(r.locale).thresholds)
                    why = f"expected grade {expected[j]:.2f} -> {grade}" + (f"; {cal.describe(r.locale)}" if s == 0 else "")
                rows.append((r.query_id, r.doc_id, self.name, s, grade, why, per_vote_ms, 0, 0.0))
        return votes_frame(rows)
