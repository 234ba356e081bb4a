"""The reference rankers a round reports beside production: BM25 with IDF over the locale's
catalogue, and the off-the-shelf bi-encoder, on real XQuAD candidates."""

import numpy as np
import pandas as pd

from serm import stages
from serm.baselines import baseline_metrics, bm25_scores
from serm.data import xquad


def _sets():
    q, paras = xquad.load_questions(), xquad.load_paragraphs()
    en = q[q.locale == "en"].head(12)
    de = q[(q.locale == "de") & q.question_id.isin(set(q[q.locale == "en"].question_id[12:24]))]
    return {"static": xquad.candidate_lists(en, paras, 2, 3, seed=4),
            "evolving": xquad.candidate_lists(de, paras, 2, 3, seed=4)}


def test_bm25_uses_the_catalogue_idf_and_ranks_the_answer_paragraph_high():
    docs = xquad.documents()
    sets = _sets()
    s = bm25_scores(sets["static"], docs)
    assert s.shape == (len(sets["static"]),) and (s >= 0).all() and s.max() > 0
    # IDF over the whole catalogue differs from IDF over the test's own candidates
    own = bm25_scores(sets["static"])
    assert not np.allclose(s, own)
    # an empty query scores 0 rather than failing
    odd = sets["static"].head(2).assign(query="")
    assert (bm25_scores(odd, docs) == 0).all()


def test_baseline_metrics_per_set_and_locale_and_stage_wrapper():
    sets = _sets()
    out = baseline_metrics(sets, xquad.documents(), ks=(4,), locales={"static": "en", "evolving": "de"})
    assert set(out) == {"bm25", "bi_encoder"}
    for name in out:
        for test in ("static", "evolving"):
            m = out[name][test]
            assert m["queries"] == 12 and m["pairs"] == len(sets[test])
            assert m["ndcg@4"] > 0.45    # random order of 1 answer in 6 candidates is ~0.4
    assert out["bm25"]["static"]["ndcg@4"] > 0.9 and out["bm25"]["evolving"]["locale"] == "de"
    empty = baseline_metrics({"static": pd.DataFrame(columns=sets["static"].columns)}, None)
    assert empty["bm25"]["static"] == {"pairs": 0, "queries": 0}
    wrapped = stages.baselines(sets, xquad.documents(), (4,))
    assert wrapped["bm25"].get("static", "ndcg@4") == out["bm25"]["static"]["ndcg@4"]
