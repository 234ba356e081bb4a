"""Property-based fuzzing of the stream-event validator (hypothesis, derandomized).

Each case is a batch whose cells are drawn either from values the contract accepts (in every form
a producer may send them: bytes ids, numpy scalars, "3" positions, "TRUE" clicks, ISO timestamps
with offsets) or from values it rejects (nulls, wrong types, unknown documents, 1 MB strings,
invalid UTF-8 bytes, lone surrogates, negative or huge positions, NaN/inf dwell, bool-ish junk),
with event ids from a small pool so duplicates are frequent.

Properties: valid + quarantined == input rows, and each input row is in exactly one of them; a row
is valid exactly when every cell is acceptable and it is the first valid row with its event id;
every quarantined row has a reason naming its column; both outputs are typed as the contract says
and convert to Arrow tables, the step of a Parquet write that
rejects bad text (`stage_ingest` writes both). A frame that cannot hold events raises
`DataError` naming the columns, never anything else.
"""

import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serm.data.stream import EVENT_COLUMNS, MAX_POSITION, MAX_TEXT_CHARS, validate_events
from serm.errors import DataError

FUZZ = settings(max_examples=500, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
KNOWN_DOCS = {f"d{i}" for i in range(10)}
GOOD_ROW = {"event_id": "e1", "ts": "2026-11-01T10:00:00Z", "query_id": "q1", "query": "who won", "locale": "en",
            "doc_id": "d1", "position": 1, "clicked": True, "dwell_s": 12.5}
HUGE = "x" * 1_000_000


def text_forms(values):
    """A text value as str, UTF-8 bytes or numpy str."""
    return st.sampled_from(values).flatmap(
        lambda v: st.sampled_from([v, v.encode("utf-8"), np.str_(v)]))


GOOD = {
    "event_id": text_forms([f"e{i}" for i in range(6)]),
    "ts": st.sampled_from(["2026-11-01T10:00:00Z", "2026-11-01 10:00:00", "2026-11-01T12:00:00+02:00",
                           "2026-11-01", "2026-11-01T10:00:00.123456Z", pd.Timestamp("2026-11-01", tz="UTC"),
                           pd.Timestamp("2026-11-01 10:00"), datetime.datetime(2026, 11, 1, 10)]),
    "query_id": text_forms(["q1", "q2", "クエリ-3"]),
    "query": st.one_of(text_forms(["who won", "¿quién ganó?", "x" * MAX_TEXT_CHARS]),
                       st.text(min_size=1, max_size=30).filter(lambda s: s.strip())),
    "locale": text_forms(["en", "es", "tr"]),
    "doc_id": text_forms(sorted(KNOWN_DOCS)),
    "position": st.one_of(st.integers(1, MAX_POSITION), st.sampled_from(
        [np.int64(3), np.int32(1), 2.0, np.float64(4.0), "3", " 7 ", "1e1", MAX_POSITION])),
    "clicked": st.sampled_from([True, False, np.bool_(True), 0, 1, np.int64(1), 1.0, 0.0,
                                "true", "FALSE", "True", " 1 ", "0"]),
    "dwell_s": st.one_of(st.floats(0, 1e12, allow_nan=False), st.integers(0, 10**6),
                         st.sampled_from(["12.5", " 0 ", "1e3", np.float32(2.5), -0.0])),
}
BAD_TEXT = [None, float("nan"), pd.NA, "", "   ", HUGE, "y" * (MAX_TEXT_CHARS + 1), b"\xff\xfe bad",
            b"\xc3", "a\ud800b", "\udcff", 5, 3.2, True, ["a"], {"a": 1}]
BAD = {
    "event_id": st.sampled_from(BAD_TEXT),
    "ts": st.sampled_from([None, float("nan"), pd.NaT, "not a time", "", 5, 1.7e9, True, ["2026-01-01"],
                           {"a": 1}, "2026-13-45", "10000-01-01", b"\xff", "a\ud800", HUGE, "Nov 1 2026"]),
    "query_id": st.sampled_from(BAD_TEXT),
    "query": st.sampled_from(BAD_TEXT),
    "locale": st.sampled_from(BAD_TEXT),
    "doc_id": st.sampled_from([*BAD_TEXT, "unknown-doc", b"d99"]),
    "position": st.sampled_from([0, -1, -5.0, 2.5, "first", None, float("nan"), float("inf"), "inf", True, False,
                                 10**12, 10**30, 10**400, MAX_POSITION + 1, [1], "", b"\xff", "1_0x", HUGE]),
    "clicked": st.sampled_from(["maybe", "yes", 2, -1, 0.5, None, float("nan"), [True], "", "truee", b"\xff",
                                "a\ud800", pd.NA, HUGE]),
    "dwell_s": st.sampled_from([-0.1, -1, float("nan"), float("inf"), float("-inf"), "inf", "nan", "fast", None,
                                True, 10**400, [1], "", b"\xff", pd.NA, HUGE]),
}


@st.composite
def batches(draw):
    """(frame, expected bad-ness per row)."""
    n = draw(st.integers(0, 15))
    rows, bad = [], []
    for _ in range(n):
        row, row_bad = {}, False
        for col in EVENT_COLUMNS:
            use_bad = draw(st.integers(0, 9)) == 0    # about 1 cell in 10 is bad
            row[col] = draw(BAD[col] if use_bad else GOOD[col])
            row_bad |= use_bad
        rows.append(row)
        bad.append(row_bad)
    df = pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=object) for c in EVENT_COLUMNS})
    if draw(st.booleans()):
        try:
            df = df.infer_objects()      # what a reader hands over: int64/float64/bool columns where possible
        except OverflowError:
            pass                         # pandas cannot type a column holding 10**400: it stays object
    if draw(st.booleans()) and n:
        df.index = [7] * n               # a non-unique index must not confuse row bookkeeping
    if draw(st.booleans()):
        df["extra"] = 1                  # columns beyond the contract are ignored
        df = df[draw(st.permutations(list(df.columns)))]
    return df, bad


