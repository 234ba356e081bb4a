"""Atomic writes: a file (or a folder) appears whole under its name or not at all.

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


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj, ensure_ascii: bool = True) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str,
                                              ensure_ascii=ensure_ascii) + "\n")


def write_parquet(df, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def replace_tree(src: Path, dst: Path) -> Path:
    """Make `dst` a copy of the folder `src`: copied beside `dst` first, then swapped in, so a
    reader sees the old folder or the new one."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.new{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    old = dst.with_name(f".{dst.name}.old{os.getpid()}")
    if dst.exists():
        dst.rename(old)
    tmp.rename(dst)
    shutil.rmtree(old, ignore_errors=True)
    return dst


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the folder `src` to `dst`, replacing what was there (not atomic: for staging)."""
    if Path(dst).exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
