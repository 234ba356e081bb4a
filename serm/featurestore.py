"""Ingest into and read from the workspace's Feast feature store (`<workspace>/features/`).

Derived state lives in `<workspace>/.serm/feast/`: `registry.db`, `online.db` (SQLite online
store; Redis by configuration) and `offline/{queries,documents,pairs}.parquet` (the `file`
offline store). Each ingest appends feature rows stamped with the batch time `ts` and
materializes them into the online store. The offline files' names, columns, dtypes and keys
come from the feature views in `features/definitions.py`; they are kept in `views.json` under
the definitions' sha256, so an ingest into an applied store does not execute the definitions.

Query and pair features are per-batch aggregates: a key seen again in a later batch gets a new
row with that batch's counts (not cumulative counts over all batches); the newest row wins
online and in point-in-time joins, the history stays offline.

Feast's historical join drops entity rows whose key has no feature row inside the TTL window
without a word, so `historical_features` checks row counts and raises `DataError`.

Public API: `open_store`, `apply`, `ingest_documents`, `ingest_events`, `online_features`,
`historical_features` (and the helper `lexical_overlap`). Feast is imported inside functions:
`import feast` costs ~10 s.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from serm.errors import DataError
from serm.files import atomic_write_json, write_parquet
from serm.schema import DOCUMENT_COLUMNS, EVENT_COLUMNS

_TOKEN = re.compile(r"\w+", re.UNICODE)
# The views this module writes; `features/definitions.py` must define them. Their columns, join
# keys and offline files are read from the definitions (`_views`).
VIEWS = ("query_features", "document_features", "pair_features")
# Feast value type (of String, Int64, Float64 fields and of entity keys) -> pandas dtype of the
# offline parquet column.
_DTYPES = {"STRING": "str", "INT64": "int64", "DOUBLE": "float64"}


@dataclass(frozen=True)
class _View:
    """What the offline store needs to know of one feature view."""

    name: str
    file: str                              # the offline parquet file (its FileSource path's name)
    keys: tuple[str, ...]                  # the join keys of its entities
    columns: tuple[tuple[str, str], ...]   # (column, pandas dtype): the join keys, then the features


def _state(workspace: Path) -> Path:
    return Path(workspace) / ".serm" / "feast"


def _offline(workspace: Path) -> Path:
    return _state(workspace) / "offline"


CONFIG_ENV = "SERM_FEATURE_STORE_YAML"


def store_config(workspace: Path) -> Path:
    """The feature_store.yaml in use: `$SERM_FEATURE_STORE_YAML` (a path, relative to the feature
    repo, e.g. `feature_store.redis.yaml`) when set, else `features/feature_store.yaml`. Feast
    expands `${VAR}` in it; a variable left unset is refused here, by name."""
    repo = Path(workspace) / "features"
    chosen = os.environ.get(CONFIG_ENV)
    path = repo / (chosen or "feature_store.yaml")
    if not path.exists():
        where = f" (from ${CONFIG_ENV})" if chosen else ""
        raise DataError(f"{path}{where} does not exist: {workspace} is not a SERM workspace, or the override "
                        "names a missing file; copy the project's features/ folder into it (serm init does)"
                        + (f" or unset {CONFIG_ENV}" if chosen else ""))
    unset = sorted(set(re.findall(r"\$\{(\w+)\}", path.read_text())) - set(os.environ))
    if unset:
        raise DataError(f"{path} uses environment variable(s) {', '.join(unset)}, which are not set; "
                        f"export them (e.g. SERM_REDIS=127.0.0.1:6379) or unset {CONFIG_ENV}")
    return path


def open_store(workspace: Path):
    """The workspace's `feast.FeatureStore` (repo_path = `<workspace>/features`, configured by
    `store_config`)."""
    repo = Path(workspace) / "features"
    config = store_config(workspace)
    os.environ.setdefault("FEAST_USAGE", "False")
    import warnings

    caller_filters = list(warnings.filters)
    from feast import FeatureStore

    # Importing feast puts simplefilter("once", DeprecationWarning) in front of the process's
    # filters, which would let every library's deprecation chatter through: keep the caller's.
    warnings.filters[:] = caller_filters

    _state(workspace).mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(repo), fs_yaml_file=config)


def _definitions(workspace: Path) -> Path:
    path = Path(workspace) / "features" / "definitions.py"
    if not path.exists():
        raise DataError(f"{path} does not exist; copy the project's features/ folder into the workspace")
    return path


def _load_definitions(path: Path):
    name = "serm_feature_defs_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    keep, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in features/
    try:
        spec.loader.exec_module(mod)
    except Exception as e:
        raise DataError(f"{path} failed to load ({type(e).__name__}: {e}); fix the feature definitions") from e
    finally:
        sys.dont_write_bytecode = keep
    return mod


def _derive(mod, path: Path) -> dict[str, _View]:
    """The views of the loaded definitions module `mod`, in definition order: columns and
    dtypes from each view's schema and its entities' join keys, file from its FileSource."""
    from feast import Entity, FeatureView

    objects = list(vars(mod).values())
    missing = set(VIEWS) - {o.name for o in objects if isinstance(o, FeatureView)}
    if missing:
        raise DataError(f"{path} does not define feature view(s) {sorted(missing)}; restore it from the project")
    entities = {o.name: o for o in objects if isinstance(o, Entity)}

    def dtype(value_type, column: str, view: str) -> str:
        if value_type.name not in _DTYPES:
            raise DataError(f"{path}: {view}.{column} has Feast value type {value_type.name}; the offline store "
                            "holds String, Int64 and Float64 columns")
        return _DTYPES[value_type.name]

    views = {}
    for fv in (o for o in objects if isinstance(o, FeatureView)):
        if fv.batch_source.timestamp_field != "event_timestamp":
            raise DataError(f"{path}: the source of {fv.name} is stamped by {fv.batch_source.timestamp_field!r}; "
                            "serm.featurestore writes event_timestamp")
        unknown = [e for e in fv.entities if e not in entities]
        if unknown:
            raise DataError(f"{path}: {fv.name} names entities {unknown} that the file does not define")
        keys = [(entities[e].join_key, dtype(entities[e].value_type, entities[e].join_key, fv.name))
                for e in fv.entities]
        feats = [(f.name, dtype(f.dtype.to_value_type(), f.name, fv.name)) for f in fv.features]
        views[fv.name] = _View(fv.name, Path(fv.batch_source.path).name, tuple(k for k, _ in keys),
                               tuple(keys + feats))
    return views


def _views(workspace: Path) -> dict[str, _View]:
    """The views of `<workspace>/features/definitions.py` (`_derive`), kept in
    `.serm/feast/views.json` under the sha256 of the definitions: deriving them executes the
    definitions, which imports feast (~10 s); reading the kept ones costs ~1 ms."""
    path = _definitions(workspace)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    kept = _state(workspace) / "views.json"
    if kept.exists():
        try:
            cached = json.loads(kept.read_text(encoding="utf-8"))
            if cached.get("definitions_sha256") == digest:
                return {v["name"]: _View(v["name"], v["file"], tuple(v["keys"]), tuple(map(tuple, v["columns"])))
                        for v in cached["views"]}
        except (ValueError, KeyError, TypeError, AttributeError):
            pass   # unreadable: derive again and rewrite it
    views = _derive(_load_definitions(path), path)
    atomic_write_json(kept, {"definitions_sha256": digest,
                             "views": [{"name": v.name, "file": v.file, "keys": list(v.keys),
                                        "columns": [list(c) for c in v.columns]} for v in views.values()]})
    return views


def apply(workspace: Path, store=None) -> bool:
    """Register `features/definitions.py` in the registry. Returns False (and costs ~10 ms)
    when the registry already holds this version of the definitions for this workspace: a
    sha256 of the file and the workspace path is kept next to the registry (the FileSources
    hold absolute paths, so a copied workspace re-applies)."""
    workspace = Path(workspace).resolve()
    path = _definitions(workspace)
    # The store's configuration is part of the key: switching the online store (SQLite ->
    # Redis) re-applies and fills the new store from the offline history below.
    config = store_config(workspace)
    views = _views(workspace)
    _ensure_offline_files(workspace, views)
    # Expanded: a new ${SERM_REDIS} is a new (empty) store to fill.
    resolved = os.path.expandvars(config.read_text(encoding="utf-8")).encode()
    digest = hashlib.sha256(path.read_bytes() + str(workspace).encode() + resolved).hexdigest()
    marker = _state(workspace) / "definitions.sha256"
    if marker.exists() and marker.read_text() == digest and (_state(workspace) / "registry.db").exists():
        return False
    store = store or open_store(workspace)
    from feast import Entity, FeatureView, FileSource

    objects = [v for v in vars(_load_definitions(path)).values() if isinstance(v, (Entity, FeatureView, FileSource))]
    store.apply(objects)
    _materialize_history(workspace, store, views)
    marker.write_text(digest)
    return True


def _materialize_history(workspace: Path, store, views: dict[str, _View]) -> None:
    """Load every offline row into the online store (a new or switched store starts empty)."""
    import pandas as pd

    spans = []
    for view in views.values():
        ts = pd.read_parquet(_offline(workspace) / view.file, columns=["event_timestamp"])["event_timestamp"]
        if len(ts):
            spans.append((view.name, ts.min().to_pydatetime(), ts.max().to_pydatetime()))
    if spans:
        _materialize(store, min(s[1] for s in spans), max(s[2] for s in spans), [s[0] for s in spans])


def _ensure_offline_files(workspace: Path, views: dict[str, _View]) -> None:
    """Feast reads every source on apply/materialize: an empty typed file for each view that
    has none yet (pandas is imported only then: apply's fast path stays ~10 ms)."""
    missing = [v for v in views.values() if not (_offline(workspace) / v.file).exists()]
    if not missing:
        return
    import pandas as pd

    for view in missing:
        df = pd.DataFrame({c: pd.Series(dtype=t) for c, t in view.columns})
        df["event_timestamp"] = pd.Series(dtype="datetime64[us, UTC]")
        write_parquet(df, _offline(workspace) / view.file)


def _append(workspace: Path, view: _View, rows):
    """Append rows to the view's offline file; one row per (key, event_timestamp), the newest
    write winning (a retried batch replaces itself). Returns the newest event_timestamp in the file."""
    import pandas as pd

    f = _offline(workspace) / view.file
    old = pd.read_parquet(f) if f.exists() else None
    df = rows if old is None or old.empty else pd.concat([old, rows[old.columns]], ignore_index=True)
    df = df.drop_duplicates(list(view.keys) + ["event_timestamp"], keep="last", ignore_index=True)
    write_parquet(df, f)
    return df["event_timestamp"].max()


def _utc(ts: datetime) -> datetime:
    """Naive datetimes are taken as UTC."""
    import pandas as pd

    if not isinstance(ts, datetime):
        raise DataError(f"ts must be a datetime, got {type(ts).__name__} {ts!r}")
    t = pd.Timestamp(ts)
    return (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")).to_pydatetime()


def _materialize(store, start: datetime, end: datetime, views: list[str]) -> None:
    """Materialize [start - 1 s, end + 1 s]. `end` is the newest row in the file, so a batch
    stamped earlier than rows already there cannot overwrite newer online values (the SQLite
    store upserts without comparing timestamps; Feast keeps the latest row per key)."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # Feast prints a progress table per view
        store.materialize(start_date=start - timedelta(seconds=1), end_date=end + timedelta(seconds=1),
                          feature_views=views)


def _stamp(df, ts: datetime):
    import pandas as pd

    df["event_timestamp"] = pd.Series([pd.Timestamp(ts)] * len(df), index=df.index).astype("datetime64[us, UTC]")
    return df


def _require(df, cols, what: str) -> None:
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{what} lacks column(s) {', '.join(missing)}; it needs {', '.join(cols)}")


def ingest_documents(workspace: Path, documents, ts: datetime) -> int:
    """Write `documents` (doc_id, title, text, locale) stamped `ts` to documents.parquet
    (history kept, one row per doc_id and timestamp, the last duplicate winning), apply the
    definitions if needed and materialize them. Returns the number of documents written."""
    workspace = Path(workspace)
    ts = _utc(ts)
    _require(documents, DOCUMENT_COLUMNS, "documents")
    rows = documents[list(DOCUMENT_COLUMNS)].copy()
    bad = rows["doc_id"].isna() | (rows["doc_id"].astype(str).str.strip() == "")
    if bad.any():
        raise DataError(f"{int(bad.sum())} document row(s) have no doc_id (e.g. row {bad.idxmax()!r}); "
                        "drop or fix them before ingesting")
    rows["doc_id"] = rows["doc_id"].astype(str)
    rows = rows.drop_duplicates("doc_id", keep="last")
    for col in ("title", "text"):
        rows[col] = rows[col].fillna("").astype(str)
    rows["locale"] = [None if v is None or v != v else str(v) for v in rows["locale"]]
    rows["title_chars"] = rows["title"].str.len().astype("int64")
    rows["text_chars"] = rows["text"].str.len().astype("int64")
    store = open_store(workspace)
    apply(workspace, store)
    newest = _append(workspace, _views(workspace)["document_features"], _stamp(rows, ts))
    _materialize(store, ts, max(ts, newest.to_pydatetime()), ["document_features"])
    return int(len(rows))


def _known_documents(workspace: Path):
    import pandas as pd

    f = _offline(workspace) / _views(workspace)["document_features"].file
    docs = pd.read_parquet(f, columns=["doc_id", "title", "text", "event_timestamp"]) if f.exists() else None
    if docs is None or docs.empty:
        raise DataError(f"no documents in the feature store of {workspace} yet; "
                        "ingest documents (ingest_documents) before stream events")
    return docs.sort_values("event_timestamp", kind="stable").drop_duplicates("doc_id", keep="last").set_index("doc_id")


def lexical_overlap(query: str, doc: str) -> float:
    """Share of the query's distinct lowercase `\\w+` tokens that occur in `doc` (0 for a
    query without tokens)."""
    q = set(_TOKEN.findall(str(query).lower()))
    if not q:
        return 0.0
    return len(q & set(_TOKEN.findall(str(doc).lower()))) / len(q)


def pair_aggregates(events):
    """Per (query, document) pair of a batch of typed events: impressions, clicks, mean
    position, mean dwell of the clicked impressions (0 when never clicked). What the miner
    reads through Feast; `serm bench` computes it the same way without a store."""
    import numpy as np

    clicked = events["clicked"].astype(bool)
    ev = events.assign(position=events["position"].astype("float64"),
                       dwell_clicked=np.where(clicked, events["dwell_s"].astype("float64"), np.nan), clicked=clicked)
    p = ev.groupby(["query_id", "doc_id"], sort=False).agg(
        impressions=("clicked", "size"), clicks=("clicked", "sum"), mean_position=("position", "mean"),
        mean_dwell_s=("dwell_clicked", "mean")).reset_index()
    p["impressions"] = p["impressions"].astype("int64")
    p["clicks"] = p["clicks"].astype("int64")
    p["mean_dwell_s"] = p["mean_dwell_s"].fillna(0.0).astype("float64")
    return p


def ingest_events(workspace: Path, events, ts: datetime) -> dict:
    """Aggregate a validated stream batch (event_id, ts, query_id, query, locale, doc_id,
    position, clicked, dwell_s) into query and pair features stamped `ts`, append them to the
    offline parquet files and materialize them.

    Per query: query, locale (first seen), query_chars, query_tokens (`\\w+`), impressions
    (events), clicks, ctr. Per (query, doc): impressions, clicks, mean_position, mean_dwell_s
    (over clicked events; 0 without clicks), lexical_overlap with the document's title + text.
    The aggregates are per batch, not cumulative: a key seen in several batches has one row per
    batch and the newest one wins.

    Raises DataError when an event names a document that was never ingested.
    Returns {"queries": n, "pairs": n, "documents_known": n}.
    """
    workspace = Path(workspace)
    ts = _utc(ts)
    _require(events, EVENT_COLUMNS, "events")
    for col in ("query_id", "doc_id", "query"):
        bad = events[col].isna()
        if bad.any():
            raise DataError(f"{int(bad.sum())} event(s) have no {col} (e.g. row {bad.idxmax()!r}); "
                            "validate the batch (serm.data.stream.validate_events) before ingesting")
    docs = _known_documents(workspace)
    if events.empty:
        return {"queries": 0, "pairs": 0, "documents_known": int(len(docs))}
    events = events.assign(query_id=events["query_id"].astype(str), doc_id=events["doc_id"].astype(str))
    unknown = sorted(set(events["doc_id"]) - set(docs.index))
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise DataError(f"{len(unknown)} document id(s) in the events are not in the feature store: {shown}; "
                        "ingest those documents first (ingest_documents) or drop the events")
    clicked = events["clicked"]
    if clicked.dtype != bool:
        if not clicked.isin([0, 1, True, False]).all():
            raise DataError("events.clicked must be boolean; validate the batch before ingesting")
        clicked = clicked.astype(bool)
    ev = events.assign(clicked=clicked)

    q = ev.groupby("query_id", sort=False).agg(
        query=("query", "first"), locale=("locale", "first"),
        impressions=("clicked", "size"), clicks=("clicked", "sum")).reset_index()
    q["query"] = q["query"].astype(str)
    q["query_chars"] = q["query"].str.len().astype("int64")
    q["query_tokens"] = q["query"].map(lambda s: len(_TOKEN.findall(s))).astype("int64")
    q["impressions"] = q["impressions"].astype("int64")
    q["clicks"] = q["clicks"].astype("int64")
    q["ctr"] = (q["clicks"] / q["impressions"]).astype("float64")

    p = pair_aggregates(ev).merge(ev.groupby(["query_id", "doc_id"], sort=False)["query"].first().reset_index(),
                                  on=["query_id", "doc_id"])
    # Titles are often slugs ("Nile_River"): `\w` keeps "_", so split them into words.
    text = docs["title"].fillna("").astype(str).str.replace("_", " ") + " " + docs["text"].fillna("").astype(str)
    p["lexical_overlap"] = [lexical_overlap(qq, text[d]) for qq, d in zip(p["query"], p["doc_id"])]
    p = p.drop(columns=["query"])

    store = open_store(workspace)
    apply(workspace, store)
    views = _views(workspace)
    newest_q = _append(workspace, views["query_features"], _stamp(q, ts))
    newest_p = _append(workspace, views["pair_features"], _stamp(p, ts))
    _materialize(store, ts, max(ts, newest_q.to_pydatetime(), newest_p.to_pydatetime()),
                 ["query_features", "pair_features"])
    return {"queries": int(len(q)), "pairs": int(len(p)), "documents_known": int(len(docs))}


def _view(store, view: str, workspace: Path):
    from feast.errors import FeatureViewNotFoundException

    try:
        return store.get_feature_view(view)
    except FeatureViewNotFoundException:
        raise DataError(f"feature view {view!r} is not registered in {workspace}; views: {', '.join(VIEWS)} "
                        "(run serm.featurestore.apply(workspace) if the registry is new)") from None


def online_features(workspace: Path, view: str, keys):
    """Online features of `view` for each row of `keys` (columns query_id and/or doc_id: the
    view's join keys; other columns are ignored). Returns one row per key row, in input order:
    the join keys then the view's features in schema order. Keys with no online row come back
    null (integers then read as float NaN)."""
    import pandas as pd

    workspace = Path(workspace)
    store = open_store(workspace)
    fv = _view(store, view, workspace)
    join_keys = [c.name for c in fv.entity_columns]
    _require(keys, join_keys, f"keys for {view}")
    ent = keys[join_keys].reset_index(drop=True)
    if ent.isna().any().any():
        raise DataError(f"keys for {view} contain null {join_keys} values; drop them before reading features")
    names = [f.name for f in fv.features]
    if ent.empty:
        return ent.assign(**{n: pd.Series(dtype=object) for n in names})
    rows = {k: ent[k].astype(str).tolist() for k in join_keys}
    df = store.get_online_features(features=[f"{view}:{n}" for n in names], entity_rows=rows).to_df()
    if len(df) != len(ent):
        raise DataError(f"online store returned {len(df)} rows for {len(ent)} keys of {view}; "
                        "re-run the read (the store may have been rewritten meanwhile)")
    df = df.reset_index(drop=True)
    if not (df[join_keys].astype(str).to_numpy() == ent[join_keys].astype(str).to_numpy()).all():
        raise DataError(f"online store returned {view} rows out of key order; re-run the read")
    return df[join_keys + names]


def historical_features(workspace: Path, entity_df, features: list[str], full_feature_names: bool = False):
    """Point-in-time features ("view:feature" refs) for each row of `entity_df` (query_id,
    doc_id, event_timestamp; naive timestamps are UTC), in input order: the entity columns as
    given plus one column per feature ("view__feature" with full_feature_names=True, which is
    needed when two views share a feature name, e.g. impressions).

    Raises DataError when Feast returned fewer rows than given (it drops rows whose key has
    feature rows, but none inside the TTL window before the timestamp) or when a row got no
    value for every requested feature of some view (the key was never ingested)."""
    import pandas as pd

    workspace = Path(workspace)
    features = list(features)
    refs = []
    for f in features:
        if not isinstance(f, str) or f.count(":") != 1:
            raise DataError(f"feature reference {f!r} is not 'view:feature' (e.g. 'document_features:text')")
        refs.append(tuple(f.split(":")))
    if not refs:
        raise DataError("no features requested; pass e.g. ['query_features:query']")
    store = open_store(workspace)
    by_view: dict[str, list[str]] = {}
    for v, n in refs:
        by_view.setdefault(v, []).append(n)
    needed = []
    for v, names in by_view.items():
        fv = _view(store, v, workspace)
        known = {f.name for f in fv.features}
        bad = [n for n in names if n not in known]
        if bad:
            raise DataError(f"{v} has no feature(s) {bad}; it has {sorted(known)}")
        needed += [c.name for c in fv.entity_columns if c.name not in needed]
    short = [n for _, n in refs]
    if not full_feature_names and len(set(short)) != len(short):
        dup = sorted({n for n in short if short.count(n) > 1})
        raise DataError(f"features {dup} are requested from several views; pass full_feature_names=True "
                        "(columns become view__feature) or request each from one view")
    _require(entity_df, needed + ["event_timestamp"], "entity_df")
    cols = [f"{v}__{n}" if full_feature_names else n for v, n in refs]
    if len(entity_df) == 0:
        return entity_df.reset_index(drop=True).assign(**{c: pd.Series(dtype=object) for c in cols})

    ent = entity_df.reset_index(drop=True).copy()
    original_ts = ent["event_timestamp"]
    ts = pd.to_datetime(ent["event_timestamp"], errors="coerce")
    if ts.isna().any():
        raise DataError(f"entity_df.event_timestamp has {int(ts.isna().sum())} null/unparseable value(s)")
    ts = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    ent["_row"] = range(len(ent))
    # The file offline store de-duplicates entity rows on (join keys, timestamp): two labels
    # of one pair at one time would lose all but one row. Shifting row i by i microseconds
    # keeps every row; the original timestamps are put back below.
    ent["event_timestamp"] = ts + pd.to_timedelta(ent["_row"], unit="us")
    out = store.get_historical_features(entity_df=ent, features=features,
                                        full_feature_names=full_feature_names).to_df()
    out = out.sort_values("_row").reset_index(drop=True)

    def example(rows) -> dict:
        r = ent.loc[rows[0]]
        return {**{k: r[k] for k in needed}, "event_timestamp": str(original_ts[rows[0]])}

    if len(out) != len(ent):
        missing = sorted(set(ent["_row"]) - set(out["_row"]))
        raise DataError(f"feature store returned {len(out)} rows for {len(ent)} entities: {len(missing)} dropped "
                        f"(no feature row within the TTL before the entity timestamp), e.g. {example(missing)}; "
                        "were those queries and documents ingested before the requested timestamps?")
    empty = pd.Series(False, index=out.index)
    for v, names in by_view.items():
        empty |= out[[f"{v}__{n}" if full_feature_names else n for n in names]].isna().all(axis=1)
    if empty.any():
        rows = out.loc[empty, "_row"].tolist()
        raise DataError(f"{len(rows)} of {len(ent)} entities have no feature rows (keys never ingested into "
                        f"{sorted(by_view)}), e.g. {example(rows)}; ingest them first or drop those rows")
    out = out.drop(columns=["_row"])
    out["event_timestamp"] = original_ts  # both indexed 0..n-1 in input order
    return out[[c for c in entity_df.columns] + [c for c in cols if c not in entity_df.columns]]
