"""The score cache: a model never scores an unchanged pair twice, its key survives promotion's
rewrite of lineage/metrics and changes with the weights, the scoring spec and the device."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from serm.model.cross_encoder import RelevanceModel
from serm.model.score_cache import KEEP_MODELS, ScoreCache, model_key
from serm.model.training import set_seed
from serm.policy import ModelSpec

SPEC = ModelSpec(max_length=32, window_words=16, batch_size=8)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    set_seed(11)
    model = RelevanceModel.load("builtin:minilm-l6", SPEC, device="cpu")
    out = tmp_path_factory.mktemp("score-cache") / "model"
    model.save(out, metrics={"static": {"ndcg@4": 0.5}}, lineage={"version": 1})
    return model, out


def frame(n, start=0):
    return pd.DataFrame({"query": [f"query {i}" for i in range(start, start + n)], "doc_title": ["a title"] * n,
                         "doc_text": [f"document text number {i}" for i in range(start, start + n)]})


class Counting:
    def __init__(self, model):
        self.model, self.rows = model, []

    def __call__(self, sub):
        self.rows.append(len(sub))
        return self.model.score_frame(sub)


def test_unchanged_pairs_are_scored_once(saved, tmp_path):
    model, out = saved
    key = model_key(out, SPEC, "cpu")
    cache, score = ScoreCache(tmp_path / "scores"), Counting(model)
    first = cache.proba(frame(20), key, score)
    np.testing.assert_allclose(first, model.score_frame(frame(20)), atol=1e-6)
    again = ScoreCache(tmp_path / "scores").proba(frame(20), key, score)   # a new process: read from disk
    np.testing.assert_array_equal(again, first)
    grown = pd.concat([frame(20), frame(5, start=100)], ignore_index=True)
    proba = cache.proba(grown, key, score)
    assert score.rows == [20, 5], "only the five new pairs were scored"
    np.testing.assert_allclose(proba, model.score_frame(grown), atol=1e-5)
    dup = pd.concat([frame(3, start=200)] * 2, ignore_index=True)
    cache.proba(dup, key, score)
    assert score.rows[-1] == 3, "a pair listed twice is scored once"
    assert (cache.hits, cache.misses) == (20, 20 + 5 + 6), "rows counted, not unique pairs"


def test_the_key_follows_what_scores_depend_on(saved, tmp_path):
    _, out = saved
    copy = tmp_path / "model"
    shutil.copytree(out, copy)
    key = model_key(copy, SPEC, "cpu")
    (copy / "lineage.json").write_text(json.dumps({"version": 7, "dataset_round": 7}))   # promotion rewrites these
    (copy / "metrics.json").write_text("{}")
    assert model_key(copy, SPEC, "cpu") == key
    assert model_key(copy, SPEC.model_copy(update={"max_length": 64}), "cpu") != key
    assert model_key(copy, SPEC.model_copy(update={"batch_size": 64}), "cpu") == key, "batching does not change scores"
    assert model_key(copy, SPEC, "cuda:0") != key
    weights = next(p for p in copy.iterdir() if p.suffix == ".safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert model_key(copy, SPEC, "cpu") != key


def test_only_the_newest_models_are_kept(saved, tmp_path):
    model, _ = saved
    cache = ScoreCache(tmp_path / "scores")
    for i in range(KEEP_MODELS + 2):
        cache.proba(frame(2), f"model{i}", model.score_frame)
    kept = sorted(p.stem for p in (tmp_path / "scores").glob("*.parquet"))
    assert len(kept) == KEEP_MODELS and f"model{KEEP_MODELS + 1}" in kept and "model0" not in kept


def test_a_model_in_use_is_not_pruned(saved, tmp_path):
    """Production only hits the cache (its pairs were scored as the candidate); hits keep it."""
    import os
    import time

    model, _ = saved
    cache, production = ScoreCache(tmp_path / "scores"), Counting(model)
    cache.proba(frame(2), "production", production)
    old = time.time() - 3600
    os.utime(tmp_path / "scores" / "production.parquet", (old, old))
    for i in range(KEEP_MODELS + 1):
        cache.proba(frame(2), "production", production)             # a hit each round
        cache.proba(frame(2), f"candidate{i}", model.score_frame)   # a new candidate each round
    assert production.rows == [2], "production was scored once, never again after a prune"
