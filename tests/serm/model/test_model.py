"""The relevance model on real weights (the packaged MiniLM) and real XQuAD pairs: save/load,
the expected-grade score, batching, seeding, and training with a query-level validation set."""

import json

import numpy as np
import pytest

from serm.data.xquad import candidate_lists, load_paragraphs, load_questions
from serm.model.cross_encoder import GRADES, RelevanceModel
from serm.model.training import set_seed, train
from serm.policy import ModelSpec, TrainingSpec

SPEC = ModelSpec(max_length=48, window_words=24, batch_size=8)


@pytest.fixture(scope="module")
def pairs():
    """40 pairs: 8 English questions, each with its paragraph, 2 same-article and 2 random negatives."""
    q = load_questions()
    return candidate_lists(q[q.locale == "en"].head(8), load_paragraphs(), 2, 2, seed=5).reset_index(drop=True)


@pytest.fixture(scope="module")
def model():
    set_seed(0)
    return RelevanceModel.load("builtin:minilm-l6", SPEC, device="cpu")


def args(df):
    return df["query"].tolist(), df["doc_title"].tolist(), df["doc_text"].tolist()


def test_save_load_round_trip_gives_identical_scores(model, pairs, tmp_path):
    before = model.score(*args(pairs))
    model.save(tmp_path / "m", metrics={"ndcg@4": 0.5}, lineage={"version": 3})
    again = RelevanceModel.load(tmp_path / "m", SPEC, device="cpu")
    np.testing.assert_array_equal(again.score(*args(pairs)), before)
    assert json.loads((tmp_path / "m" / "serm_model.json").read_text()) == SPEC.model_dump(mode="json")
    assert json.loads((tmp_path / "m" / "lineage.json").read_text()) == {"version": 3}
    assert again.model.config.id2label[3] == "grade_3"


def test_score_is_expected_grade_of_a_softmax(model, pairs):
    proba = model.predict_proba(*args(pairs))
    assert proba.shape == (len(pairs), GRADES)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    expected = [sum(y * p[y] for y in range(GRADES)) for p in proba]
    score = model.score(*args(pairs))
    np.testing.assert_allclose(score, expected, rtol=1e-6)
    assert ((score >= 0) & (score <= 3)).all()


def test_batched_scores_match_one_pair_at_a_time(model, pairs):
    """Length-sorted, padded batches come back in input order with the same probabilities as an
    unpadded forward pass of each pair on its own."""
    import torch

    from serm.model.passages import model_inputs

    batched = model.predict_proba(*args(pairs), batch_size=16)
    docs = model_inputs(*args(pairs), SPEC.passage, SPEC.window_words)
    for i in (0, 7, 23, 39):
        enc = model.tokenizer(pairs["query"][i], docs[i], truncation="longest_first", max_length=SPEC.max_length,
                              return_tensors="pt")
        with torch.inference_mode():
            alone = torch.softmax(model.model(**enc).logits[0], -1).numpy()
        np.testing.assert_allclose(batched[i], alone, atol=1e-5)


def test_fresh_head_is_seeded(pairs):
    few = pairs.head(5)
    set_seed(11)
    a = RelevanceModel.load("builtin:minilm-l6", SPEC, device="cpu").score(*args(few))
    set_seed(11)
    b = RelevanceModel.load("builtin:minilm-l6", SPEC, device="cpu")
    np.testing.assert_array_equal(b.score(*args(few)), a)


def test_train_with_a_validation_frame_trains_on_every_example(pairs):
    """Callers that split by query pass the held-out queries; all other pairs are trained on."""
    set_seed(1)
    m = RelevanceModel.load("builtin:minilm-l6", SPEC, device="cpu")
    qids = sorted(pairs.query_id.unique())
    val = pairs[pairs.query_id.isin(qids[:2])]
    tr = pairs[~pairs.query_id.isin(qids[:2])]
    spec = TrainingSpec(epochs=2, batch_size=8, device="cpu")
    result = train(m, tr, spec, seed=1, log=lambda _: None, validation=val)
    assert result.pairs == len(tr) == 30
    assert result.epochs_run == 2 and len(result.val_loss) == 2 and len(result.train_loss) == 2
    assert result.best_epoch == 1 + int(np.argmin(result.val_loss))


def test_a_query_longer_than_max_length_is_scored_not_refused(model):
    """A question that alone fills max_length (Cyrillic under an English vocabulary does) is cut
    with its document instead of failing the batch."""
    long_query = " ".join(["Почему"] * (SPEC.max_length * 2))
    proba = model.predict_proba([long_query, "who wrote it"], ["A", "B"], ["some text " * 50, "short"])
    assert proba.shape == (2, 4) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_compiled_forward_gives_the_same_logits(model, pairs):
    """`model.compile: true` scores through torch.compile (inductor compiles C++ on a CPU: slow)."""
    compiled = RelevanceModel(model.model, model.tokenizer, SPEC.model_copy(update={"compile": True}), "cpu")
    np.testing.assert_allclose(compiled.logits(*args(pairs)), model.logits(*args(pairs)), atol=1e-4)
