"""Ingest into and read from the workspace's Feast feature store (`features/`).

Offline data is parquet in `.serm/feast/offline/` (the file offline store); each ingest
appends feature rows stamped with the batch time and materializes them into the online store
(SQLite by default, Redis by configuration). Pair and query features are per-batch aggregates:
the newest batch's row wins online, history stays offline.

Feast drops entity rows that have no feature row inside the TTL window without a word, so both
readers here check row counts and raise `DataError` when anything went missing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from datetime import datetime, timedelta
from pathlib import Path

from serm.errors import DataError

_TOKEN = re.compile(r"\w+", re.UNICODE)
VIEWS = ("query_features", "document_features", "pair_features")


def _offline(workspace: Path) -> Path:
    return Path(workspace) / ".serm" / "feast" / "offline"


def open_store(workspace: Path):
    os.environ.setdefault("FEAST_USAGE", "False")
    from feast import FeatureStore

    (Path(workspace) / ".serm" / "feast").mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(Path(workspace) / "features"))


def _definitions(workspace: Path):
    path = Path(workspace) / "features" / "definitions.py"
    spec = importlib.util.spec_from_file_location(f"serm_feature_defs_{abs(hash(str(path)))}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return path, mod


def apply(workspace: Path, store=None) -> bool:
    """Register the definitions (skipped when the registry already has this version of them)."""
    from feast import Entity, FeatureView, FileSource

    path, mod = _definitions(workspace)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    marker = Path(workspace) / ".serm" / "feast" / "definitions.sha256"
    if marker.exists() and marker.read_text() == digest and (marker.parent / "registry.db").exists():
        return False
    store = store or open_store(workspace)
    objects = [v for v in vars(mod).values() if isinstance(v, (Entity, FeatureView, FileSource))]
    _ensure_offline_files(workspace)
    store.apply(objects)
    marker.write_text(digest)
    return True


def _ensure_offline_files(workspace: Path) -> None:
    """Feast reads each source's parquet on apply/materialize: create empty typed files."""
    import pandas as pd

    schemas = {
        "queries.parquet": {"query_id": "str", "query": "str", "locale": "str", "query_chars": "int64",
                            "query_tokens": "int64", "impressions": "int64", "clicks": "int64", "ctr": "float64"},
        "documents.parquet": {"doc_id": "str", "title": "str", "text": "str", "locale": "str",
                              "title_chars": "int64", "text_chars": "int64"},
        "pairs.parquet": {"query_id": "str", "doc_id": "str", "impressions": "int64", "clicks": "int64",
                          "mean_position": "float64", "mean_dwell_s": "float64", "lexical_overlap": "float64"},
    }
    for name, cols in schemas.items():
        f = _offline(workspace) / name
        if not f.exists():
            df = pd.DataFrame({c: pd.Series(dtype=t) for c, t in cols.items()})
            df["event_timestamp"] = pd.Series(dtype="datetime64[us, UTC]")
            _write(df, f)


