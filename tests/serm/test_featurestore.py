"""A real Feast repo (file offline store, SQLite online store) in a temp workspace: 20 documents
and 50 events go in, hand-computed values come back out through Feast."""

import shutil
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from serm import featurestore as fs
from serm.errors import DataError

from tests.conftest import ROOT

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)

DOCS = {
    "d03": ("Nile", "The Nile is the longest river in Africa."),
    "d07": ("Alps", "Mountains of Europe: the Alps are high."),
}


def _documents() -> pd.DataFrame:
    rows = [(f"d{i:02d}", *DOCS.get(f"d{i:02d}", (f"Topic {i}", f"filler paragraph number {i} about nothing")))
            for i in range(20)]
    return pd.DataFrame(rows, columns=["doc_id", "title", "text"]).assign(locale="en")


def _events(sessions, ts) -> pd.DataFrame:
    """sessions: (query_id, query, [doc ids in rank order], {doc_id: dwell of a click})."""
    rows = []
    for query_id, query, shown, clicks in sessions:
        for pos, doc in enumerate(shown, start=1):
            rows.append((f"e{len(rows)}", ts, query_id, query, "en", doc, pos, doc in clicks, float(clicks.get(doc, 0.0))))
    return pd.DataFrame(rows, columns=["event_id", "ts", "query_id", "query", "locale", "doc_id", "position",
                                       "clicked", "dwell_s"])


Q1, Q2 = "how long is the nile", "high mountains in europe"


def _batch1() -> pd.DataFrame:
    # q1: 10 sessions x 3 docs; d03 first in sessions 0-5, second in 6-9; clicked when s % 3 != 1
    # (s = 0,2,3,5,6,8,9) with dwell 10*(s+1); d05 clicked once in session 4.
    s1 = [("q1", Q1, ["d03", "d01", "d05"] if s < 6 else ["d01", "d03", "d05"],
           {**({"d03": 10 * (s + 1)} if s % 3 != 1 else {}), **({"d05": 5} if s == 4 else {})}) for s in range(10)]
    # q2: 5 sessions x 4 docs; d07 clicked in sessions 0 and 1 (dwell 12, 18), d08 in session 2.
    s2 = [("q2", Q2, ["d07", "d08", "d09", "d10"], {0: {"d07": 12}, 1: {"d07": 18}, 2: {"d08": 3}}.get(s, {}))
          for s in range(5)]
    return _events(s1 + s2, T0 + timedelta(minutes=50))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("feast")
    shutil.copytree(ROOT / "features", root / "features", ignore=shutil.ignore_patterns("__pycache__"))
    assert fs.ingest_documents(root, _documents(), T0) == 20
    assert fs.apply(root) is False, "the registry already holds these definitions"
    ev = _batch1()
    assert len(ev) == 50
    assert fs.ingest_events(root, ev, T0 + timedelta(hours=1)) == {"queries": 2, "pairs": 7, "documents_known": 20}
    # A later batch: q2 shows d07 once more, unclicked; its per-batch row is the newest.
    later = _events([("q2", Q2, ["d08", "d07"], {})], T0 + timedelta(hours=3))
    assert fs.ingest_events(root, later, T0 + timedelta(hours=3))["pairs"] == 2
    # A late batch stamped before batch 1: goes to history, must not overwrite newer online rows.
    late = _events([("q1", Q1, ["d03"], {})], T0 + timedelta(minutes=30))
    fs.ingest_events(root, late, T0 + timedelta(minutes=30))
    return root


def test_feature_repo_holds_only_definitions():
    names = {p.name for p in (ROOT / "features").iterdir() if p.name != "__pycache__"}
    assert names == {"feature_store.yaml", "feature_store.redis.yaml", "definitions.py"}, \
        "feast apply executes every .py in features/"


