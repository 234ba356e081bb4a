"""The scoring fast path computes what the HF forward and sentence-transformers' CrossEncoder
compute, on the same weights: real packaged MiniLM, real XQuAD strings (long paragraphs that are
truncated, and title-only documents that are not)."""

import numpy as np
import pytest

from serm.data.xquad import candidate_lists, load_paragraphs, load_questions
from serm.model.cross_encoder import RelevanceModel
from serm.model.fast_bert import BertScorer
from serm.model.training import set_seed
from serm.policy import ModelSpec

SPEC = ModelSpec(max_length=64, passage="head", batch_size=8)


@pytest.fixture(scope="module")
def pairs():
    """50 pairs: 25 with a whole paragraph (truncated at 64 tokens), 25 with the title alone."""
    q = load_questions()
    df = candidate_lists(q[q.locale == "en"].head(9), load_paragraphs(), 2, 3, seed=3).head(50).reset_index(drop=True)
    df.loc[25:, "doc_text"] = ""
    return df


@pytest.fixture(scope="module")
def model():
    set_seed(0)
    return RelevanceModel.load("builtin:minilm-l6", SPEC, device="cpu")


def args(df):
    return df["query"].tolist(), df["doc_title"].tolist(), df["doc_text"].tolist()


def test_fast_path_matches_the_hf_forward(model, pairs):
    assert BertScorer.for_model(model.model) is not None
    fast = model.logits(*args(pairs))
    model.fast_path = False
    try:
        slow = model.logits(*args(pairs))
    finally:
        model.fast_path = True
    np.testing.assert_allclose(fast, slow, atol=2e-5, rtol=1e-4)
    # Batch composition changes padding, not results.
    np.testing.assert_allclose(model.logits(*args(pairs), batch_size=50), fast, atol=2e-5, rtol=1e-4)


def test_same_logits_as_sentence_transformers_cross_encoder(model, pairs, tmp_path):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed "
                             "(pip install -e .[test]); it is the reference implementation compared here")
    from serm.model.passages import model_inputs

    model.save(tmp_path / "m")
    ce = st.CrossEncoder(str(tmp_path / "m"), num_labels=4, max_length=SPEC.max_length, device="cpu")
    docs = model_inputs(*args(pairs), SPEC.passage, SPEC.window_words)
    theirs = ce.predict(list(zip(pairs["query"], docs)), batch_size=8, apply_softmax=False, show_progress_bar=False,
                        processing_kwargs={"text": {"truncation": "longest_first"}})
    np.testing.assert_allclose(model.logits(*args(pairs)), theirs, atol=2e-5, rtol=1e-4)


def test_a_forward_hook_sends_scoring_through_the_hf_forward(model, pairs):
    """MC dropout (mining.disagreement) switches dropout on from a forward pre-hook: the fast
    path must step aside so the hook runs and the passes differ."""
    import torch

    few = pairs.head(6)
    plain = model.logits(*args(few))
    def dropout_on(module, inputs):
        module.train()

    handle = model.model.register_forward_pre_hook(dropout_on)
    try:
        assert BertScorer.for_model(model.model) is None
        torch.manual_seed(0)
        noisy = model.logits(*args(few))
    finally:
        handle.remove()
        model.model.eval()
    assert not np.allclose(noisy, plain, atol=1e-3)
    np.testing.assert_array_equal(model.logits(*args(few)), plain)


def test_mc_dropout_on_the_fast_path_samples_like_the_hf_forward_in_train_mode(model, pairs):
    """`dropout=True` (the disagreement committee's MC dropout) runs on the fast path; its passes
    vary, and their mean matches the HF forward in train mode (same rates, same places) within
    sampling error."""
    import numpy as np
    import torch

    queries, titles, texts = args(pairs.head(12))
    torch.manual_seed(0)
    fast = np.stack([model.logits(queries, titles, texts, dropout=True) for _ in range(40)])
    model.fast_path = False
    try:
        torch.manual_seed(1)
        hf = np.stack([model.logits(queries, titles, texts, dropout=True) for _ in range(40)])
    finally:
        model.fast_path = True
    plain = model.logits(queries, titles, texts)
    assert not model.model.training, "back in eval mode"
    assert fast.std(axis=0).mean() > 1e-3 and hf.std(axis=0).mean() > 1e-3, "the passes differ"
    se = np.sqrt(fast.var(axis=0) / 40 + hf.var(axis=0) / 40) + 1e-6
    z = np.abs(fast.mean(axis=0) - hf.mean(axis=0)) / se
    assert np.mean(z < 4) > 0.97, f"mean of the passes differs beyond sampling error: {np.sort(z.ravel())[-5:]}"
    assert np.abs(fast.std(axis=0).mean() / hf.std(axis=0).mean() - 1) < 0.25
    np.testing.assert_allclose(model.logits(queries, titles, texts), plain, atol=1e-6)


