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
