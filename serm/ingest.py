"""`serm ingest`: a team's log files (and documents) into a `files` workspace.

Every row of every file is validated (`serm.data.stream.validate_events`): a bad row is
quarantined with its reason, an event naming a document the catalogue does not hold is
quarantined as such, an event id already ingested is quarantined as a duplicate; valid, plus
quarantined, equals the rows read, for every file. A file is recognised by the sha256 of its
bytes: the same file twice is ingested once. A file that cannot be read, or whose every row
is bad, is refused with the reasons and nothing of it is written.

What one ingest writes, as one new data version (DVC + a git commit, no model tag):

    data/batches/bNNNN/events.parquet       the batch's valid events (EVENT_COLUMNS + optional ones)
    data/batches/bNNNN/quarantine.parquet   its rejected rows: `row`, `file`, the values as text, `reason`
    data/batches/bNNNN/batch.json           the files it came from, their hashes and counts
    data/batches/index.json                 every ingested file's hash -> its batches
    data/documents.parquet                  the catalogue (`--documents` adds or replaces by doc_id)

and the events' features into Feast (written and materialized). Batches are consumed in order
by `serm evolve` (one round each); `batching: window` cuts the events into batches by `ts`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from serm import schema
from serm.errors import DataError
from serm.files import atomic_write_json, read_parquet, write_parquet

EVENT_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".ndjson")
BATCH_INFO = "batch.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_events_file(path: Path):
    """(raw, broken, rows) of a log file: every value as read, the lines that could not even
    be parsed (JSONL: a broken line is one bad row, not a broken file; text that is not UTF-8
    is kept as lone surrogates so the validator can name it), and the file's row number of each
    raw row (the line, for JSONL). Raises DataError for a file that is not a table at all."""
    import pandas as pd

    from serm.data.judgments import read_table

    path = Path(path)
    name = path.name.lower()
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    if not name.endswith(EVENT_SUFFIXES):
        raise DataError(f"{path}: unknown format {path.suffix or '(no extension)'!r}; "
                        "log files are .parquet, .csv or .jsonl")
    broken, lines = [], []   # lines: the file line of each JSONL row
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        rows = []
        try:
            data = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: cannot read as gzip: {exc}") from None
        text = data.decode("utf-8", "surrogateescape")
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                broken.append((i, line[:500], f"line {i + 1}: not valid JSON ({exc.msg})"))
                continue
            if not isinstance(value, dict):
                broken.append((i, line[:500], f"line {i + 1}: not a JSON object"))
                continue
            rows.append(value)
            lines.append(i)
        raw = pd.DataFrame(rows)
    elif name.endswith((".csv", ".csv.gz")):
        try:   # every value as text; bytes that are not UTF-8 kept as lone surrogates
            raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8",
                              encoding_errors="surrogateescape")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError) as exc:
            raise DataError(f"{path}: cannot read as CSV: {exc}") from None
    else:
        raw = read_table(path)
    quarantine = pd.DataFrame(broken, columns=["row", "value", "reason"])
    if raw.empty and quarantine.empty:
        raise DataError(f"{path}: no rows")
    return raw, quarantine, (lines if lines or broken else list(range(len(raw))))


def _known_event_ids(layout) -> set:
    ids: set = set()
    for f in sorted(layout.batches_dir.glob("b*/events.parquet")):
        ids.update(read_parquet(f, columns=["event_id"])["event_id"])
    return ids


def read_index(layout) -> dict:
    p = layout.ingest_index
    return json.loads(p.read_text()) if p.exists() else {"files": {}, "documents": {}}


def batch_numbers(layout) -> list[int]:
    if not layout.batches_dir.exists():
        return []
    return sorted(int(p.name[1:]) for p in layout.batches_dir.glob("b[0-9]*") if p.name[1:].isdigit()
                  and (p / BATCH_INFO).exists())


def pending_batches(ws) -> list[int]:
    """Ingested batches no round has consumed yet, oldest first."""
    nxt = ws.state()["next_batch"]
    return [b for b in batch_numbers(ws.layout) if b >= nxt]


def read_batch(ws, batch_no: int):
    """(events, quarantine, info) of ingested batch `batch_no`."""
    folder = ws.layout.batch(batch_no)
    if not (folder / BATCH_INFO).exists():
        raise DataError(f"no ingested batch {batch_no} is waiting: ingest log files first "
                        "(`serm ingest FILE`, or drop them into the inbox of `serm watch`)")
    info = json.loads((folder / BATCH_INFO).read_text())
    return read_parquet(folder / "events.parquet"), read_parquet(folder / "quarantine.parquet"), info


def _validate_file(path: Path, known_docs: set, seen_ids: dict):
    """(valid, quarantine, counts) of one file; an event id ingested before (`seen_ids`: id ->
    where) is quarantined too. Every quarantine row keeps the file's row number (`row`)."""
    import numpy as np
    import pandas as pd

    from serm.data.stream import _as_stored_text, validate_events

    raw, broken, rows = read_events_file(path)
    rows = np.asarray(rows, dtype="int64")
    parts = [broken] if len(broken) else []
    valid = raw
    if len(raw):
        try:
            v = validate_events(raw, known_docs)
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None
        bad = v.quarantined["row"].to_numpy(dtype="int64")
        valid_rows = rows[np.setdiff1d(np.arange(len(raw)), bad)]   # `valid` keeps the input order
        parts.append(v.quarantined.assign(row=rows[bad]))
        valid = v.valid
        again = valid["event_id"].isin(seen_ids.keys()).to_numpy()
        if again.any():
            dup = valid[again].astype(object).map(_as_stored_text)
            dup.insert(0, "row", valid_rows[again])
            dup["reason"] = [f"event_id: already ingested ({seen_ids[e]})" for e in valid.loc[again, "event_id"]]
            parts.append(dup)
            valid = valid[~again].reset_index(drop=True)
    parts = [p for p in parts if len(p)]
    quarantine = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"row": [], "reason": []})
    quarantine = quarantine.astype({c: object for c in quarantine.columns if c != "row"}) \
        .astype({"row": "int64"}).sort_values("row", kind="stable").reset_index(drop=True).assign(file=path.name)
    counts = {"rows": int(len(raw) + len(broken)), "events": int(len(valid)), "quarantined": int(len(quarantine))}
    if counts["events"] + counts["quarantined"] != counts["rows"]:
        raise AssertionError(f"{path}: ingest lost rows: {counts}")
    return valid, quarantine, counts


