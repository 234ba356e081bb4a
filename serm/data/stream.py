"""Stream events: the contract, row validation with quarantine, and the click simulator.

Event contract: `event_id, ts, query_id, query, locale, doc_id, position, clicked, dwell_s`.
`validate_events` never drops a row silently: every input row ends up either valid or in the
quarantine frame with a `reason`, and the counts reconcile.
"""

from __future__ import annotations

from dataclasses import dataclass

from serm import schema
from serm.errors import DataError

EVENT_COLUMNS = list(schema.EVENT_COLUMNS)
OPTIONAL_COLUMNS = list(schema.EVENT_OPTIONAL_COLUMNS)
TEXT_COLUMNS = ["event_id", "query_id", "query", "locale", "doc_id"]
MAX_TEXT_CHARS = 2000
MAX_POSITION = 10_000     # a rank beyond any results page; also keeps positions inside int32


@dataclass
class ValidatedEvents:
    valid: "object"          # DataFrame of typed, valid events
    quarantined: "object"    # DataFrame: the offending rows as text, their input `row` number and `reason`

    @property
    def counts(self) -> dict[str, int]:
        return {"valid": len(self.valid), "quarantined": len(self.quarantined),
                "total": len(self.valid) + len(self.quarantined)}


def _text(value, max_chars: int | None = MAX_TEXT_CHARS) -> tuple[str | None, str | None]:
    """(the value as text, None) or (None, what is wrong with it)."""
    if value is None or (isinstance(value, float) and value != value):
        return None, "null"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None, "invalid UTF-8"
    if not isinstance(value, str):
        return None, f"not text ({type(value).__name__})"
    if not value.strip():
        return None, "empty"
    if max_chars is not None and len(value) > max_chars:
        return None, f"longer than {max_chars} characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None, "invalid UTF-8 (lone surrogate)"
    return str(value), None


def _number(value) -> float:
    """A finite or infinite float, or NaN when the value is not a number. Booleans are not numbers:
    `True` as a position or a dwell time is a producer bug, not 1."""
    import numpy as np

    if isinstance(value, (bool, np.bool_)):
        return float("nan")
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        value = value.strip()
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        try:
            return float(value)
        except (ValueError, OverflowError):
            return float("nan")
    return float("nan")


_BOOLS = {"true": True, "false": False, "1": True, "0": False}


def _boolean(value):
    """True/False, or None when the value is not clearly one: bools, 0/1, and 'true'/'false'/'0'/'1'
    in any case."""
    import numpy as np

    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return {0: False, 1: True}.get(value) if value == value else None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        return _BOOLS.get(value.strip().lower())
    return None


def _as_stored_text(value) -> str:
    """Quarantine stores every value as text that Parquet can write: bytes as their repr, lone
    surrogates escaped."""
    if isinstance(value, bytes):
        return repr(value)
    text = value if isinstance(value, str) else str(value)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _numbers(col):
    """A column as floats (NaN where a value is not a number); see `_number`."""
    import numpy as np

    if col.dtype.kind in "iuf":
        return col.to_numpy(dtype=float)
    return np.array([_number(v) for v in col], dtype=float)


