"""Using a model outside the loop: `serm.load_model`, `serm score`, `serm export hf|onnx`.

A workspace with two committed versions (v0, v1: different heads on MiniLM) is built the way
the rounds build it (git + DVC, tags); every score is checked against the model's own
`predict_proba` on real XQuAD pairs whose paragraphs are longer than the passage window, so
the windowing an exported model needs is exercised, not skipped."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import serm
from serm.cli import main
from serm.errors import DataError
from serm.data.xquad import candidate_lists, load_paragraphs, load_questions
from serm.policy import ModelSpec

from .version_workspaces import commit_version, empty_workspace

SPEC = ModelSpec(max_length=48, window_words=24, batch_size=16)


@pytest.fixture(scope="module")
def pairs():
    q = load_questions()
    qs = pd.concat([q[q.locale == "en"].head(5), q[q.locale == "de"].head(3)])
    df = candidate_lists(qs, load_paragraphs(), 1, 2, seed=3).drop(columns="question_id").reset_index(drop=True)
    assert (df["doc_text"].str.split().str.len() > SPEC.window_words).mean() > 0.8   # windowing matters
    return df


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """v0 and v1 committed and tagged; v1 is production. Returns (root, {version: model})."""
    ws = empty_workspace(tmp_path_factory.mktemp("serving") / "ws")
    models = {v: commit_version(ws, v, seed=200 + v, spec=SPEC, labels=False, state=False, message=f"v{v}",
                                metrics={"static": {"ndcg@4": 0.5 + v / 10}}) for v in (0, 1)}
    return ws.root, models


def proba(model, df):
    return model.predict_proba(df["query"].tolist(), df["doc_title"].tolist(), df["doc_text"].tolist())


def test_load_model_production_and_versions(workspace, pairs):
    from serm.versioning import tree_checksum

    root, models = workspace
    before = tree_checksum(root / "data")
    prod = serm.load_model(root)                     # production = v1, read from data/model
    assert prod.version == 1 and "v1" in repr(prod)
    np.testing.assert_allclose(prod.predict_proba(pairs["query"], pairs["doc_text"], pairs["doc_title"]),
                               proba(models[1], pairs), atol=1e-6)
    v0 = serm.load_model(root, "v0", device="cpu")   # restored from its tag's DVC version
    p0 = v0.predict_proba(pairs["query"], pairs["doc_text"], pairs["doc_title"])
    np.testing.assert_allclose(p0, proba(models[0], pairs), atol=1e-6)
    assert np.abs(p0 - proba(models[1], pairs)).max() > 1e-3
    assert tree_checksum(root / "data") == before    # the workspace is never changed
    # score = expected grade; one query string pairs with every document
    docs = pairs["doc_text"].head(4).tolist()
    s = prod.score(pairs["query"].iloc[0], docs)
    p = prod.predict_proba([pairs["query"].iloc[0]] * 4, docs)
    np.testing.assert_allclose(s, p @ np.arange(4), atol=1e-5)
    assert prod.grade(pairs["query"].iloc[0], docs).tolist() == p.argmax(axis=1).tolist()
    with pytest.raises(DataError, match="2 queries for 3 documents"):
        prod.score(["a", "b"], ["x", "y", "z"])


def test_load_model_errors_name_the_fix(tmp_path):
    with pytest.raises(DataError, match="no production version yet"):
        serm.load_model(tmp_path)
    with pytest.raises(DataError, match="no such directory"):
        serm.load_model(tmp_path, str(tmp_path / "nope"))


def test_serm_score_files(workspace, pairs, tmp_path, capsys):
    root, models = workspace
    pairs.drop(columns=["grade"]).to_csv(tmp_path / "pairs.csv", index=False)
    rc = main(["score", "--data", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "out.parquet"),
               "-w", str(root)])
    out = capsys.readouterr().out
    assert rc == 0 and f"scored {len(pairs)} pairs with v1" in out
    got = pd.read_parquet(tmp_path / "out.parquet")
    assert list(got.columns[-6:]) == ["p0", "p1", "p2", "p3", "grade", "score"]
    assert got["query_id"].astype(str).tolist() == pairs["query_id"].astype(str).tolist()   # input kept, in order
    p = got[["p0", "p1", "p2", "p3"]].to_numpy()
    np.testing.assert_allclose(p, proba(models[1], pairs), atol=1e-5)
    np.testing.assert_allclose(got["score"], p @ np.arange(4), atol=1e-5)
    assert (got["grade"] == p.argmax(axis=1)).all()

    # pairs by doc_id, the text from a documents file; JSON summary; JSONL out
    docs = pairs[["doc_id", "doc_title", "doc_text", "locale"]].drop_duplicates("doc_id").rename(
        columns={"doc_title": "title", "doc_text": "text"})
    docs.to_parquet(tmp_path / "docs.parquet")
    pairs[["query", "doc_id"]].to_json(tmp_path / "ids.jsonl", orient="records", lines=True)
    rc = main(["score", "-m", "v0", "--data", str(tmp_path / "ids.jsonl"), "--documents", str(tmp_path / "docs.parquet"),
               "--out", str(tmp_path / "ids.out.jsonl"), "-w", str(root), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["version"] == 0 and summary["pairs"] == len(pairs)
    assert sum(summary["grades"].values()) == len(pairs)
    by_id = pd.read_json(tmp_path / "ids.out.jsonl", lines=True)
    np.testing.assert_allclose(by_id[["p0", "p1", "p2", "p3"]].to_numpy(), proba(models[0], pairs), atol=1e-5)

    pd.DataFrame({"q": ["x"], "doc_text": ["y"]}).to_csv(tmp_path / "bad.csv", index=False)
    rc = main(["score", "--data", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o.csv"), "-w", str(root)])
    assert rc == 2 and "no `query` column" in capsys.readouterr().err and not (tmp_path / "o.csv").exists()
    rc = main(["score", "--data", str(tmp_path / "ids.jsonl"), "--out", str(tmp_path / "o.csv"), "-w", str(root)])
    assert rc == 2 and "pass --documents FILE" in capsys.readouterr().err


def test_export_hf_loads_in_sentence_transformers(workspace, pairs, tmp_path, capsys):
    from sentence_transformers import CrossEncoder

    root, models = workspace
    out = tmp_path / "hf"
    assert main(["export", "--model", "v0", "--format", "hf", "--out", str(out), "-w", str(root)]) == 0
    assert f"exported v0 as hf to {out}" in capsys.readouterr().out
    pre = json.loads((out / "serm_preprocessing.json").read_text())
    assert pre["window_words"] == 24 and pre["max_length"] == 48 and pre["truncation"] == "longest_first"
    card = (out / "README.md").read_text()
    assert card.startswith("# SERM relevance model v0") and '"round": 0' in card and '"ndcg@4": 0.5' in card
    sys.path.insert(0, str(out))
    try:
        from serm_preprocess import document   # the copy in the export, not SERM's module
    finally:
        sys.path.remove(str(out))
    docs = [document(q, t, x, pre["window_words"], pre["passage"])
            for q, t, x in zip(pairs["query"], pairs["doc_title"], pairs["doc_text"])]
    ce = CrossEncoder(str(out), max_length=pre["max_length"], device="cpu")
    got = ce.predict(list(zip(pairs["query"], docs)), apply_softmax=True, batch_size=16)
    np.testing.assert_allclose(got, proba(models[0], pairs), atol=1e-5)
    # a non-empty --out is refused unless --overwrite
    assert main(["export", "--model", "v0", "--out", str(out), "-w", str(root)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err


BLOCK_SERM = """
import json, sys
sys.modules["serm"] = None          # any import of SERM now fails
sys.modules["torch"] = None         # and of torch: numpy, tokenizers, onnxruntime only
sys.path.insert(0, sys.argv[1])
from score_onnx import OnnxReranker
pairs = json.load(open(sys.argv[2]))
p = OnnxReranker(sys.argv[1]).predict_proba(pairs["query"], pairs["doc_text"], pairs["doc_title"], batch_size=7)
print(json.dumps(p.tolist()))
"""


def test_export_onnx_runs_without_serm(workspace, pairs, tmp_path, capsys):
    root, models = workspace
    out = tmp_path / "onnx"
    pairs.to_parquet(tmp_path / "check.parquet")
    assert main(["export", "--format", "onnx", "--out", str(out), "-w", str(root),
                 "--check-data", str(tmp_path / "check.parquet")]) == 0
    printed = capsys.readouterr().out
    assert f"ONNX vs torch on {len(pairs)} pairs: max |Δ probability|" in printed and "Spearman" in printed
    assert {"model.onnx", "score_onnx.py", "serm_preprocess.py", "tokenizer.json", "README.md"} <= {
        p.name for p in out.iterdir()}
    (tmp_path / "pairs.json").write_text(json.dumps({c: pairs[c].tolist() for c in ("query", "doc_title", "doc_text")}))
    res = subprocess.run([sys.executable, "-c", BLOCK_SERM, str(out), str(tmp_path / "pairs.json")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    np.testing.assert_allclose(np.array(json.loads(res.stdout)), proba(models[1], pairs), atol=1e-4)
    res = subprocess.run([sys.executable, str(out / "score_onnx.py"), "who founded the company?", "It was founded "
                          "by two engineers in 1998."], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and 0.0 <= float(res.stdout) <= 3.0, res.stderr[-2000:]
