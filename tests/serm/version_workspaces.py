"""Workspaces holding committed model versions, made the way rounds commit them (git + DVC,
SERM's promotion path) without running rounds: each version is the packaged MiniLM with its own
seeded 4-grade head, optionally with a label file and a state like its round would write."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from serm import versioning
from serm.files import write_parquet
from serm.model.cross_encoder import RelevanceModel
from serm.model.training import set_seed
from serm.policy import ModelSpec
from serm.workspace import Workspace

SPEC = ModelSpec(max_length=32, window_words=16, batch_size=8)


def empty_workspace(root: Path) -> Workspace:
    ws = Workspace.at(root)
    versioning.init_repo(ws, ".dvc-remote")
    versioning.git(ws, "add", ".dvc/config", ".dvc/.gitignore", "data.dvc", ".gitignore")
    versioning.git(ws, "commit", "-q", "-m", "workspace")
    return ws


def commit_version(ws: Workspace, v: int, seed: int, spec: ModelSpec = SPEC, labels: bool = True,
                   state: bool = True, metrics: dict | None = None, created: str | None = None,
                   message: str | None = None):
    """Version `v`: a fresh head (seeded), its round's label file and state (unless told not to),
    recorded, committed and tagged `serm-model@v{v}.0.0`. Returns the model."""
    set_seed(seed)
    model = RelevanceModel.load("builtin:minilm-l6", spec, device="cpu")
    model.save(ws.model_dir, metrics=metrics or {}, lineage={"version": v, "round": v})
    if labels:
        write_parquet(pd.DataFrame({"query_id": [f"q{v}"], "doc_id": [f"d{v}"], "grade": [v % 4], "round": [v],
                                    "status": ["accepted"]}), ws.layout.round_labels(v))
    if state:
        (ws.data / "state.json").write_text(json.dumps({"production": v, "production_round": v, "rounds_done": v,
                                                        "next_batch": v + 1}))
    tag = f"serm-model@v{v}.0.0"
    entry = {"version": v, "tag": tag, "round": v, "parent": v - 1 if v else None, "metrics": {}}
    if created:
        entry["created"] = created
    versioning.record_version(ws, entry)
    versioning.commit_version(ws, message or f"serm: v{v}", tag)
    return model
