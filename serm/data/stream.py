"""Stream events: the contract, row validation with quarantine, and the click simulator.

Event contract: `event_id, ts, query_id, query, locale, doc_id, position, clicked, dwell_s`.
`validate_events` never drops a row silently: every input row ends up either valid or in the
quarantine frame with a `reason`, and the counts reconcile.
"""

from __future__ import annotations

from dataclasses import dataclass

from serm.errors import DataError

EVENT_COLUMNS = ["event_id", "ts", "query_id", "query", "locale", "doc_id", "position", "clicked", "dwell_s"]
MAX_TEXT_CHARS = 2000


@dataclass
class ValidatedEvents:
    valid: "object"          # DataFrame of typed, valid events
    quarantined: "object"    # DataFrame of the offending rows (as strings) + `reason`

    @property
    def counts(self) -> dict[str, int]:
        return {"valid": len(self.valid), "quarantined": len(self.quarantined),
                "total": len(self.valid) + len(self.quarantined)}


def _text_problem(value) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return "null"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return "invalid UTF-8"
    if not isinstance(value, str):
        return f"not text ({type(value).__name__})"
    if not value.strip():
        return "empty"
    if len(value) > MAX_TEXT_CHARS:
        return f"longer than {MAX_TEXT_CHARS} characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "invalid UTF-8 (lone surrogate)"
    return None


def validate_events(raw, known_doc_ids: set[str] | None = None) -> ValidatedEvents:
    """Type and check each row; bad rows go to quarantine with the reason."""
    import numpy as np
    import pandas as pd

    missing = [c for c in EVENT_COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(f"stream batch lacks column(s) {', '.join(missing)}; events need {', '.join(EVENT_COLUMNS)}")
    df = raw[EVENT_COLUMNS].reset_index(drop=True).copy()
    reasons = pd.Series([""] * len(df), dtype=object)

    def flag(mask, why):
        mask = pd.Series(mask, index=df.index).fillna(True).astype(bool) & (reasons == "")
        reasons[mask] = why

    for col in ("event_id", "query_id", "query", "locale", "doc_id"):
        problems = df[col].map(_text_problem)
        has = problems.notna()
        for idx in np.flatnonzero(has.to_numpy()):
            if reasons[idx] == "":
                reasons[idx] = f"{col}: {problems[idx]}"
    ts = pd.to_datetime(df["ts"], errors="coerce", utc=True)
    flag(ts.isna(), "ts: not a timestamp")
    pos = pd.to_numeric(df["position"], errors="coerce")
    flag(pos.isna() | (pos < 1) | (pos != pos.round()), "position: not a whole number >= 1")
    clicked = df["clicked"].map(
        lambda v: v if isinstance(v, (bool, np.bool_)) else
        {0: False, 1: True, "0": False, "1": True, "true": True, "false": False}.get(
            v.lower() if isinstance(v, str) else v, None) if isinstance(v, (str, int, np.integer)) else None)
    flag(clicked.isna(), "clicked: not a boolean")
    dwell = pd.to_numeric(df["dwell_s"], errors="coerce")
    flag(dwell.isna() | (dwell < 0) | ~np.isfinite(dwell.fillna(-1)), "dwell_s: not a number >= 0")
    if known_doc_ids is not None:
        flag(~df["doc_id"].isin(known_doc_ids), "doc_id: unknown document")
    dup = df["event_id"].duplicated(keep="first") & (reasons == "")
    flag(dup, "event_id: duplicate event")

    bad = reasons != ""
    # Quarantine keeps each offending value readable (bytes as their repr): nothing is lost.
    quarantined = df[bad].apply(lambda col: col.map(lambda v: repr(v) if isinstance(v, bytes) else str(v)))
    quarantined = quarantined.assign(reason=reasons[bad])
    valid = df[~bad].copy()
    valid["ts"] = ts[~bad]
    valid["position"] = pos[~bad].astype("int32")
    valid["clicked"] = clicked[~bad].astype(bool)
    valid["dwell_s"] = dwell[~bad].astype("float64")
    for col in ("event_id", "query_id", "query", "locale", "doc_id"):
        valid[col] = valid[col].map(lambda v: v.decode("utf-8") if isinstance(v, bytes) else v).astype(str)
    out = ValidatedEvents(valid.reset_index(drop=True), quarantined.reset_index(drop=True))
    assert out.counts["total"] == len(raw), "validation must account for every row"
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
