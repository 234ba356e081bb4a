"""Learned score -> grade mappings: the exact optimum on constructed cases, and the real lexical
and embedding agents learning their cut from labelled XQuAD pairs instead of hand thresholds."""

import itertools

import numpy as np
import pandas as pd
import pytest

from serm.annotation.base import AnnotationContext, labelled_token
from serm.annotation.calibration import fit_thresholds
from serm.annotation.embedding import EmbeddingJudge
from serm.annotation.lexical import LexicalJudge
from serm.annotation.base import grade_from_thresholds
from serm.errors import DataError
from tests.serm.annotation.xquad_pairs import english_splits


def test_graded_scores_get_graded_cuts():
    rng = np.random.default_rng(0)
    grades = rng.integers(0, 4, 400)
    scores = grades + rng.normal(0, 0.2, 400)
    cal = fit_thresholds(scores, grades)
    assert all(abs(t - c) < 0.25 for t, c in zip(cal.thresholds, (0.5, 1.5, 2.5)))
    assert cal.accuracy > 0.95 and cal.within_one == 1.0 and cal.pairs == 400


def test_binary_labels_get_one_cut_and_empty_middle_grades():
    scores = np.r_[np.linspace(0, 0.4, 30), np.linspace(0.6, 1.0, 30)]
    grades = np.r_[np.zeros(30, int), np.full(30, 3)]
    cal = fit_thresholds(scores, grades)
    assert cal.thresholds[0] == cal.thresholds[1] == cal.thresholds[2] == pytest.approx(0.5)
    assert {grade_from_thresholds(s, cal.thresholds) for s in scores} == {0, 3}
    assert cal.accuracy == 1.0


def test_the_cut_points_are_the_exact_optimum():
    """Against brute force over every monotone assignment of cut positions, on small noisy cases."""
    rng = np.random.default_rng(1)
    for case in range(6):
        n = 24
        grades = rng.integers(0, 4, n)
        scores = np.round(grades + rng.normal(0, 1.0, n), 1)      # noisy, with ties
        cal = fit_thresholds(scores, grades)
        cuts = np.unique(np.r_[scores, scores.min() - 1, scores.max() + 1])
        mids = (cuts[:-1] + cuts[1:]) / 2
        best = max(np.mean([grade_from_thresholds(s, t) == g for s, g in zip(scores, grades)])
                   for t in itertools.combinations_with_replacement(np.r_[mids, cuts[0] - 1, cuts[-1] + 1], 3))
        got = np.mean([grade_from_thresholds(s, cal.thresholds) == g for s, g in zip(scores, grades)])
        assert got == pytest.approx(best) == pytest.approx(cal.accuracy), case


def test_too_few_labelled_pairs_are_refused():
    with pytest.raises(DataError, match="at least 20 labelled pairs"):
        fit_thresholds([0.1, 0.9], [0, 3])


@pytest.fixture(scope="module")
def xq():
    return english_splits(40, 30)          # the labelled seed pairs, held-out pairs, the documents


def _accuracy(votes, pairs):
    v = votes[votes["sample"] == 0].merge(pairs[["query_id", "doc_id", "grade"]], on=["query_id", "doc_id"],
                                          suffixes=("", "_true")).dropna(subset=["grade"])
    return float((v["grade"].astype(int) == v["grade_true"]).mean()), set(v["grade"].astype(int))


@pytest.mark.parametrize("agent_cls", [LexicalJudge, EmbeddingJudge])
def test_agents_learn_their_cut_from_labelled_pairs(agent_cls, xq):
    seed, held, docs = xq
    pairs = held.drop(columns="grade")
    ctx = AnnotationContext(pairs=pairs, documents=docs, seed=1, labelled=seed)
    learned = agent_cls(samples=1, calibration="learned").vote(ctx)
    fixed = agent_cls(samples=1).vote(ctx)           # the hand-set default cuts
    acc_learned, grades_learned = _accuracy(learned, held)
    acc_fixed, _ = _accuracy(fixed, held)
    assert acc_learned >= acc_fixed and acc_learned > 0.85, (acc_learned, acc_fixed)
    assert grades_learned <= {0, 3}, "binary labels give binary votes"
    assert "en thresholds" in learned["rationale"].iloc[0] and "learned on 240 labelled pairs" in learned["rationale"].iloc[0]
    # no labelled pairs: a clear error naming the fix
    with pytest.raises(DataError, match="give the agent fixed thresholds"):
        agent_cls(samples=1, calibration="learned").vote(
            AnnotationContext(pairs=pairs, documents=docs, seed=1))


