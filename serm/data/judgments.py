"""Canonical judgments format: `query_id, query, doc_id, doc_title, doc_text, grade, locale`,
in parquet, CSV or JSONL. `doc_title` or `doc_text` may be empty, not both missing."""

from __future__ import annotations

from pathlib import Path

from serm import schema
from serm.errors import DataError

JUDGMENT_COLUMNS = list(schema.JUDGMENT_COLUMNS)


def read_table(path: str | Path):
    """Read parquet, CSV or JSONL by extension; unreadable files are a DataError."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".csv.gz"):
            return pd.read_csv(path, keep_default_na=False, na_values=[""])
        if suffix in (".jsonl", ".jsonl.gz", ".ndjson"):
            return pd.read_json(path, lines=True, dtype=False)
    except Exception as exc:  # the reader's own message says what broke
        raise DataError(f"{path}: cannot read as {suffix.lstrip('.')}: {exc}") from None
    raise DataError(f"{path}: unknown format {suffix!r}; use .parquet, .csv or .jsonl")


def load_judgments(path: str | Path):
    import pandas as pd

    df = read_table(path)
    missing = [c for c in JUDGMENT_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {schema.name_missing(missing, df.columns, JUDGMENT_COLUMNS)}; the judgments format needs "
            f"{', '.join(JUDGMENT_COLUMNS)}"
        )
    for col in ("doc_title", "doc_text"):
        df[col] = df[col].fillna("").astype(str)
    raw = df["grade"]
    df["grade"] = pd.to_numeric(raw, errors="coerce")  # "3" in a CSV/JSONL is a grade; "high" is not
    bad = df["grade"].isna() | ~df["grade"].isin([0, 1, 2, 3])
    if bad.any():
        first = bad.to_numpy().argmax()
        raise DataError(f"{path}: {int(bad.sum())} row(s) have a grade outside 0-3, e.g. data row {first + 1} "
                        f"(query_id {df['query_id'].iloc[first]}) has grade {raw.iloc[first]}; use 0, 1, 2 or 3")
    df["grade"] = df["grade"].astype("int8")
    for col in ("query_id", "doc_id", "query", "locale"):
        df[col] = df[col].astype(str)
    return df
