"""The lexical head: its features on constructed pairs (any script), its fit, that it is part of the
model (logits, save/load, export), and that a seed model trained with it ranks a language it
never saw (real packaged MiniLM, real XQuAD)."""

import json

import numpy as np
import pytest

from serm.data.xquad import candidate_lists, load_paragraphs, load_questions
from serm.errors import DataError
from serm.evaluation import ranking_metrics
from serm.model.cross_encoder import RelevanceModel
from serm.model.lexical import HEAD_FILE, LexicalHead
from serm.model.passages import LEXICAL_FEATURES, lexical_features
from serm.model.training import set_seed
from serm.policy import ModelSpec, TrainingSpec

SPEC = ModelSpec(max_length=64, window_words=32, batch_size=16)


def test_features_measure_query_coverage_of_the_whole_document():
    full = lexical_features("broncos super bowl", "Super_Bowl_50", "The Denver Broncos super bowl win.")
    assert full == [1.0, 1.0, 1.0]                                   # every word, every trigram
    apart = lexical_features("broncos super bowl", "Super_Bowl_50", "The Denver Broncos won.")
    assert apart[:2] == [1.0, 1.0] and apart[2] < 1.0                # words apart: fewer trigrams
    assert lexical_features("broncos super bowl", "", "Paris is in France.")[0] == 0.0
    # a long word counts more than a short one in the weighted coverage
    cov, wcov, _ = lexical_features("a photosynthesis", "", "photosynthesis in plants")
    assert cov == 0.5 and wcov > 0.75
    # no word boundaries (Chinese): words do not match, character trigrams do
    zh = lexical_features("丹佛野马队赢得了比赛", "", "在第50届超级碗中丹佛野马队赢得了比赛。")
    assert zh[0] == 0.0 and zh[2] == 1.0
    assert lexical_features("", "", "anything") == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="unknown lexical feature 'idf'"):
        lexical_features("q", "", "d", ("idf",))
    with pytest.raises(DataError, match="unknown lexical feature"):
        LexicalHead.fresh(["idf"])


def test_prefit_learns_a_ranking_from_the_features_alone():
    rng = np.random.default_rng(0)
    grades = rng.integers(0, 4, 400)
    feats = np.clip(grades[:, None] / 3 + rng.normal(0, 0.1, (400, 3)), 0, 1).astype(np.float32)
    head = LexicalHead.fresh(LEXICAL_FEATURES)
    assert not head.logits(feats).any()                              # fresh: a zero offset
    head.prefit(feats, grades)
    assert head.fitted
    p = np.exp(head.logits(feats))
    expected = (p / p.sum(1, keepdims=True)) @ np.arange(4)
    assert np.corrcoef(expected, grades)[0, 1] > 0.9
    assert (head.logits(feats).argmax(1) == grades).mean() > 0.7


@pytest.fixture(scope="module")
def xquad():
    q, paras = load_questions(), load_paragraphs()
    ids = sorted(q.question_id.unique())
    rng = np.random.default_rng(5)
    ids = [ids[i] for i in rng.permutation(len(ids))]
    train_ids, test_ids = set(ids[:30]), set(ids[30:50])
    train = candidate_lists(q[q.question_id.isin(train_ids) & (q.locale == "en")], paras, 2, 3, seed=1)
    test = candidate_lists(q[q.question_id.isin(test_ids) & (q.locale == "de")], paras, 2, 5, seed=1)
    return train, test