def validate_events(raw, known_doc_ids: set[str] | None = None) -> ValidatedEvents:
    """Type and check each row; bad rows go to quarantine with the reason.

    A frame that cannot hold events at all (not a table, a missing or doubled column) raises
    `DataError` naming the columns; anything wrong inside a row quarantines that row.
    """
    import numpy as np
    import pandas as pd

    if not isinstance(raw, pd.DataFrame):
        raise DataError(f"a stream batch must be a table (pandas DataFrame), got {type(raw).__name__}")
    missing = [c for c in EVENT_COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(f"stream batch lacks column(s) {schema.name_missing(missing, raw.columns, EVENT_COLUMNS)}; "
                        f"events need {', '.join(EVENT_COLUMNS)}")
    doubled = sorted({c for c in raw.columns[raw.columns.duplicated()] if c in EVENT_COLUMNS})
    if doubled:
        raise DataError(f"stream batch has column(s) {', '.join(doubled)} more than once; keep one of each")
    optional = [c for c in OPTIONAL_COLUMNS if c in raw.columns]
    df = raw[EVENT_COLUMNS + optional].reset_index(drop=True)
    n = len(df)
    reasons = np.full(n, "", dtype=object)

    def flag(mask, why):
        mask = np.asarray(mask, dtype=bool) & (reasons == "")
        reasons[mask] = why

    text = {}
    for col in TEXT_COLUMNS:
        pairs = [_text(v) for v in df[col]]
        text[col] = pd.Series([t for t, _ in pairs], dtype=object)
        for i, (_, problem) in enumerate(pairs):
            if problem and reasons[i] == "":
                reasons[i] = f"{col}: {problem}"
    # Typed columns (what the simulator and Parquet readers produce) take the vectorized path;
    # object columns are checked value by value.
    if df["ts"].dtype.kind == "M":
        ts = pd.to_datetime(df["ts"], utc=True)
    else:   # ISO 8601 only: a bare number is ambiguous (seconds? nanoseconds?), not a timestamp
        ts = pd.to_datetime(df["ts"].astype(object).map(lambda v: None if isinstance(v, (bool, int, float, np.number))
                                                        else v), errors="coerce", utc=True, format="ISO8601")
    flag(ts.isna().to_numpy(), "ts: not a timestamp (ISO 8601)")
    pos = _numbers(df["position"])
    with np.errstate(invalid="ignore"):
        flag(~((pos >= 1) & (pos <= MAX_POSITION) & (pos == np.round(pos))),
             f"position: not a whole number in 1..{MAX_POSITION}")
    clicked = df["clicked"].to_numpy(dtype=object) if df["clicked"].dtype == bool else \
        np.array([_boolean(v) for v in df["clicked"]], dtype=object)
    flag(pd.isna(clicked), "clicked: not a boolean (true/false/1/0)")
    dwell = _numbers(df["dwell_s"])
    with np.errstate(invalid="ignore"):
        flag(~(np.isfinite(dwell) & (dwell >= 0)), "dwell_s: not a finite number >= 0")
    extra = {}
    if "session_id" in optional:   # optional: a null is no session, anything else must be text
        checked = [(None, None) if v is None or (isinstance(v, float) and v != v) else _text(v)
                   for v in df["session_id"]]
        extra["session_id"] = pd.Series([t for t, _ in checked], dtype=object)
        for i, (_, problem) in enumerate(checked):
            if problem and reasons[i] == "":
                reasons[i] = f"session_id: {problem}"
    if "served_score" in optional:  # optional: a null is no score, anything else a finite number
        raw_scores = df["served_score"]
        scores = _numbers(raw_scores)
        null = pd.isna(raw_scores).to_numpy()
        flag(~null & ~np.isfinite(scores), "served_score: not a finite number")
        extra["served_score"] = pd.Series(np.where(null, np.nan, scores))
    if known_doc_ids is not None:
        flag(~text["doc_id"].isin(known_doc_ids).to_numpy(), "doc_id: unknown document")
    # Duplicates among otherwise valid rows (as decoded text, so b"e1" and "e1" are one id):
    # a corrupt copy quarantined for its own reason does not cost the good copy its place.
    ok = reasons == ""
    dup = np.zeros(n, dtype=bool)
    dup[ok] = text["event_id"][ok].duplicated(keep="first").to_numpy()
    flag(dup, "event_id: duplicate event")

    bad = reasons != ""
    quarantined = df[bad].astype(object).map(_as_stored_text).reset_index(drop=True)
    quarantined.insert(0, "row", np.flatnonzero(bad).astype("int64"))
    quarantined["reason"] = pd.Series(list(reasons[bad]), dtype=object)
    good = ~bad
    valid = pd.DataFrame({col: text[col][good].astype(str).to_numpy() for col in TEXT_COLUMNS})
    valid["ts"] = ts[good].reset_index(drop=True)
    valid["position"] = pos[good].astype("int32")
    valid["clicked"] = clicked[good].astype(bool)
    valid["dwell_s"] = dwell[good].astype("float64")
    for col, values in extra.items():
        valid[col] = values[good].to_numpy()
    out = ValidatedEvents(valid[EVENT_COLUMNS + optional], quarantined.reset_index(drop=True))
    if out.counts["total"] != n:
        raise AssertionError(f"validation lost rows: {out.counts} for {n} input rows")
    return out


def simulate_clicks(candidates, scores, clicks_spec, batch_index: int, seed: int, start_ts):
    """Rank each query's candidates by the production model's score and draw clicks from a
    position-based model on the hidden grades: P(click) = P(examine rank k) * P(attract | grade).

    `candidates` holds the hidden `grade`; the returned events do not.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng([seed, batch_index])
    attract = np.asarray(clicks_spec.attractiveness)
    df = candidates[["query_id", "query", "locale", "doc_id", "grade"]].copy()
    df["score"] = scores
    df = df.sort_values(["query_id", "score"], ascending=[True, False], kind="stable")
    df["position"] = df.groupby("query_id").cumcount() + 1
    n_sessions = clicks_spec.sessions_per_query
    rep = df.loc[df.index.repeat(n_sessions)].copy()
    rep["session"] = np.tile(np.arange(n_sessions), len(df))
    examine = 1.0 / rep["position"].to_numpy() ** clicks_spec.examination_decay
    p_click = examine * attract[rep["grade"].to_numpy()]
    rep["clicked"] = rng.random(len(rep)) < p_click
    # Dwell grows with the hidden grade; unclicked impressions have no dwell.
    dwell = rng.lognormal(mean=np.log(4.0 + 12.0 * rep["grade"].to_numpy()), sigma=0.5)
    rep["dwell_s"] = np.where(rep["clicked"], np.round(dwell, 2), 0.0)
    qorder = {q: i for i, q in enumerate(df["query_id"].unique())}
    offsets = rep["query_id"].map(qorder).to_numpy() * 60 + rep["session"].to_numpy() * 7
    rep["ts"] = pd.Timestamp(start_ts) + pd.to_timedelta(offsets, unit="s")
    rep["event_id"] = [f"b{batch_index:04d}-{i:07d}" for i in range(len(rep))]
    return rep[EVENT_COLUMNS].reset_index(drop=True)
