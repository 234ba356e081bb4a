"""The document contract: `doc_id, title, text, locale` (+ any columns, kept), in parquet,
CSV or JSONL. `title` or `text` may be empty, not both; a later row with a doc_id already
seen in the same file is a duplicate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from serm import schema
from serm.errors import DataError

DOCUMENT_COLUMNS = list(schema.DOCUMENT_COLUMNS)


@dataclass
class ValidatedDocuments:
    valid: "object"          # DOCUMENT_COLUMNS + the file's own columns, text typed
    quarantined: "object"    # offending rows as text, their input `row` and `reason`

    @property
    def counts(self) -> dict[str, int]:
        return {"valid": len(self.valid), "quarantined": len(self.quarantined),
                "total": len(self.valid) + len(self.quarantined)}


def validate_documents(raw, source: str = "documents") -> ValidatedDocuments:
    """Check every row; bad ones are quarantined with the reason. A table without the
    contract's columns raises `DataError` naming them."""
    import numpy as np
    import pandas as pd

    from serm.data.stream import _as_stored_text, _text

    missing = [c for c in DOCUMENT_COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {schema.name_missing(missing, raw.columns, DOCUMENT_COLUMNS)}; "
                        "documents need "
                        f"{', '.join(DOCUMENT_COLUMNS)} (+ any columns of your own, kept)")
    df = raw.reset_index(drop=True)
    n = len(df)
    reasons = np.full(n, "", dtype=object)
    text = {}
    for col in DOCUMENT_COLUMNS:
        checked = [_text(v, max_chars=None) for v in df[col]]
        text[col] = pd.Series([t for t, _ in checked], dtype=object)
        for i, (_, problem) in enumerate(checked):
            # Either of title or text may be empty; a null or broken value is still reported.
            allowed = col in ("title", "text") and problem in ("null", "empty")
            if problem and not allowed and reasons[i] == "":
                reasons[i] = f"{col}: {problem}"
    blank = text["title"].isna().to_numpy() & text["text"].isna().to_numpy()
    reasons[(reasons == "") & blank] = "title and text: both empty"
    ok = reasons == ""
    dup = np.zeros(n, dtype=bool)
    dup[ok] = text["doc_id"][ok].duplicated(keep="first").to_numpy()
    reasons[dup] = "doc_id: duplicate document (the first row is kept)"
    bad = reasons != ""
    quarantined = df[bad].astype(object).map(_as_stored_text).reset_index(drop=True)
    quarantined.insert(0, "row", np.flatnonzero(bad).astype("int64"))
    quarantined["reason"] = pd.Series(list(reasons[bad]), dtype=object)
    valid = df[~bad].reset_index(drop=True).copy()
    for col in DOCUMENT_COLUMNS:
        valid[col] = text[col][~bad].fillna("").astype(str).to_numpy()
    extra = [c for c in valid.columns if c not in DOCUMENT_COLUMNS]
    return ValidatedDocuments(valid[[*DOCUMENT_COLUMNS, *extra]], quarantined)


def load_documents(path: str | Path, field: str = "documents"):
    """A documents file, every row valid; any bad row is an error naming it (the catalogue a
    workspace starts from is not guessed at)."""
    from serm.data.judgments import read_table

    try:
        raw = read_table(path)
    except DataError as exc:
        raise DataError(f"{field}: {exc}") from None
    v = validate_documents(raw, f"{field}: {path}")
    if not len(v.valid):
        raise DataError(f"{field}: {path} holds no documents")
    if len(v.quarantined):
        first = v.quarantined.iloc[0]
        raise DataError(f"{field}: {path}: {len(v.quarantined)} bad document row(s), e.g. data row "
                        f"{int(first['row']) + 1}: {first['reason']}; fix them (or add them later with "
                        "`serm ingest --documents`, which quarantines bad rows)")
    return v.valid


def upsert(current, new):
    """`current` documents with `new` ones added, or replacing those with the same doc_id."""
    import pandas as pd

    if current is None or not len(current):
        return new.reset_index(drop=True)
    kept = current[~current.doc_id.isin(set(new.doc_id))]
    return pd.concat([kept, new], ignore_index=True)
