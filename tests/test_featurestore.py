"""A real Feast repo (file offline store, SQLite online store) in a temp workspace."""

import shutil
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from serm import featurestore as fs
from serm.errors import DataError

from .conftest import ROOT


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("feast")
    shutil.copytree(ROOT / "features", root / "features", ignore=shutil.ignore_patterns("__pycache__"))
    t0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
    docs = pd.DataFrame({"doc_id": [f"d{i}" for i in range(20)], "title": "Rivers",
                         "text": [f"the nile is long {i}" if i % 2 else f"mountains are high {i}" for i in range(20)],
                         "locale": "en"})
    fs.ingest_documents(root, docs, t0)
    events = pd.DataFrame({
        "event_id": [f"e{i}" for i in range(6)], "ts": t0, "query_id": ["q1"] * 4 + ["q2"] * 2,
        "query": ["how long is the nile"] * 4 + ["high mountains"] * 2, "locale": "en",
        "doc_id": ["d1", "d2", "d1", "d2", "d2", "d3"], "position": [1, 2, 1, 2, 1, 2],
        "clicked": [True, False, True, True, False, False], "dwell_s": [30.0, 0, 10.0, 5.0, 0, 0]})
    counts = fs.ingest_events(root, events, t0 + timedelta(hours=1))
    assert counts == {"queries": 2, "pairs": 4, "documents_known": 20}
    return root, t0


def test_online_pair_and_query_features(ws):
    root, _ = ws
    keys = pd.DataFrame({"query_id": ["q1", "q1", "q2"], "doc_id": ["d1", "d2", "d9"]})
    pf = fs.online_features(root, "pair_features", keys)
    assert pf["clicks"].tolist()[:2] == [2, 1] and pf["impressions"].tolist()[:2] == [2, 2]
    assert pf.loc[0, "mean_dwell_s"] == pytest.approx(20.0)
    assert pf.loc[0, "lexical_overlap"] == pytest.approx(4 / 5)   # long, is, the, nile of 5 query tokens
    assert pd.isna(pf.loc[2, "clicks"]), "a pair never seen stays null"
    qf = fs.online_features(root, "query_features", pd.DataFrame({"query_id": ["q1", "q2"]}))
    assert qf["ctr"].tolist() == pytest.approx([0.75, 0.0])


def test_historical_features_in_input_order(ws):
    root, t0 = ws
    ent = pd.DataFrame({"query_id": ["q2", "q1", "q1"], "doc_id": ["d3", "d2", "d1"],
                        "event_timestamp": pd.Timestamp(t0 + timedelta(days=1))})
    out = fs.historical_features(root, ent, ["query_features:query", "document_features:text"])
    assert out["query"].tolist() == ["high mountains", "how long is the nile", "how long is the nile"]
    assert out["text"].tolist()[2] == "the nile is long 1"


def test_missing_rows_are_an_error_not_silence(ws):
    root, t0 = ws
    ent = pd.DataFrame({"query_id": ["q1"], "doc_id": ["d1"], "event_timestamp": pd.Timestamp(t0 - timedelta(days=1))})
    with pytest.raises(DataError, match="dropped or without features"):
        fs.historical_features(root, ent, ["query_features:query"])


def test_unknown_document_in_events(ws):
    root, t0 = ws
    bad = pd.DataFrame({"event_id": ["x"], "ts": t0, "query_id": ["q"], "query": ["x"], "locale": "en",
                        "doc_id": ["nope"], "position": [1], "clicked": [False], "dwell_s": [0.0]})
    with pytest.raises(DataError, match="nope"):
        fs.ingest_events(root, bad, t0)
