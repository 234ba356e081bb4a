"""The stages a `files` source adds, on hand-made logs: skip-above negatives from unclicked
impressions, and test requests (whole queries, at random, within the budget)."""

import pandas as pd

from serm import stages
from serm.policy_schema import UnclickedNegativesSpec


def log(rows):
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "position", "clicked"]).assign(
        query="q", locale="en")


def test_skip_negatives_are_shown_above_a_click_and_never_clicked():
    events = log([
        # q1, two sessions: d1 shown above the clicked d3 both times, never clicked
        ("q1", "d1", 1, False), ("q1", "d2", 2, True), ("q1", "d3", 3, True),
        ("q1", "d1", 1, False), ("q1", "d2", 2, False), ("q1", "d3", 3, False),
        ("q1", "d4", 4, False), ("q1", "d4", 4, False),        # below every click: not a skip
        ("q2", "d9", 1, False), ("q2", "d8", 2, False),        # no click at all: no evidence
        ("q3", "d5", 1, False), ("q3", "d6", 2, True),         # shown once: below min_impressions
    ])
    spec = UnclickedNegativesSpec(max_per_query=2, min_impressions=2)
    out = stages.skip_negatives(events, spec, exclude=set())
    assert list(zip(out.query_id, out.doc_id, out.grade)) == [("q1", "d1", 0)]
    assert stages.skip_negatives(events, spec, exclude={("q1", "d1")}).empty
    assert len(stages.skip_negatives(events, UnclickedNegativesSpec(max_per_query=2, min_impressions=1),
                                     exclude=set())) == 2   # q3's d5 too


def test_test_requests_take_whole_queries_within_the_budget():
    events = pd.DataFrame([(f"q{q}", f"d{q}-{d}", d + 1, False) for q in range(10) for d in range(4)],
                          columns=["query_id", "doc_id", "position", "clicked"]).assign(query="q", locale="en")
    docs = pd.DataFrame({"doc_id": events.doc_id.unique(), "title": "t", "text": "x", "locale": "en"})
    out = stages.test_requests(events, docs, budget=10, exclude={"q0"}, seed=[1, 1])
    assert len(out) == 8 and out.query_id.nunique() == 2, "two whole queries of 4 fit in 10"
    assert "q0" not in set(out.query_id)
    assert (out.groupby("query_id").size() == 4).all()
    assert set(out.columns) >= {"query_id", "doc_id", "locale", "query", "doc_title", "doc_text", "why"}
    again = stages.test_requests(events, docs, budget=10, exclude={"q0"}, seed=[1, 1])
    assert again.equals(out), "a pure function of batch, exclusions and seed (mine and annotate agree)"
    other = stages.test_requests(events, docs, budget=10, exclude={"q0"}, seed=[1, 2])
    assert len(other) == 8
    assert stages.test_requests(events, docs, budget=0, exclude=set(), seed=[1, 1]).empty


def test_window_batching_cuts_the_events_by_ts():
    from serm.ingest import _cut
    from serm.policy_schema import FilesData

    ts = pd.to_datetime(["2026-11-02T01:00Z", "2026-11-02T05:59Z", "2026-11-02T06:00Z", "2026-11-02T23:00Z",
                         "2026-11-03T00:30Z"], utc=True)
    events = pd.DataFrame({"event_id": [f"e{i}" for i in range(5)], "ts": ts})
    spec = FilesData(source="files", documents="d.parquet", seed_judgments="s.csv", static_test="t.csv",
                     batching="window", window="6h")
    parts = _cut(events, spec)
    assert [list(p.event_id) for p in parts] == [["e0", "e1"], ["e2"], ["e3"], ["e4"]], "empty windows make no batch"
    whole = _cut(events, spec.model_copy(update={"batching": "file"}))
    assert len(whole) == 1 and len(whole[0]) == 5