def test_online_pair_features_match_hand_computed_values(ws):
    keys = pd.DataFrame({"query_id": ["q1", "q1", "q1", "q2"], "doc_id": ["d03", "d19", "d01", "d07"]},
                        index=[7, 3, 5, 1])
    pf = fs.online_features(ws, "pair_features", keys)
    assert len(pf) == 4 and pf["doc_id"].tolist() == ["d03", "d19", "d01", "d07"]
    a = pf.iloc[0]  # (q1, d03) from batch 1, not the late batch
    assert (a["impressions"], a["clicks"]) == (10, 7)
    assert a["mean_position"] == pytest.approx((6 * 1 + 4 * 2) / 10)
    assert a["mean_dwell_s"] == pytest.approx((10 + 30 + 40 + 60 + 70 + 90 + 100) / 7)
    assert a["lexical_overlap"] == pytest.approx(3 / 5)  # is, the, nile ("long" is not "longest")
    assert pf.iloc[1].drop(["query_id", "doc_id"]).isna().all(), "a pair never seen stays null"
    b = pf.iloc[2]  # (q1, d01): shown 10 times, never clicked, no words shared
    assert (b["impressions"], b["clicks"], b["mean_dwell_s"], b["lexical_overlap"]) == (10, 0, 0.0, 0.0)
    assert b["mean_position"] == pytest.approx(1.6)
    c = pf.iloc[3]  # (q2, d07): the later batch's row wins online
    assert (c["impressions"], c["clicks"], c["mean_position"]) == (1, 0, 2.0)
    assert c["lexical_overlap"] == pytest.approx(3 / 4)  # high, mountains, europe


def test_online_query_features(ws):
    qf = fs.online_features(ws, "query_features", pd.DataFrame({"query_id": ["q1", "q2", "nope"]}))
    assert qf["ctr"].iloc[:2].tolist() == pytest.approx([8 / 30, 0.0])
    assert qf["impressions"].iloc[:2].tolist() == [30, 2]
    assert qf["query_tokens"].iloc[0] == 5 and qf["query_chars"].iloc[0] == len(Q1)
    assert pd.isna(qf["ctr"].iloc[2])
    with pytest.raises(DataError, match="no_such_view"):
        fs.online_features(ws, "no_such_view", pd.DataFrame({"query_id": ["q1"]}))


def test_historical_features_point_in_time_and_input_order(ws):
    at = [T0 + timedelta(days=1)] * 4 + [T0 + timedelta(hours=2), T0 + timedelta(minutes=45)]
    ent = pd.DataFrame({"query_id": ["q2", "q1", "q1", "q1", "q2", "q1"],
                        "doc_id": ["d07", "d03", "d01", "d03", "d07", "d03"],  # (q1, d03) twice at one time
                        "event_timestamp": at, "label": [3, 2, 0, 2, 3, 2]})
    out = fs.historical_features(ws, ent, ["query_features:query", "document_features:text", "pair_features:clicks"])
    assert out[["query_id", "doc_id", "label"]].equals(ent[["query_id", "doc_id", "label"]])
    assert out["event_timestamp"].tolist() == ent["event_timestamp"].tolist()
    assert out["text"].tolist()[:3] == [DOCS["d07"][1], DOCS["d03"][1], "filler paragraph number 1 about nothing"]
    assert out["query"].tolist() == [Q2, Q1, Q1, Q1, Q2, Q1]
    # newest row at 1 day (batch 3h for q2, 1h for q1), batch 1 at 2 h, the late batch at 45 min
    assert out["clicks"].tolist() == [0, 7, 0, 7, 2, 0]


def test_rows_feast_would_drop_are_an_error(ws):
    ent = pd.DataFrame({"query_id": ["q1", "q1"], "doc_id": ["d03", "d03"],
                        "event_timestamp": [T0 + timedelta(days=1), T0 - timedelta(days=1)]})
    with pytest.raises(DataError, match=r"1 dropped.*'query_id': 'q1'"):
        fs.historical_features(ws, ent, ["query_features:query"])
    never = pd.DataFrame({"query_id": ["q9"], "doc_id": ["d03"], "event_timestamp": [T0 + timedelta(days=1)]})
    with pytest.raises(DataError, match="no feature rows.*q9"):
        fs.historical_features(ws, never, ["query_features:query", "document_features:text"])


def test_unknown_document_in_events_is_named(ws):
    bad = _events([("q5", "anything", ["d03", "d99"], {})], T0)
    with pytest.raises(DataError, match="d99"):
        fs.ingest_events(ws, bad, T0 + timedelta(hours=5))
    assert fs.online_features(ws, "query_features", pd.DataFrame({"query_id": ["q5"]}))["ctr"].isna().all()