def _write(df, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _append(workspace: Path, name: str, rows) -> None:
    import pandas as pd

    f = _offline(workspace) / name
    old = pd.read_parquet(f) if f.exists() else None
    df = rows if old is None or old.empty else pd.concat([old, rows], ignore_index=True)
    _write(df, f)


def _materialize(store, ts: datetime, views: list[str]) -> None:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # Feast prints a progress table per view
        store.materialize(start_date=ts - timedelta(seconds=1), end_date=ts + timedelta(seconds=1),
                          feature_views=views)


def _stamp(df, ts: datetime):
    import pandas as pd

    df["event_timestamp"] = pd.Timestamp(ts).tz_convert("UTC") if pd.Timestamp(ts).tzinfo else pd.Timestamp(ts, tz="UTC")
    df["event_timestamp"] = df["event_timestamp"].astype("datetime64[us, UTC]")
    return df


def ingest_documents(workspace: Path, documents, ts: datetime) -> int:
    """documents: doc_id, title, text, locale."""
    workspace = Path(workspace)
    store = open_store(workspace)
    apply(workspace, store)
    rows = documents[["doc_id", "title", "text", "locale"]].copy()
    rows["title"] = rows["title"].fillna("").astype(str)
    rows["text"] = rows["text"].fillna("").astype(str)
    rows["title_chars"] = rows["title"].str.len().astype("int64")
    rows["text_chars"] = rows["text"].str.len().astype("int64")
    _append(workspace, "documents.parquet", _stamp(rows, ts))
    _materialize(store, ts, ["document_features"])
    return len(rows)


def _known_documents(workspace: Path):
    import pandas as pd

    f = _offline(workspace) / "documents.parquet"
    docs = pd.read_parquet(f, columns=["doc_id", "title", "text", "event_timestamp"]) if f.exists() else None
    if docs is None or docs.empty:
        raise DataError("no documents in the feature store yet; ingest documents before stream events")
    return docs.sort_values("event_timestamp").drop_duplicates("doc_id", keep="last").set_index("doc_id")


def lexical_overlap(query: str, doc: str) -> float:
    q = set(_TOKEN.findall(query.lower()))
    if not q:
        return 0.0
    return len(q & set(_TOKEN.findall(doc.lower()))) / len(q)


def ingest_events(workspace: Path, events, ts: datetime) -> dict:
    """Aggregate a validated stream batch into query and pair features; materialize them."""
    import numpy as np

    workspace = Path(workspace)
    docs = _known_documents(workspace)
    unknown = sorted(set(events["doc_id"]) - set(docs.index))
    if unknown:
        raise DataError(f"{len(unknown)} event document id(s) are not in the feature store, e.g. {unknown[:3]}; "
                        "ingest those documents first")
    store = open_store(workspace)
    apply(workspace, store)

    q = events.groupby("query_id", sort=False).agg(query=("query", "first"), locale=("locale", "first"),
                                                   impressions=("clicked", "size"), clicks=("clicked", "sum"))
    q = q.reset_index()
    q["query_chars"] = q["query"].str.len().astype("int64")
    q["query_tokens"] = q["query"].map(lambda s: len(_TOKEN.findall(s.lower()))).astype("int64")
    q["impressions"] = q["impressions"].astype("int64")
    q["clicks"] = q["clicks"].astype("int64")
    q["ctr"] = (q["clicks"] / q["impressions"]).astype("float64")

    ev = events.assign(dwell_clicked=np.where(events["clicked"], events["dwell_s"], np.nan))
    p = ev.groupby(["query_id", "doc_id"], sort=False).agg(
        query=("query", "first"), impressions=("clicked", "size"), clicks=("clicked", "sum"),
        mean_position=("position", "mean"), mean_dwell_s=("dwell_clicked", "mean")).reset_index()
    p["impressions"] = p["impressions"].astype("int64")
    p["clicks"] = p["clicks"].astype("int64")
    p["mean_position"] = p["mean_position"].astype("float64")
    p["mean_dwell_s"] = p["mean_dwell_s"].fillna(0.0).astype("float64")
    text = docs["title"].astype(str).str.replace("_", " ") + " " + docs["text"].astype(str)
    p["lexical_overlap"] = [lexical_overlap(qq, text[d]) for qq, d in zip(p["query"], p["doc_id"])]
    p = p.drop(columns=["query"])

    _append(workspace, "queries.parquet", _stamp(q, ts))
    _append(workspace, "pairs.parquet", _stamp(p, ts))
    _materialize(store, ts, ["query_features", "pair_features"])
    return {"queries": int(len(q)), "pairs": int(len(p)), "documents_known": int(len(docs))}


def _feature_names(store, view: str) -> list[str]:
    fv = store.get_feature_view(view)
    return [f"{view}:{f.name}" for f in fv.features]


def online_features(workspace: Path, view: str, keys):
    """Online features of `view` for each row of `keys` (query_id and/or doc_id), in order."""
    store = open_store(Path(workspace))
    names = _feature_names(store, view)
    rows = keys.to_dict("records")
    df = store.get_online_features(features=names, entity_rows=rows).to_df()
    if len(df) != len(keys):
        raise DataError(f"online store returned {len(df)} rows for {len(keys)} keys of {view}")
    return df.reset_index(drop=True)


def historical_features(workspace: Path, entity_df, features: list[str]):
    """Point-in-time features for `entity_df` (query_id, doc_id, event_timestamp), in order."""
    import pandas as pd

    store = open_store(Path(workspace))
    ent = entity_df.reset_index(drop=True).copy()
    ent["_row"] = range(len(ent))
    # Feast's file offline store de-duplicates entity rows on (a view's join keys, timestamp):
    # two labels of one query at one timestamp lose all but one row. A microsecond apart each
    # keeps its row without moving the point in time in any way that matters.
    ent["event_timestamp"] = ent["event_timestamp"] + pd.to_timedelta(ent["_row"], unit="us")
    out = store.get_historical_features(entity_df=ent, features=features).to_df()
    names = [f.split(":", 1)[1] for f in features]
    out = out.sort_values("_row").reset_index(drop=True)
    complete = out.dropna(subset=names)
    if len(out) != len(ent) or len(complete) != len(ent):
        missing = sorted(set(ent["_row"]) - set(complete["_row"]))
        ex = ent.loc[missing[0]].to_dict() if missing else {}
        raise DataError(f"feature store returned {len(complete)} complete rows for {len(ent)} entities "
                        f"({len(ent) - len(complete)} dropped or without features, e.g. {ex}); were those "
                        "queries and documents ingested before the requested timestamp?")
    return out.drop(columns=["_row"])
