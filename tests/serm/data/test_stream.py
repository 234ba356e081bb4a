import numpy as np
import pandas as pd
import pytest

from serm.data.stream import EVENT_COLUMNS, simulate_clicks, validate_events
from serm.errors import DataError
from serm.policy import ClickSpec


def good_rows(n=6):
    return pd.DataFrame({
        "event_id": [f"e{i}" for i in range(n)], "ts": ["2026-11-01T10:00:00Z"] * n,
        "query_id": ["q1"] * n, "query": ["who won"] * n, "locale": ["en"] * n,
        "doc_id": [f"d{i}" for i in range(n)], "position": list(range(1, n + 1)),
        "clicked": [True] + [False] * (n - 1), "dwell_s": [12.5] + [0.0] * (n - 1)})


def test_valid_rows_pass_typed():
    v = validate_events(good_rows(), known_doc_ids={f"d{i}" for i in range(6)})
    assert v.counts == {"valid": 6, "quarantined": 0, "total": 6}
    assert v.valid["position"].dtype.kind == "i" and v.valid["clicked"].dtype == bool


def test_malformed_rows_are_quarantined_and_counted():
    df = good_rows(10).astype(object)
    df.loc[0, "query"] = None                     # null
    df.loc[1, "position"] = "first"               # wrong type
    df.loc[2, "clicked"] = "maybe"                # not a boolean
    df.loc[3, "dwell_s"] = -4                     # negative
    df.loc[4, "doc_id"] = "unknown-doc"           # unknown id
    df.loc[5, "query"] = "x" * 10_000             # huge string
    df.loc[6, "query"] = b"\xff\xfe bad"          # invalid UTF-8
    df.loc[7, "event_id"] = "e8"                  # duplicate of row 8's id (first one kept)
    df.loc[8, "ts"] = "not a time"
    v = validate_events(df, known_doc_ids={f"d{i}" for i in range(10)})
    assert v.counts["total"] == 10
    assert v.counts["quarantined"] == 8
    reasons = " | ".join(v.quarantined["reason"])
    for needle in ("query: null", "position", "clicked", "dwell_s", "unknown document", "longer than",
                   "invalid UTF-8", "ts: not a timestamp"):
        assert needle in reasons, needle
    # row 7 carries id e8 and is kept (first); row 8 (bad ts) is quarantined for its own reason
    assert set(v.valid["event_id"]) == {"e8", "e9"}


def test_duplicate_events_quarantined():
    df = pd.concat([good_rows(3), good_rows(3)], ignore_index=True)
    v = validate_events(df)
    assert v.counts == {"valid": 3, "quarantined": 3, "total": 6}
    assert (v.quarantined["reason"] == "event_id: duplicate event").all()


def test_missing_column_is_a_clear_error():
    with pytest.raises(DataError, match="lacks column.*dwell_s"):
        validate_events(good_rows().drop(columns=["dwell_s"]))


def test_click_model_is_position_biased():
    n_q, docs = 400, 6
    cands = pd.DataFrame({
        "query_id": np.repeat([f"q{i}" for i in range(n_q)], docs), "query": "q", "locale": "en",
        "doc_id": [f"d{j}" for _ in range(n_q) for j in range(docs)],
        "grade": np.tile([3, 0, 0, 0, 0, 0], n_q)})
    # Gold first vs gold last: same grades, different positions.
    top = simulate_clicks(cands, np.tile([5, 4, 3, 2, 1, 0], n_q), ClickSpec(sessions_per_query=1), 1, 0, "2026-01-01")
    low = simulate_clicks(cands, np.tile([0, 5, 4, 3, 2, 1], n_q), ClickSpec(sessions_per_query=1), 1, 0, "2026-01-01")
    assert list(top.columns) == EVENT_COLUMNS
    ctr_top = top[top.doc_id == "d0"].clicked.mean()
    ctr_low = low[low.doc_id == "d0"].clicked.mean()
    assert ctr_top > 0.7 and ctr_low < 0.3
    assert top.loc[top.clicked, "dwell_s"].gt(0).all() and top.loc[~top.clicked, "dwell_s"].eq(0).all()
    assert validate_events(top).counts["quarantined"] == 0
