"""Two drift detectors: one adds a per-query column that Evidently compares, one computes its
own value."""

from __future__ import annotations

from serm.plugins import DriftDetector


class QueryDigits(DriftDetector):
    """The share of digits in each query, compared by Evidently's Kolmogorov-Smirnov test."""

    name = "query_digits"
    columns = ("digit_share",)
    method = "ks"
    threshold = 0.05

    def add_columns(self, reference, current):
        def share(q) -> float:
            q = str(q)
            return sum(c.isdigit() for c in q) / len(q) if q else 0.0

        return (reference.assign(digit_share=reference["query"].map(share)),
                current.assign(digit_share=current["query"].map(share)))


class MeanScoreShift(DriftDetector):
    """How far the batch's mean top score moved from the reference's, in grades."""

    name = "mean_score_shift"
    threshold = 0.25
    value_is = "|mean score of the batch - mean score of the reference| (grades)"

    def measure(self, reference, current) -> float:
        return abs(float(current["score"].mean()) - float(reference["score"].mean()))
