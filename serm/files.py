"""Artifact files: atomic writes (a file appears whole under its name or not at all) and the
parquet reader.

Every writer in SERM goes through these, so a process killed mid-write leaves the previous
version in place and at worst a dot-named temporary next to it (never read by anything).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write_text(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_json(path: Path, obj, ensure_ascii: bool = True) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str,
                                              ensure_ascii=ensure_ascii) + "\n")


def atomic_write(path: Path, write) -> Path:
    """`write(tmp)` writes the file's content to a temporary beside `path`, renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_parquet(df, path: Path) -> Path:
    return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def read_parquet(path: Path, columns: list[str] | None = None):
    import pandas as pd

    return pd.read_parquet(path, columns=columns)


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the folder `src` to `dst`, replacing what was there (not atomic: for staging)."""
    if Path(dst).exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