def test_int8_precision_stays_close_to_fp32_and_is_kept_until_the_weights_change(pairs):
    """`precision: int8` quantizes the encoder's linear layers: on real pairs its expected grades
    rank like fp32's (Spearman >= 0.97) and its probabilities stay within 0.05. The quantized
    scorer is reused while the weights are unchanged and rebuilt after they change."""
    import torch
    from scipy.stats import spearmanr

    from serm.model.fast_bert import int8_available

    if not int8_available():
        pytest.skip("this torch build has no quantized CPU kernels")
    set_seed(0)
    fp32 = RelevanceModel.load("builtin:minilm-l6", SPEC, device="cpu")
    int8 = RelevanceModel(fp32.model, fp32.tokenizer, SPEC.model_copy(update={"precision": "int8"}), "cpu")
    assert int8.int8 and not fp32.int8
    p32, p8 = fp32.predict_proba(*args(pairs)), int8.predict_proba(*args(pairs))
    assert not np.array_equal(p32, p8), "int8 really ran"
    assert np.abs(p32 - p8).max() < 0.05
    assert spearmanr(RelevanceModel.expected_grade(p32), RelevanceModel.expected_grade(p8)).statistic >= 0.97
    first = int8._scorer()
    assert int8._scorer() is first, "kept while the weights are unchanged"
    with torch.no_grad():
        fp32.model.bert.encoder.layer[0].intermediate.dense.weight.mul_(0.5)   # a quantized weight
    assert int8._scorer() is not first, "rebuilt after a weight changed"
    assert not np.allclose(int8.predict_proba(*args(pairs)), p8)


def test_int8_keeps_an_outlier_input_channel_out_of_the_quantized_product():
    """One input channel ~30x the others (BERT's massive activations) sets a per-batch
    activation scale that flattens every other channel; computing that channel in fp32 keeps the
    int8 product close to fp32's."""
    import torch

    from serm.model.fast_bert import _Int8Linear, int8_available

    if not int8_available():
        pytest.skip("this torch build has no quantized CPU kernels")
    gen = torch.Generator().manual_seed(0)
    w, b = torch.randn(64, 96, generator=gen) * 0.1, torch.randn(64, generator=gen) * 0.1
    x = torch.randn(200, 96, generator=gen)
    x[::7, 5] = 30.0                     # a few tokens carry a huge value in channel 5
    exact = torch.nn.functional.linear(x, w, b)
    plain = _Int8Linear(w, b)(x)
    split = _Int8Linear(w, b, outliers=[5])(x.clone())
    err_plain, err_split = (plain - exact).abs().mean(), (split - exact).abs().mean()
    assert err_split < err_plain / 3, (float(err_split), float(err_plain))
    kept = x.clone()
    _Int8Linear(w, b, outliers=[5])(kept)
    assert torch.equal(kept, x), "the caller's activations are left alone unless inplace"


def test_the_calibrated_outlier_channels_are_the_ones_real_text_lights_up(model, pairs):
    """`outlier_channels` calibrates on seeded random token ids; on real pairs, wherever one of
    the feed-forward's input channels stands out, it is the one it found (a property of the
    weights)."""
    import torch

    from serm.model.fast_bert import outlier_channels

    found = outlier_channels(model.model, 1)
    seen, hooks = {}, []
    for i, layer in enumerate(model.model.bert.encoder.layer):
        for kind, mod in (("inter", layer.intermediate.dense), ("out", layer.output.dense)):
            hooks.append(mod.register_forward_hook(
                lambda m, inp, out, key=(kind, i): seen.__setitem__(key, inp[0].reshape(-1, inp[0].shape[-1]))))
    model.fast_path = False
    try:
        model.logits(*args(pairs))
    finally:
        model.fast_path = True
        for h in hooks:
            h.remove()
    clear = 0
    for key, x in seen.items():
        peak = x.abs().amax(0)
        if peak.max() >= 3 * peak.quantile(0.99):   # a channel that stands out (layers 0-3 here; 4-5 have none)
            clear += 1
            assert int(peak.argmax()) == int(found[key][0]), key
    assert clear >= 4, "the packaged MiniLM has outlier channels in several layers"


