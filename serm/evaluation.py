"""Ranking and classification metrics: NDCG@k with graded gains (2^g − 1, log2 discount),
accuracy and macro-F1 over grades, expected calibration error of the grade probabilities,
overall and per locale.

Queries with fewer than 2 candidates or no relevant candidate are excluded from NDCG and
counted in `excluded_queries`."""

from __future__ import annotations


def ndcg_at_k(grades, scores, k: int, tiebreak=None) -> float:
    """NDCG@k of ranking by `scores` (descending). Equal scores are ordered by `tiebreak`
    (ascending) where given, else by input order."""
    import numpy as np

    grades = np.asarray(grades, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if tiebreak is None:
        order = np.argsort(-scores, kind="stable")[:k]
    else:
        order = np.lexsort((np.asarray(tiebreak), -scores))[:k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = ((2.0 ** grades[order] - 1.0) * discounts[: len(order)]).sum()
    ideal = np.sort(grades)[::-1][:k]
    idcg = ((2.0 ** ideal - 1.0) * discounts[: len(ideal)]).sum()
    return float(dcg / idcg) if idcg > 0 else 0.0


def ranking_metrics(df, ks=(4, 10)) -> dict:
    """NDCG@k of the `score` ordering within each query; `df` has query_id, grade, score.
    Any scorer's output (BM25, cosine, expected grade) is ranked the same way."""
    import numpy as np
    import pandas as pd

    out: dict = {}
    per_query = {k: [] for k in ks}
    excluded = 0
    # Ties are broken by a hash of the pair, not by input order: candidate lists often put the
    # relevant document first (XQuAD's do), and input order would hand tied scores a free hit.
    tiebreak = (pd.util.hash_pandas_object(df[["query_id", "doc_id"]], index=False).to_numpy()
                if "doc_id" in df.columns else np.arange(len(df)))
    for _, idx in df.groupby("query_id", sort=False).indices.items():
        g = df.iloc[idx]
        if len(g) < 2 or g["grade"].max() <= 0:
            excluded += 1
            continue
        for k in ks:
            per_query[k].append(ndcg_at_k(g["grade"].to_numpy(), g["score"].to_numpy(), k, tiebreak[idx]))
    for k in ks:
        out[f"ndcg@{k}"] = round(float(np.mean(per_query[k])), 4) if per_query[k] else None
    out["queries"] = len(per_query[ks[0]])
    out["excluded_queries"] = excluded
    return out


def expected_calibration_error(proba, grades, bins: int = 10) -> float:
    """ECE of the most probable grade: Σ_b (n_b / n) |accuracy_b − confidence_b| over `bins`
    equal-width confidence bins. 0 is perfectly calibrated; a model that says 90% and is right
    60% of the time scores 0.3.

    >>> round(expected_calibration_error([[0.1, 0.9, 0, 0]] * 10, [1] * 6 + [0] * 4), 3)
    0.3
    """
    import numpy as np

    proba = np.asarray(proba, dtype=np.float64)
    grades = np.asarray(grades)
    if not len(proba):
        return float("nan")
    conf, pred = proba.max(axis=1), proba.argmax(axis=1)
    right = (pred == grades).astype(np.float64)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(which):
        m = which == b
        total += m.sum() * abs(right[m].mean() - conf[m].mean())
    return float(total / len(proba))


def metrics(df, ks=(4, 10), proba=None) -> dict:
    """`df` has query_id, grade, score (expected grade), pred (argmax grade), locale; `proba`
    (one row of P(grade) per row of `df`) adds the expected calibration error `ece`."""
    import numpy as np

    out: dict = {"pairs": int(len(df)), **ranking_metrics(df, ks)}
    y, p = df["grade"].to_numpy(), df["pred"].to_numpy()
    out["accuracy"] = round(float((y == p).mean()), 4) if len(df) else None
    f1s = []
    for c in np.unique(np.concatenate([y, p])) if len(df) else []:
        tp = ((p == c) & (y == c)).sum()
        prec = tp / max(1, (p == c).sum())
        rec = tp / max(1, (y == c).sum())
        f1s.append(0.0 if tp == 0 else 2 * prec * rec / (prec + rec))
    out["macro_f1"] = round(float(np.mean(f1s)), 4) if f1s else None
    if proba is not None:
        out["ece"] = round(expected_calibration_error(proba, y), 4) if len(df) else None
    return out


def evaluate(model, judgments, ks=(4, 10), proba=None) -> dict:
    """Score `judgments` (canonical format) with `model` (or take its `proba`, one row of
    P(grade) per judgment, already scored); overall and per-locale metrics."""
    import numpy as np

    from serm.model.cross_encoder import RelevanceModel

    df = judgments.copy()
    proba = np.asarray(model.score_frame(df) if proba is None else proba, dtype=np.float32)
    df["score"] = RelevanceModel.expected_grade(proba)
    df["pred"] = proba.argmax(axis=1)
    result = {"overall": metrics(df, ks, proba), "per_locale": {}}
    for loc, idx in df.groupby("locale").indices.items():
        result["per_locale"][loc] = metrics(df.iloc[idx], ks, proba[idx])
    return result


def metrics_table(result: dict, ks=(4, 10)) -> str:
    """`evaluate`'s result as a text table: one row overall, one per locale."""
    cols = [*(f"ndcg@{k}" for k in ks), "accuracy", "macro_f1", "ece", "queries", "pairs", "excluded_queries"]
    heads = [*(f"ndcg@{k}" for k in ks), "accuracy", "macro_f1", "ece", "queries", "pairs", "excluded"]
    rows = [("overall", result["overall"])] + sorted(result["per_locale"].items())
    width = max(8, *(len(name) for name, _ in rows))

    def cell(v):
        return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))

    lines = [f"{'':<{width}}" + "".join(f"{h:>10}" for h in heads)]
    lines += [f"{name:<{width}}" + "".join(f"{cell(m.get(c)):>10}" for c in cols) for name, m in rows]
    return "\n".join(lines)
