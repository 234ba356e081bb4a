import numpy as np
import pandas as pd
import pytest

from serm.evaluation import metrics, ndcg_at_k


def test_ndcg_matches_ranx():
    ranx = pytest.importorskip("ranx")
    rng = np.random.default_rng(0)
    rows = []
    for q in range(30):
        n = rng.integers(3, 12)
        grades = rng.integers(0, 4, n)
        grades[0] = 3
        scores = rng.random(n)
        rows += [(f"q{q}", f"d{i}", int(g), float(s)) for i, (g, s) in enumerate(zip(grades, scores))]
    df = pd.DataFrame(rows, columns=["query_id", "doc_id", "grade", "score"])
    qrels = ranx.Qrels.from_df(df[df.grade > 0].rename(columns={"grade": "score_"}).drop(columns="score")
                               .rename(columns={"score_": "score"}), q_id_col="query_id", doc_id_col="doc_id")
    run = ranx.Run.from_df(df, q_id_col="query_id", doc_id_col="doc_id", score_col="score")
    for k in (4, 10):
        ours = np.mean([ndcg_at_k(g.grade.to_numpy(), g.score.to_numpy(), k) for _, g in df.groupby("query_id")])
        # ranx's "ndcg_burges" uses 2^rel - 1 gains, as we do
        theirs = ranx.evaluate(qrels, run, f"ndcg_burges@{k}")
        assert ours == pytest.approx(theirs, abs=1e-6)


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
