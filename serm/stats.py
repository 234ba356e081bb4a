"""Paired significance over queries: is system A better than system B on the same test queries,
beyond what the choice of queries alone would give?

Both tests take one value per query for each system (e.g. NDCG@4), paired by query:

- `paired_randomization`: the two-sided sign-flip (permutation) test of the mean difference
  (Fisher's randomization test, the IR standard: Smucker, Allan & Carterette 2007);
- `paired_bootstrap_ci`: a percentile bootstrap confidence interval of the mean difference,
  resampling queries.

`compare` returns both with the sizes, seeded, so a benchmark's table and JSON carry the same
numbers every run. A difference whose CI holds 0 (p ≥ alpha) is a tie.

A table of many comparisons finds some "significant" by chance: `holm` adjusts a family's
p-values (Holm's step-down, which bounds the chance of any false claim in the family by alpha),
and `with_holm` writes the adjusted p and its verdict beside each comparison.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

RESAMPLES = 10_000


@dataclass(frozen=True)
class Comparison:
    queries: int
    mean_a: float
    mean_b: float
    delta: float            # mean(a - b)
    ci_low: float
    ci_high: float
    p_value: float          # two-sided paired randomization test
    alpha: float = 0.05

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    @property
    def verdict(self) -> str:
        """'better', 'worse' (A against B) or 'tie' at `alpha`."""
        return verdict(self.p_value, self.delta, self.alpha)

    def to_dict(self) -> dict:
        return {**{k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()},
                "verdict": self.verdict}

    def describe(self) -> str:
        return (f"{self.delta:+.4f} [{self.ci_low:+.4f}, {self.ci_high:+.4f}], p={self.p_value:.4f} "
                f"over {self.queries} queries ({self.verdict})")


def verdict(p_value: float, delta: float, alpha: float = 0.05) -> str:
    """'better' or 'worse' (by the sign of `delta`) when p < alpha, else 'tie'."""
    if p_value >= alpha:
        return "tie"
    return "better" if delta > 0 else "worse"


def _paired(a, b):
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need two 1-d arrays of one length; got shapes {a.shape} and {b.shape}")
    return a - b


def paired_randomization(a, b, resamples: int = RESAMPLES, seed: int = 0) -> float:
    """Two-sided p-value of mean(a − b) under random sign flips of each query's difference
    (with the observed assignment counted, so p is never 0)."""
    import numpy as np

    d = _paired(a, b)
    if not len(d) or not d.any():
        return 1.0
    observed = abs(d.mean())
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, resamples, 2000):
        n = min(2000, resamples - start)
        signs = rng.choice((-1.0, 1.0), size=(n, len(d)))
        hits += int((np.abs((signs * d).mean(axis=1)) >= observed - 1e-12).sum())
    return (hits + 1) / (resamples + 1)


def paired_bootstrap_ci(a, b, resamples: int = RESAMPLES, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(a − b), resampling queries with replacement."""
    import numpy as np

    d = _paired(a, b)
    if not len(d) or resamples < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng([seed, 1])
    means = np.concatenate([d[rng.integers(0, len(d), size=(min(2000, resamples - s), len(d)))].mean(axis=1)
                            for s in range(0, resamples, 2000)])
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def compare(a, b, resamples: int = RESAMPLES, seed: int = 0, alpha: float = 0.05) -> Comparison:
    """A against B on the same queries: mean difference, bootstrap CI, randomization p-value."""
    import numpy as np

    d = _paired(a, b)
    low, high = paired_bootstrap_ci(a, b, resamples, seed)
    return Comparison(queries=len(d), mean_a=float(np.mean(a)) if len(d) else float("nan"),
                      mean_b=float(np.mean(b)) if len(d) else float("nan"),
                      delta=float(d.mean()) if len(d) else float("nan"), ci_low=low, ci_high=high,
                      p_value=paired_randomization(a, b, resamples, seed), alpha=alpha)


def compare_queries(a: dict, b: dict, **kw) -> Comparison:
    """`compare` of two {query_id: value} maps over the queries both hold (sorted ids)."""
    common = sorted(set(a) & set(b))
    return compare([a[q] for q in common], [b[q] for q in common], **kw)


def holm(p_values) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input's order: the i-th smallest of m is
    multiplied by (m − i + 1), made non-decreasing and capped at 1. A comparison is significant
    for the family at `alpha` when its adjusted p is below alpha."""
    ps = [float(p) for p in p_values]
    if any(not 0.0 <= p <= 1.0 for p in ps):
        raise ValueError(f"p-values must lie in [0, 1]; got {ps}")
    m, adjusted, running = len(ps), [0.0] * len(ps), 0.0
    for rank, i in enumerate(sorted(range(m), key=ps.__getitem__)):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        adjusted[i] = running
    return adjusted


def with_holm(comparisons: list[dict], alpha: float = 0.05) -> list[dict]:
    """The family's comparisons (`Comparison.to_dict()`s), each given `p_holm` and
    `verdict_holm` ('better', 'worse' or 'tie' after the adjustment); updated in place."""
    for c, p in zip(comparisons, holm([c["p_value"] for c in comparisons])):
        c["p_holm"] = round(p, 6)
        c["verdict_holm"] = verdict(p, c["delta"], alpha)
    return comparisons


def per_query_ndcg(df, k: int = 4):
    """{query_id: NDCG@k of the `score` ordering}, for queries with ≥ 2 candidates and a relevant
    one (those `serm.evaluation.ranking_metrics` counts); ties broken as it breaks them."""
    import pandas as pd

    from serm.evaluation import ndcg_at_k

    tiebreak = pd.util.hash_pandas_object(df[["query_id", "doc_id"]], index=False).to_numpy()
    out = {}
    for qid, idx in df.groupby("query_id", sort=True).indices.items():
        g = df.iloc[idx]
        if len(g) < 2 or g["grade"].max() <= 0:
            continue
        out[qid] = ndcg_at_k(g["grade"].to_numpy(), g["score"].to_numpy(), k, tiebreak[idx])
    return out


def compare_rankings(scored_a, scored_b, k: int = 4, **kw) -> Comparison:
    """Two scorings (query_id, doc_id, grade, score) of the same judgments, by per-query NDCG@k."""
    a, b = per_query_ndcg(scored_a, k), per_query_ndcg(scored_b, k)
    if set(a) != set(b):
        raise ValueError(f"the two scorings cover different queries ({len(a)} vs {len(b)}, "
                         f"{len(set(a) & set(b))} shared)")
    return compare_queries(a, b, **kw)