def _norm_id(v):
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


TOTALS = {"batches": 0, "rows": 0, "valid": 0, "quarantined": 0, "duplicates": 0}


@pytest.fixture(scope="module", autouse=True)
def report_totals(request):
    """After the module: rows fuzzed and where each went (README figures)."""
    yield
    if TOTALS["batches"]:
        with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
            request.config.pluginmanager.get_plugin("terminalreporter").write_line(
                "stream fuzzing: {batches} batches, {rows} rows: {valid} valid + {quarantined} quarantined "
                "({duplicates} as duplicate events); 0 rows lost".format(**TOTALS))


def check_reconciles(df, bad):
    v = validate_events(df, known_doc_ids=KNOWN_DOCS)
    n = len(df)
    assert v.counts["total"] == n
    q = v.quarantined
    assert list(q.columns) == ["row", *EVENT_COLUMNS, "reason"]
    rows_q = list(q["row"])
    assert len(set(rows_q)) == len(rows_q) and all(0 <= r < n for r in rows_q)
    assert all(isinstance(r, str) and r.split(":")[0] in EVENT_COLUMNS and len(r) > len(r.split(":")[0]) + 2
               for r in q["reason"]), "every quarantined row has a reason naming its column"

    # The oracle: a row is valid iff all its cells were drawn from GOOD and it is the first such
    # row with its event id (ids compared as decoded text).
    seen, expect_valid = set(), []
    for i in range(n):
        ok = not bad[i]
        if ok:
            eid = _norm_id(df["event_id"].iloc[i])
            ok = eid not in seen
            seen.add(eid)
        expect_valid.append(ok)
    assert sorted(set(range(n)) - set(rows_q)) == [i for i in range(n) if expect_valid[i]]
    dup_rows = [i for i in range(n) if not bad[i] and not expect_valid[i]]
    reasons = dict(zip(q["row"], q["reason"]))
    assert all(reasons[i] == "event_id: duplicate event" for i in dup_rows)

    val = v.valid
    assert list(val.columns) == EVENT_COLUMNS
    assert val["event_id"].is_unique
    assert str(val["ts"].dtype) == "datetime64[ns, UTC]" and val["ts"].notna().all()
    assert val["position"].dtype == "int32" and val["position"].between(1, MAX_POSITION).all()
    assert val["clicked"].dtype == bool
    assert val["dwell_s"].dtype == "float64" and np.isfinite(val["dwell_s"]).all() and (val["dwell_s"] >= 0).all()
    assert set(val["doc_id"]) <= KNOWN_DOCS
    for frame in (val, q):      # stage_ingest writes both; a lone surrogate must not break that
        assert pa.Table.from_pandas(frame, preserve_index=False).num_rows == len(frame)
    assert len(val) + len(q) == n, "every row is valid or quarantined: none lost"
    TOTALS.update(batches=TOTALS["batches"] + 1, rows=TOTALS["rows"] + n, valid=TOTALS["valid"] + len(val),
                  quarantined=TOTALS["quarantined"] + len(q), duplicates=TOTALS["duplicates"] + len(dup_rows))
    return v