def test_a_head_is_part_of_the_model_logits_save_load_and_export(tmp_path, xquad):
    _, test = xquad
    pairs = test.head(24).reset_index(drop=True)
    args = (pairs["query"].tolist(), pairs["doc_title"].tolist(), pairs["doc_text"].tolist())
    set_seed(0)
    model = RelevanceModel.load("builtin:minilm-l6", SPEC, device="cpu")
    head = model.lexical
    assert head is not None and not head.fitted
    model.lexical = None
    network = model.logits(*args)
    head.weight = np.arange(12, dtype=np.float32).reshape(4, 3) - 6
    head.bias = np.array([0.5, -0.5, 0.0, 1.0], np.float32)
    head.fitted = True
    model.lexical = head
    fused = model.logits(*args)
    np.testing.assert_allclose(fused, network + head.logits(head.matrix(*args)), rtol=1e-5, atol=1e-5)

    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / HEAD_FILE).read_text())
    assert saved["features"] == list(LEXICAL_FEATURES) and saved["fitted"] is True
    # a policy that asks for no features still scores the saved model as it was trained
    again = RelevanceModel.load(tmp_path / "m", ModelSpec(**{**SPEC.model_dump(), "lexical_features": []}),
                                device="cpu")
    np.testing.assert_allclose(again.logits(*args), fused, rtol=1e-4, atol=1e-4)
    # no head without features asked and none saved; re-saving such a model removes a stale head file
    bare = RelevanceModel.load("builtin:minilm-l6", ModelSpec(lexical_features=[]), device="cpu")
    assert bare.lexical is None
    bare.save(tmp_path / "reused")
    (tmp_path / "reused" / HEAD_FILE).write_text((tmp_path / "m" / HEAD_FILE).read_text())
    bare.save(tmp_path / "reused")
    assert not (tmp_path / "reused" / HEAD_FILE).exists()

    (tmp_path / "m" / HEAD_FILE).write_text("{not json")
    with pytest.raises(DataError, match="not a lexical head"):
        RelevanceModel.load(tmp_path / "m", SPEC, device="cpu")

    pytest.importorskip("onnxruntime")
    from serm.export import export_model

    shuffled = pairs.sample(frac=1.0, random_state=1)      # a non-positional index: rows must stay aligned
    report = export_model(model, tmp_path / "onnx", "onnx", ref="test", check_pairs=shuffled, log=lambda *_: None)
    assert report["check"]["max_abs_delta"] < 1e-3          # score_onnx.py adds the same offset
    import importlib.util

    spec = importlib.util.spec_from_file_location("exported_score_onnx", tmp_path / "onnx" / "score_onnx.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    got = mod.OnnxReranker(tmp_path / "onnx").predict_proba(shuffled["query"], shuffled["doc_text"],
                                                            shuffled["doc_title"])   # pandas Series, shuffled index
    want = model.predict_proba(shuffled["query"].tolist(), shuffled["doc_title"].tolist(),
                               shuffled["doc_text"].tolist())
    np.testing.assert_allclose(got, want, atol=1e-3)
    pre = json.loads((tmp_path / "onnx" / "serm_preprocessing.json").read_text())
    assert pre["lexical_head"]["weight"] == saved["weight"]
    assert "lexical head" in (tmp_path / "onnx" / "README.md").read_text()


def test_a_seed_model_with_the_head_ranks_a_language_it_never_saw(xquad):
    """Trained on 30 English questions, scored on 20 German ones (8 candidates each): the network
    alone reads 32 English-vocabulary words of each paragraph; with the head the model ranks
    German at least as well as the lexical features do, far above random order (~0.33)."""
    train, test = xquad
    set_seed(3)
    model = RelevanceModel.load("builtin:minilm-l6", SPEC, device="cpu")
    result = model_train(model, train)
    assert model.lexical.fitted and np.abs(model.lexical.weight).sum() > 0
    fused = ranking_metrics(test.assign(score=model.score(test["query"], test["doc_title"], test["doc_text"])))
    feats = model.lexical.matrix(test["query"], test["doc_title"], test["doc_text"])
    alone = ranking_metrics(test.assign(score=feats[:, 2]))["ndcg@4"]
    assert fused["queries"] == 20
    assert fused["ndcg@4"] >= 0.9 and fused["ndcg@4"] >= alone - 0.02, (fused, alone, result.val_loss)


def test_head_lr_zero_keeps_a_fitted_head_while_the_network_trains(xquad):
    """`training.head_lr: 0`: the head's weights stay as fitted through a round's fine-tuning;
    at the default rate they move."""
    train, _ = xquad
    set_seed(3)
    model = RelevanceModel.load("builtin:minilm-l6", SPEC, device="cpu")
    model_train(model, train.iloc[:80])
    fitted_w, fitted_b = model.lexical.weight.copy(), model.lexical.bias.copy()
    net = [p.detach().clone() for p in model.model.parameters()][-2]
    model_train(model, train.iloc[80:160], head_lr=0.0)
    assert np.array_equal(model.lexical.weight, fitted_w) and np.array_equal(model.lexical.bias, fitted_b)
    assert not np.allclose([p.detach() for p in model.model.parameters()][-2].numpy(), net.numpy())
    model_train(model, train.iloc[80:160])
    assert not np.allclose(model.lexical.weight, fitted_w)


