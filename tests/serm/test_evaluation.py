import numpy as np
import pandas as pd
import pytest

from serm.evaluation import metrics, ndcg_at_k


def test_ndcg_matches_scikit_learn():
    """Our NDCG@k against scikit-learn's: its gains are the relevance values themselves, so it is
    given 2^grade - 1 (Burges' gains, which SERM uses) and distinct scores (no ties to average)."""
    from sklearn.metrics import ndcg_score

    rng = np.random.default_rng(0)
    rows = []
    for q in range(30):
        n = rng.integers(3, 12)
        grades = rng.integers(0, 4, n)
        grades[0] = 3
        scores = rng.permutation(n) + rng.random()   # distinct
        rows += [(f"q{q}", f"d{i}", int(g), float(s)) for i, (g, s) in enumerate(zip(grades, scores))]
    df = pd.DataFrame(rows, columns=["query_id", "doc_id", "grade", "score"])
    for k in (4, 10):
        for _, g in df.groupby("query_id"):
            theirs = ndcg_score([2.0 ** g.grade.to_numpy() - 1], [g.score.to_numpy()], k=k)
            assert ndcg_at_k(g.grade.to_numpy(), g.score.to_numpy(), k) == pytest.approx(theirs, abs=1e-9)


def test_excluded_queries_are_counted():
    df = pd.DataFrame({"query_id": ["a", "a", "b", "c", "c"], "grade": [3, 0, 3, 0, 0],
                       "score": [2.0, 1.0, 1.0, 0.5, 0.1], "pred": [3, 0, 3, 0, 1], "locale": "en"})
    m = metrics(df, ks=(4,))
    assert m["queries"] == 1 and m["excluded_queries"] == 2  # b: one candidate; c: nothing relevant
    assert m["ndcg@4"] == 1.0
    assert m["accuracy"] == 0.8


def test_tied_scores_do_not_reward_the_candidate_listed_first():
    """A model that scores every candidate the same must not look good because the relevant
    document happens to come first in each candidate list (as it does in XQuAD's)."""
    rows = [(f"q{q}", f"q{q}-d{i}", 3 if i == 0 else 0, 0.5, 0, "en") for q in range(200) for i in range(6)]
    df = pd.DataFrame(rows, columns=["query_id", "doc_id", "grade", "score", "pred", "locale"])
    m = metrics(df, ks=(4,))
    # Random order of 6 with one relevant: E[NDCG@4] = (1 + 1/log2(3) + 1/2 + 1/log2(5)) / 6 = 0.49
    assert 0.40 < m["ndcg@4"] < 0.58
    assert metrics(df.assign(score=[1.0 if g == 3 else 0.0 for g in df.grade]), ks=(4,))["ndcg@4"] == 1.0