def reasons_summary(quarantine, top: int = 5) -> str:
    if not len(quarantine):
        return "none"
    kinds = quarantine["reason"].astype(str).str.replace(r"\s*\(.*\)$", "", regex=True)
    counts = kinds.value_counts()
    shown = ", ".join(f"{n} {why}" for why, n in counts.head(top).items())
    return shown + (f", and {int(counts.iloc[top:].sum())} more" if len(counts) > top else "")


def ingest_documents_file(ws, path: Path, now, log=print) -> dict:
    """Add or replace documents from `path` (bad rows quarantined), into data/ and Feast."""
    from serm import featurestore
    from serm.data.documents import upsert, validate_documents
    from serm.data.judgments import read_table

    lay = ws.layout
    digest = sha256(path)
    index = read_index(lay)
    if digest in index["documents"]:
        log(f"{path.name}: already ingested ({index['documents'][digest]['ingested_at']}); skipped")
        return {"file": path.name, "skipped": True}
    v = validate_documents(read_table(path), str(path))
    if not len(v.valid):
        raise DataError(f"{path}: no valid documents ({reasons_summary(v.quarantined)}); nothing ingested")
    current = read_parquet(lay.documents) if lay.documents.exists() else None
    docs = upsert(current, v.valid)
    replaced = 0 if current is None else int(current.doc_id.isin(set(v.valid.doc_id)).sum())
    write_parquet(docs, lay.documents)
    if len(v.quarantined):
        qfile = lay.batches_dir / "documents-quarantine.parquet"
        old = read_parquet(qfile) if qfile.exists() else None
        rows = v.quarantined.assign(file=path.name).astype(object)
        import pandas as pd

        write_parquet(pd.concat([old, rows], ignore_index=True) if old is not None else rows, qfile)
    featurestore.ingest_documents(ws.root, v.valid, now)
    index["documents"][digest] = {"name": path.name, "documents": len(v.valid), "quarantined": len(v.quarantined),
                                  "replaced": replaced, "ingested_at": now.isoformat(timespec="seconds")}
    atomic_write_json(lay.ingest_index, index)
    log(f"{path.name}: {len(v.valid)} documents ({len(v.valid) - replaced} new, {replaced} replaced), "
        f"{len(v.quarantined)} quarantined ({reasons_summary(v.quarantined)})")
    return {"file": path.name, "documents": len(v.valid), "quarantined": len(v.quarantined)}


def _cut(events, spec):
    """The events as batches: one (the file's) or one per `ts` window, oldest first."""
    if spec.batching == "file" or not len(events):
        return [events]
    import pandas as pd

    start = events["ts"].min().floor("D")
    slot = ((events["ts"] - start) / pd.Timedelta(seconds=spec.window)).astype("int64")
    return [g.reset_index(drop=True) for _, g in events.groupby(slot.to_numpy(), sort=True)]


