"""Data contracts, loaders and the stream simulator."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def homedepot_path() -> Path:
    """Where the Home Depot judgments are read from (Kaggle terms: read in place, never shipped):
    `$SERM_HOMEDEPOT`, else `../shared/data/homedepot/judgments.parquet` beside the checkout."""
    env = os.environ.get("SERM_HOMEDEPOT")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "data" / "homedepot" / "judgments.parquet"


def pair_keys(df) -> set:
    """The (query_id, doc_id) pairs of a frame."""
    return set(zip(df["query_id"], df["doc_id"]))


def without_pairs(df, keys):
    """The rows of `df` whose (query_id, doc_id) is not in `keys`. (A boolean *list* would
    select columns instead of rows when `df` is empty: hence the array.)"""
    import numpy as np

    keep = np.fromiter((k not in keys for k in zip(df["query_id"], df["doc_id"])), dtype=bool, count=len(df))
    return df[keep]