@FUZZ
@given(case=batches())
def test_fuzz_rows_reconcile(case):
    check_reconciles(*case)


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(drop=st.sets(st.sampled_from(EVENT_COLUMNS)), double=st.sets(st.sampled_from(EVENT_COLUMNS), max_size=2),
       other=st.sampled_from([None, [], [{"event_id": "e1"}], {"a": [1]}, "events.parquet", 3]))
def test_fuzz_unreadable_frames_raise_data_error(drop, double, other):
    good = pd.DataFrame({c: pd.Series([GOOD_ROW[c]] * 3, dtype=object) for c in EVENT_COLUMNS})
    frame = good.drop(columns=sorted(drop))
    for col in sorted(double - drop):
        frame = pd.concat([frame, good[[col]]], axis=1)
    if not drop and not (double - drop):
        assert validate_events(frame).counts == {"valid": 1, "quarantined": 2, "total": 3}   # same event id
    else:
        with pytest.raises(DataError) as exc:
            validate_events(frame)
        named = drop if drop else double - drop
        assert all(c in str(exc.value) for c in named), str(exc.value)
    with pytest.raises(DataError, match="must be a table"):
        validate_events(other)


def test_named_edge_cases():
    """The cases the issue names, one row each, with the reason each must get."""
    cases = [
        ("query", None, "query: null"), ("position", "first", "position"), ("position", -3, "position"),
        ("position", 10**30, "position"), ("position", True, "position"), ("clicked", "maybe", "clicked"),
        ("dwell_s", float("nan"), "dwell_s"), ("dwell_s", float("inf"), "dwell_s"), ("dwell_s", True, "dwell_s"),
        ("doc_id", "unknown-doc", "doc_id: unknown document"), ("query", HUGE, "query: longer than"),
        ("query", b"\xff\xfe", "query: invalid UTF-8"), ("query", "a\ud800", "query: invalid UTF-8"),
        ("ts", 1_700_000_000, "ts: not a timestamp"),
    ]
    rows = []
    for i, (col, value, _) in enumerate(cases):
        rows.append({**GOOD_ROW, "event_id": f"e{i}", col: value})
    rows.append({**GOOD_ROW, "event_id": b"e0"})                  # bytes copy of e0's id: a duplicate
    rows.append({**GOOD_ROW, "event_id": "ok", "clicked": "TRUE", "position": "2", "doc_id": b"d1"})
    df = pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=object) for c in EVENT_COLUMNS})
    v = check_reconciles(df, [True] * len(cases) + [False, False])
    reasons = dict(zip(v.quarantined["row"], v.quarantined["reason"]))
    for i, (_, _, needle) in enumerate(cases):
        assert needle in reasons[i], (i, reasons[i])
    assert v.valid["event_id"].tolist() == ["e0", "ok"]     # row 0 is bad (null query): its b"e0" copy is kept
    assert v.valid["clicked"].tolist() == [True, True] and v.valid["position"].tolist() == [1, 2]