def ingest(ws, policy, files: list[Path], documents: Path | None = None, log=print) -> dict:
    """Ingest `files` (and `documents`) into the initialised workspace `ws`, under its lock.
    Returns {"batches": [...], "files": [...], "skipped": n, "refused": [(file, reason)]}."""
    from datetime import datetime, timezone

    import pandas as pd

    from serm import featurestore, versioning

    if policy.data.source != "files":
        raise DataError(f"the policy's data.source is {policy.data.source!r}: `serm ingest` feeds a `files` "
                        "source (your own logs); see examples/own-data/policy.yaml")
    lay = ws.layout
    now = datetime.now(timezone.utc)
    summary: dict = {"batches": [], "files": [], "skipped": 0, "refused": []}
    if documents is not None:
        doc = ingest_documents_file(ws, Path(documents), now, log)
        summary["documents"] = doc
    known_docs = set(read_parquet(lay.documents, columns=["doc_id"])["doc_id"])
    index = read_index(lay)
    seen = {e: "an earlier batch" for e in _known_event_ids(lay)}
    numbers = batch_numbers(lay)
    next_no = max([ws.state()["next_batch"], *(n + 1 for n in numbers)])
    written = []
    for path in map(Path, files):
        if path.is_file() and (digest := sha256(path)) in index["files"]:
            was = index["files"][digest]
            log(f"{path.name}: already ingested as batch(es) {', '.join(map(str, was['batches']))} "
                f"({was['name']}, same content); skipped")
            summary["skipped"] += 1
            continue
        try:
            valid, quarantine, counts = _validate_file(path, known_docs, seen)
        except DataError as exc:
            log(f"{path.name}: refused: {exc}")
            summary["refused"].append((str(path), str(exc)))
            continue
        if not counts["events"]:
            why = f"{path}: every one of its {counts['rows']} rows is bad ({reasons_summary(quarantine)}); nothing ingested"
            log(f"{path.name}: refused: {why}")
            summary["refused"].append((str(path), why))
            continue
        seen.update({e: f"{path.name}" for e in valid["event_id"]})
        numbers_of_file = []
        for k, part in enumerate(_cut(valid.sort_values("ts", kind="stable"), policy.data)):
            b = next_no
            next_no += 1
            folder = lay.batch(b)
            write_parquet(part, folder / "events.parquet")
            write_parquet(quarantine if k == 0 else quarantine.iloc[0:0], folder / "quarantine.parquet")
            info = {"batch": b, "file": path.name, "sha256": digest, "ingested_at": now.isoformat(timespec="seconds"),
                    "ts": [part["ts"].min().isoformat(), part["ts"].max().isoformat()],
                    "counts": {"valid": int(len(part)), "quarantined": int(len(quarantine)) if k == 0 else 0,
                               "total": int(len(part) + (len(quarantine) if k == 0 else 0))},
                    "queries": int(part["query_id"].nunique())}
            atomic_write_json(folder / BATCH_INFO, info)
            numbers_of_file.append(b)
            written.append(part)
        index["files"][digest] = {"name": path.name, "batches": numbers_of_file, **counts,
                                  "ingested_at": now.isoformat(timespec="seconds")}
        log(f"{path.name}: {counts['rows']} rows -> batch(es) {', '.join(map(str, numbers_of_file))}: "
            f"{counts['events']} events, {counts['quarantined']} quarantined ({reasons_summary(quarantine)})")
        summary["files"].append({"file": str(path), "batches": numbers_of_file, **counts})
        summary["batches"] += numbers_of_file
    if not written and "documents" not in summary:
        if summary["refused"]:
            raise DataError("nothing could be ingested: " + "; ".join(why for _, why in summary["refused"]))
        return summary
    atomic_write_json(lay.ingest_index, index)
    if written:
        counts = featurestore.ingest_events(ws.root, pd.concat(written, ignore_index=True), now)
        log(f"[feast] {counts['queries']} queries, {counts['pairs']} query-document pairs written and materialized")
    what = f"batch(es) {', '.join(map(str, summary['batches']))}" if summary["batches"] else "documents"
    sha = versioning.commit_version(ws, f"serm: ingested {what} ({len(summary['files'])} file(s))")
    log(f"[version] ingested {what} as a new data version (commit {sha[:10]})")
    summary["commit"] = sha
    return summary


def inbox_files(folder: Path, index: dict, hashes: dict | None = None, settle_s: float = 0.0) -> list[Path]:
    """Log files in `folder` not ingested yet, oldest first. Hidden files, partial uploads
    (`.tmp`, `.part`), files modified in the last `settle_s` seconds (still being written)
    and the `rejected/` folder are left alone. `hashes` (kept by the
    caller between looks) remembers each file's sha256 by (name, size, mtime), so a long-lived
    watcher does not re-read every old file at every look."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    known = set(index["files"])
    hashes = {} if hashes is None else hashes
    import time

    now = time.time()
    out = []
    for p in sorted(folder.iterdir(), key=lambda p: (p.stat().st_mtime, p.name)):
        if not (p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(EVENT_SUFFIXES)):
            continue
        st = p.stat()
        if now - st.st_mtime < settle_s:
            continue
        key = (p.name, st.st_size, st.st_mtime_ns)
        if key not in hashes:
            hashes[key] = sha256(p)
        if hashes[key] not in known:
            out.append(p)
    return out