def test_the_cache_token_follows_the_labelled_pairs(xq):
    seed, held, docs = xq
    a = AnnotationContext(pairs=held, documents=docs, seed=1, labelled=seed)
    b = AnnotationContext(pairs=held, documents=docs, seed=1, labelled=seed.assign(grade=0))
    agent = LexicalJudge(calibration="learned")
    assert agent.cache_token(a) != agent.cache_token(b) and labelled_token(a) == agent.cache_token(a)
    assert LexicalJudge().cache_token(a) == ""
    assert labelled_token(AnnotationContext(pairs=held, documents=docs, seed=1,
                                            labelled=pd.DataFrame())) == "labelled:none"


def test_a_locale_with_enough_labels_gets_its_own_cut():
    from serm.annotation.calibration import fit_by_locale

    rng = np.random.default_rng(4)
    g = rng.choice([0, 3], 200)
    en = np.where(g == 3, 0.8, 0.4) + rng.normal(0, 0.03, 200)      # English cosines run higher
    tr = np.where(g[:40] == 3, 0.5, 0.2) + rng.normal(0, 0.03, 40)
    cal = fit_by_locale(np.r_[en, tr, [0.9]], np.r_[g, g[:40], [3]], ["en"] * 200 + ["tr"] * 40 + ["th"])
    assert set(cal.per_locale) == {"en", "tr"}
    assert 0.5 < cal.for_locale("en").thresholds[2] < 0.7 and 0.25 < cal.for_locale("tr").thresholds[2] < 0.45
    assert cal.for_locale("th") is cal.pooled and cal.describe("th").startswith("pooled ")


def test_calibration_pairs_join_human_grades_to_documents_and_later_grades_win(xq):
    from serm import stages

    seed, _, docs = xq
    first = seed.iloc[0]
    graded = pd.DataFrame({"query_id": [first.query_id, "q-new", "q-none"], "query": [first.query, "new q", "x"],
                           "doc_id": [first.doc_id, seed.doc_id.iloc[5], "no-such-doc"],
                           "grade": pd.array([0, 3, pd.NA], dtype="Int8")})
    out = stages.calibration_pairs(seed, graded, docs)
    assert len(out) == len(seed) + 1                        # the unknown document and the null grade are left out
    assert out.loc[(out.query_id == first.query_id) & (out.doc_id == first.doc_id), "grade"].tolist() == [0]
    new = out[out.query_id == "q-new"].iloc[0]
    assert new.doc_text == docs.set_index("doc_id").loc[seed.doc_id.iloc[5], "text"] and new.locale == "en"
    assert len(stages.calibration_pairs(None)) == 0


def test_the_teacher_learns_cuts_on_its_expected_grade(xq):
    """A teacher trained apart (on other labelled questions) grades XQuAD's binary relevance
    with learned cuts on its expected grade: only 0 and 3, at least as right as its argmax."""
    from serm.annotation.teacher import Teacher
    from serm.model.cross_encoder import RelevanceModel
    from serm.model.training import set_seed, train
    from serm.policy import ModelSpec, TrainingSpec

    seed, held, docs = xq
    trained_on = seed[seed.query_id.isin(sorted(set(seed.query_id))[:20])]
    fit_on = seed[~seed.query_id.isin(trained_on.query_id)]
    set_seed(5)
    teacher = RelevanceModel.load("builtin:minilm-l6", ModelSpec(max_length=64, passage="best_window",
                                                                 window_words=28), device="cpu")
    train(teacher, trained_on, TrainingSpec(epochs=2, validation_share=0.0), 5, log=lambda *_: None)
    ctx = AnnotationContext(pairs=held.drop(columns="grade"), documents=docs, seed=1, labelled=fit_on,
                            models=lambda ref: teacher)
    learned = Teacher(model="t", calibration="learned").vote(ctx)
    argmax = Teacher(model="t").vote(ctx)
    acc_learned, grades_learned = _accuracy(learned, held)
    acc_argmax, _ = _accuracy(argmax, held)
    assert grades_learned <= {0, 3}, "binary labels give binary votes"
    assert acc_learned >= acc_argmax - 0.02 and acc_learned > 0.8, (acc_learned, acc_argmax)
    assert "-> " in learned["rationale"].iloc[0] and "learned on 120 labelled pairs" in learned["rationale"].iloc[0]
    # the cuts follow the labelled pairs: part of the vote-cache key
    a = Teacher(model="t", calibration="learned")
    assert a.cache_token(ctx) != a.cache_token(AnnotationContext(
        pairs=held, documents=docs, seed=1, labelled=fit_on.assign(grade=0), models=lambda ref: teacher))
    assert "labelled:" not in Teacher(model="t").cache_token(ctx)
    with pytest.raises(DataError, match="labelled pairs"):
        Teacher(model="t", calibration="learned").vote(AnnotationContext(
            pairs=held.drop(columns="grade"), documents=docs, seed=1, models=lambda ref: teacher))