def test_last_layers_mc_dropout_runs_the_trunk_once_for_every_pass(model, pairs):
    """`dropout_layers=1, passes=P`: P samples per pair from one run of the unsampled layers.
    Repeatable under a seed, different across passes, noisier than none and less noisy than
    sampling every layer; the (P, n, 4) stack matches P separate calls in distribution."""
    import torch

    queries, titles, texts = args(pairs.head(12))
    torch.manual_seed(0)
    one = model.logits(queries, titles, texts, dropout=True, passes=30, dropout_layers=1)
    torch.manual_seed(0)
    again = model.logits(queries, titles, texts, dropout=True, passes=30, dropout_layers=1)
    np.testing.assert_array_equal(one, again)
    assert one.shape == (30, 12, 4)
    torch.manual_seed(1)
    every = model.logits(queries, titles, texts, dropout=True, passes=30)
    torch.manual_seed(2)
    single = np.stack([model.logits(queries, titles, texts, dropout=True, dropout_layers=1) for _ in range(30)])
    spread = lambda z: z.std(axis=0).mean()
    assert 1e-3 < spread(one) < spread(every), (spread(one), spread(every))
    assert abs(spread(single) / spread(one) - 1) < 0.25
    se = np.sqrt(one.var(axis=0) / 30 + single.var(axis=0) / 30) + 1e-6
    assert np.mean(np.abs(one.mean(axis=0) - single.mean(axis=0)) / se < 4) > 0.97


def test_the_embedder_runs_the_fast_forward_and_int8_stays_close(pairs):
    """`embed` (novelty, the embedding judge) runs the packaged MiniLM through the fast forward:
    the same mean-pooled embeddings as the HF forward; with precision int8 each cosine to the
    fp32 embedding stays above 0.99."""
    import torch

    from serm.annotation.embedding import _encoder, _fast_encoder, embed
    from serm.model.fast_bert import int8_available

    texts = pairs["query"].tolist() + pairs["doc_title"].tolist()
    assert _fast_encoder("builtin:minilm-l6", False) is not None
    fast = embed(texts, max_length=64)
    tok, model = _encoder("builtin:minilm-l6")
    with torch.inference_mode():
        b = tok(texts, truncation=True, max_length=64, padding=True, return_tensors="pt")
        h = model(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).float()
        ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(fast, ref, atol=2e-5)
    if int8_available():
        q8 = embed(texts, max_length=64, precision="int8")
        cos = (q8 * fast).sum(axis=1)
        assert not np.allclose(q8, fast, atol=1e-4), "int8 really ran"
        assert cos.min() > 0.99, cos.min()


def test_the_embedder_encodes_each_text_once_and_reads_repeats_back(pairs):
    """A text embedded before (in this call or an earlier one, at the same model, precision
    and max_length) is read from the process cache: the cache grows by the distinct new texts
    only, repeats get the same vector as a fresh encoding of that text alone, and another
    max_length is another entry."""
    from serm.annotation import embedding

    texts = pairs["query"].tolist()[:6]
    embedding._CACHE.clear()
    first = embedding.embed(texts + texts[:2], max_length=64)
    assert len(embedding._CACHE) == len(set(texts))
    np.testing.assert_array_equal(first[-2:], first[:2])
    again = embedding.embed(texts[::-1] + ["a text never embedded"], max_length=64)
    assert len(embedding._CACHE) == len(set(texts)) + 1
    np.testing.assert_array_equal(again[:-1], first[:len(texts)][::-1])
    embedding._CACHE.clear()
    alone = embedding.embed(texts[3:4], max_length=64)
    np.testing.assert_allclose(alone[0], first[3], atol=2e-5)    # one per batch: its own padding
    embedding.embed(texts[3:4], max_length=32)
    assert len(embedding._CACHE) == 2


def test_dropout_layers_below_one_is_refused(model):
    """`dropout_layers=0` would read as "every layer" if taken loosely: it is an error instead."""
    with pytest.raises(ValueError, match="dropout_layers must be at least 1"):
        BertScorer(model.model, dropout=True, dropout_layers=0)