def model_train(model, train, head_lr: float = 2e-3):
    from serm.model.training import train as fit

    return fit(model, train, TrainingSpec(epochs=1, batch_size=16, lr=4e-5, device="cpu", head_lr=head_lr), seed=3,
               log=lambda *_: None)


def test_features_do_not_depend_on_the_hash_seed():
    """Set iteration order changes with PYTHONHASHSEED; a float sum over a set must not."""
    import subprocess
    import sys
    code = ("from serm.model.passages import lexical_features as f; "
            "print(repr(f('broncos super bowl winner denver', 'Super_Bowl_50', "
            "'The Denver Broncos super bowl win.')))")
    seen = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)}).stdout
            for seed in range(12)}
    assert len(seen) == 1, seen


def test_embedding_cosine_is_the_bi_encoders_cosine_learned_with_the_head(tmp_path, xquad):
    """`embedding_cosine`: the bi-encoder baseline's cosine as one more head column (in the
    features' order, mixed with lexical ones), fitted with the network, saved and loaded with the
    model, and exported with its bi-encoder."""
    from serm.baselines import bi_encoder_scores

    train, test = xquad
    pairs = test.head(16).reset_index(drop=True)
    args = (pairs["query"].tolist(), pairs["doc_title"].tolist(), pairs["doc_text"].tolist())
    head = LexicalHead.fresh(["char3_coverage", "embedding_cosine", "term_coverage"])
    m = head.matrix(*args)
    np.testing.assert_allclose(m[:, 1], bi_encoder_scores(pairs), atol=1e-6)
    np.testing.assert_allclose(m[:, [0, 2]], LexicalHead.fresh(["char3_coverage", "term_coverage"]).matrix(*args))
    assert head.uses_embeddings and not LexicalHead.fresh(LEXICAL_FEATURES).uses_embeddings
    # the gold paragraph is closer to its question than the random negatives are
    assert m[pairs.grade.to_numpy() == 3, 1].mean() > m[pairs.grade.to_numpy() == 0, 1].mean() + 0.2
    assert head.matrix([], [], []).shape == (0, 3)

    spec = ModelSpec(**{**SPEC.model_dump(), "lexical_features": [*LEXICAL_FEATURES, "embedding_cosine"]})
    set_seed(3)
    model = RelevanceModel.load("builtin:minilm-l6", spec, device="cpu")
    model_train(model, train.iloc[:80])
    assert model.lexical.weight.shape == (4, 4) and np.abs(model.lexical.weight[:, 3]).sum() > 0
    model.save(tmp_path / "m")
    again = RelevanceModel.load(tmp_path / "m", SPEC, device="cpu")       # the saved head wins over the spec
    assert again.lexical.features == (*LEXICAL_FEATURES, "embedding_cosine")
    np.testing.assert_allclose(again.logits(*args), model.logits(*args), rtol=1e-4, atol=1e-4)

    # exported with its bi-encoder: score_onnx.py (onnxruntime, no torch) gives the same grades
    pytest.importorskip("onnxruntime")
    from serm.export import export_model

    report = export_model(model, tmp_path / "onnx", "onnx", ref="v1", check_pairs=pairs, log=lambda *_: None)
    assert report["check"]["max_abs_delta"] < 1e-3
    assert {"model.onnx", "tokenizer.json"} <= {p.name for p in (tmp_path / "onnx" / "bi_encoder").iterdir()}
    pre = json.loads((tmp_path / "onnx" / "serm_preprocessing.json").read_text())
    assert pre["embedding"]["directory"] == "bi_encoder" and pre["lexical_head"]["features"][-1] == "embedding_cosine"
    assert "embedding_cosine" in (tmp_path / "onnx" / "README.md").read_text()
    hf = export_model(model, tmp_path / "hf", "hf", ref="v1", log=lambda *_: None)
    assert "bi_encoder" in hf["files"] and (tmp_path / "hf" / "bi_encoder" / "model.safetensors").is_file()
