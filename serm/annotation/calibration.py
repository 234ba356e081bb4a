"""Score → grade mappings learned from labelled pairs, for the score-based annotator agents.

An agent with `calibration: learned` scores the workspace's labelled pairs (the seed set and
every human-reviewed pair) with its own score (BM25 share of the best document, cosine, …) and
takes the monotone mapping that grades them best, per locale where the locale has enough
labelled pairs (pooled otherwise): the cut points t1 ≤ t2 ≤ t3 maximising
exact-grade accuracy (isotonic classification under 0/1 loss, solved exactly by dynamic
programming over the sorted scores). Graded data therefore gets graded votes, and binary data
(XQuAD: 0 or 3) gets one cut where the labels put it, not where a hand-set constant guessed.

    >>> fit_thresholds([0.1, 0.2, 0.8, 0.9], [0, 0, 3, 3], min_pairs=4).thresholds
    (0.5, 0.5, 0.5)
"""

from __future__ import annotations

from dataclasses import dataclass

from serm.errors import DataError

GRADES = 4
#: Fewer labelled pairs than this and a learned mapping is refused (it would fit noise).
MIN_PAIRS = 20


@dataclass(frozen=True)
class Calibration:
    thresholds: tuple[float, float, float]
    pairs: int
    accuracy: float          # exact grade, on the pairs it was fitted on
    within_one: float        # |grade − label| ≤ 1

    def describe(self) -> str:
        t = ", ".join(f"{v:.3f}" for v in self.thresholds)
        return (f"thresholds [{t}] learned on {self.pairs} labelled pairs "
                f"(accuracy {self.accuracy:.1%}, within one grade {self.within_one:.1%})")


def fit_thresholds(scores, grades, min_pairs: int = MIN_PAIRS) -> Calibration:
    """The monotone score → grade step function with the fewest errors on (scores, grades).

    Dynamic programme over pairs sorted by score: best[g] is the fewest errors of the prefix when
    its last pair is graded g, and grades never decrease along the scores. Cut points sit halfway
    between the last pair of a grade and the first of the next; a grade no pair gets shares its
    cut with the next one (so its band is empty)."""
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(grades, dtype=np.int64)
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    if len(s) < min_pairs:
        raise DataError(f"a learned score -> grade mapping needs at least {min_pairs} labelled pairs the agent "
                        f"can score; got {len(s)}. Give the agent fixed thresholds, or label more pairs")
    order = np.lexsort((y, s))
    s, y = s[order], y[order]
    n = len(s)
    # Ties in score must get one grade: work on groups of equal scores.
    uniq, start = np.unique(s, return_index=True)
    counts = np.zeros((len(uniq), GRADES))
    group = np.searchsorted(uniq, s)
    np.add.at(counts, (group, y), 1)
    sizes = counts.sum(axis=1)
    cost = sizes[:, None] - counts                     # errors if the whole group gets grade g
    best = np.full((len(uniq), GRADES), np.inf)
    back = np.zeros((len(uniq), GRADES), dtype=np.int64)
    best[0] = cost[0]
    for i in range(1, len(uniq)):
        prefix_min = np.minimum.accumulate(best[i - 1])
        arg = np.array([int(np.argmin(best[i - 1][:g + 1])) for g in range(GRADES)])
        best[i] = prefix_min + cost[i]
        back[i] = arg
    g = int(np.argmin(best[-1]))
    assigned = np.zeros(len(uniq), dtype=np.int64)
    for i in range(len(uniq) - 1, -1, -1):
        assigned[i] = g
        g = back[i][g] if i > 0 else g
    thresholds = []
    for grade in range(1, GRADES):
        above = np.nonzero(assigned >= grade)[0]
        if not len(above):
            cut = float("inf")
        elif above[0] == 0:
            cut = float("-inf")
        else:
            cut = float((uniq[above[0] - 1] + uniq[above[0]]) / 2)
        thresholds.append(cut)
    # an empty band's cut equals the next grade's, a grade beyond every score never fires
    t = tuple(_finite(v, uniq) for v in thresholds)
    pred = assigned[group]
    return Calibration(t, n, float((pred == y).mean()), float((np.abs(pred - y) <= 1).mean()))


def _finite(v: float, uniq) -> float:
    """±inf cuts as finite numbers just outside the scores (JSON and YAML have no inf)."""
    span = float(uniq[-1] - uniq[0]) or 1.0
    if v == float("inf"):
        return round(float(uniq[-1]) + span, 6)
    if v == float("-inf"):
        return round(float(uniq[0]) - span, 6)
    return round(v, 6)


def labelled_pairs(ctx):
    """The labelled pairs an agent may learn from (query, doc_title, doc_text, locale, grade): the
    context's `labelled` frame; a clear error when the round gave none."""
    frame = getattr(ctx, "labelled", None)
    if frame is None or not len(frame):
        raise DataError("calibration: learned needs labelled pairs (the seed set or reviewed labels) and this "
                        "round has none; give the agent fixed thresholds [t1, t2, t3]")
    return frame.reset_index(drop=True)


@dataclass(frozen=True)
class LocaleCalibration:
    """A pooled mapping plus one per locale that has at least `MIN_PAIRS` labelled pairs (an
    agent's scores need not mean the same in every language: a cosine of an English encoder
    on Turkish text runs lower); a locale without enough labels uses the pooled one."""

    pooled: Calibration
    per_locale: dict

    def for_locale(self, locale) -> Calibration:
        return self.per_locale.get(locale, self.pooled)

    def describe(self, locale=None) -> str:
        cal = self.for_locale(locale)
        where = f"{locale} " if locale in self.per_locale else "pooled "
        return where + cal.describe()


def fit_by_locale(scores, grades, locales) -> LocaleCalibration:
    import numpy as np

    scores, grades, locales = np.asarray(scores, dtype=np.float64), np.asarray(grades), np.asarray(locales)
    per = {}
    for loc in sorted(set(locales.tolist())):
        m = locales == loc
        if m.sum() >= MIN_PAIRS:
            per[loc] = fit_thresholds(scores[m], grades[m])
    return LocaleCalibration(fit_thresholds(scores, grades), per)
