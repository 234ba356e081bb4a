"""A SERM workspace: a git repository with `data/` tracked by DVC (`data.dvc`), a feature repo
in `features/`, policies, and derived state in `.serm/` (Feast stores, Evidently workspace,
staging folders of rounds in progress, the lock). The project checkout is one; tests make
temporary ones.

Layout of `data/` (one DVC version = one consistent state):
    data/state.json          rounds done, next stream batch, production version
    data/model/              the production model (HF directory + metrics.json + lineage.json)
    data/seed/train.parquet  gold-labelled seed set the first model was trained on
    data/test/               static test set (seed locale) and per-locale evolving test sets
    data/labels/             accepted + human-resolved labels, one file per round
    data/rounds/rNNNN/       each round's stream batch, quarantine, drift/mining/annotation
                             reports, votes, escalations, metrics, manifest, report.html
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from serm.errors import WorkspaceError, WorkspaceLocked
from serm.schema import MODEL_CONFIG, WorkspaceLayout


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, root: str | Path) -> "Workspace":
        return cls(Path(root).resolve())

    # paths
    @property
    def layout(self) -> WorkspaceLayout: return WorkspaceLayout(self.root)
    @property
    def data(self) -> Path: return self.layout.data
    @property
    def model_dir(self) -> Path: return self.layout.model
    @property
    def state_path(self) -> Path: return self.layout.state
    @property
    def versions_path(self) -> Path: return self.layout.versions
    @property
    def dot(self) -> Path: return self.layout.dot
    @property
    def features(self) -> Path: return self.root / "features"

    def staging(self, round_no: int) -> Path:
        return self.layout.round(round_no).staging

    def round_dir(self, round_no: int) -> Path:
        return self.layout.round(round_no).committed

    # state
    def state(self) -> dict:
        if not self.state_path.exists():
            return {"rounds_done": 0, "next_batch": 1, "production": None}
        return json.loads(self.state_path.read_text())

    def versions(self) -> dict:
        if not self.versions_path.exists():
            return {"production": None, "versions": [], "events": []}
        return json.loads(self.versions_path.read_text())

    def initialised(self) -> bool:
        return self.model_dir.joinpath(MODEL_CONFIG).exists() and self.state_path.exists()

    def require(self) -> None:
        if not (self.root / ".git").exists() or not (self.root / ".dvc").exists():
            raise WorkspaceError(f"{self.root} is not a SERM workspace (no git/DVC); run `serm init` there first")

    @contextlib.contextmanager
    def lock(self, wait: bool = False):
        """Exclusive lock for anything that writes the workspace."""
        import fcntl

        self.dot.mkdir(parents=True, exist_ok=True)
        fh = open(self.dot / "lock", "a+")
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise WorkspaceLocked(
                    f"workspace {self.root} is busy ({holder}); wait for it to finish or pass --wait") from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}")
            fh.flush()
            yield
        finally:
            with contextlib.suppress(OSError):
                fh.seek(0)
                fh.truncate()
            fh.close()
