"""What `--model` and `--base` name on the command line: `production` or a model version in a
workspace (`3` or `v3`), a saved model directory, or a builtin base encoder (`builtin:minilm-l6`).

    >>> with model_source("v0", workspace=".") as src:                # doctest: +SKIP
    ...     model = RelevanceModel.load(src.path, src.spec(policy.model))

The production version is read from `data/model`; an earlier one is restored from its tag's DVC
version into a temporary directory, so the workspace itself is never touched. A saved model
directory carries the `ModelSpec` it was trained with (`serm_model.json`), and scoring uses
that one rather than the policy's, so its max_length and passage window stay as trained.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from serm import schema
from serm.errors import DataError

_VERSION = re.compile(r"^v?(\d+)$")
PRODUCTION = "production"
HELP = "production, a version (3 or v3) of the workspace, a saved model directory, or builtin:minilm-l6"


@dataclass(frozen=True)
class ModelSource:
    ref: str                  # what the user wrote
    path: str                 # what RelevanceModel.load takes
    version: int | None = None

    def spec(self, default):
        """The `ModelSpec` saved with the model, else `default` (a fresh head on a base encoder)."""
        from pydantic import ValidationError

        from serm.policy import ModelSpec

        saved = Path(self.path) / schema.MODEL_SPEC
        if not saved.is_file():
            return default
        try:
            return ModelSpec.model_validate(json.loads(saved.read_text()))
        except (ValueError, ValidationError) as exc:
            raise DataError(f"{saved}: not a valid model spec ({exc}); re-save the model with this SERM") from None

    def describe(self) -> str:
        return f"v{self.version}" if self.version is not None else self.path


@contextlib.contextmanager
def model_source(ref: str, workspace: str | Path = "."):
    """Resolve `ref` to a loadable model; temporary restores are removed on exit."""
    ref = str(ref).strip()
    if ref.startswith("builtin:"):
        from serm.model.builtin import BUILTIN

        if ref not in BUILTIN:
            raise DataError(f"unknown builtin model {ref!r}; known: {', '.join(BUILTIN)}")
        yield ModelSource(ref, ref)
        return
    m = _VERSION.match(ref)
    if m or ref == PRODUCTION:
        with _version_dir(int(m.group(1)) if m else _production(workspace), workspace) as (path, version):
            yield ModelSource(ref, str(path), version)
        return
    path = Path(ref).expanduser()
    if not path.is_dir():
        raise DataError(f"model {ref!r}: no such directory; pass {HELP}")
    if not (path / schema.MODEL_CONFIG).is_file():
        raise DataError(f"model {ref!r}: {path} has no config.json, so it is not a saved model directory; pass {HELP}")
    yield ModelSource(ref, str(path.resolve()))


def _production(workspace: str | Path) -> int:
    from serm.workspace import Workspace

    from serm.versioning import production_view

    ws = Workspace.at(workspace)
    production = production_view(ws)[0].get("production")   # the committed one, never a half-promoted one
    if production is None:
        raise DataError(f"model production: {ws.root} has no production version yet (run `serm init` / "
                        f"`serm evolve` there, or pass --workspace DIR of an evolved workspace)")
    return int(production)


@contextlib.contextmanager
def _version_dir(version: int, workspace: str | Path):
    from serm.workspace import Workspace

    ws = Workspace.at(workspace)
    reg = ws.versions()
    known = {v["version"]: v for v in reg["versions"]}
    if not known:
        raise DataError(f"model v{version}: {ws.root} has no model versions (no versions.json); "
                        f"pass --workspace DIR of a SERM workspace, or a model directory")
    if version not in known:
        raise DataError(f"unknown model version v{version} in {ws.root}; known: "
                        f"{', '.join(f'v{v}' for v in sorted(known))}")
    if known[version].get("removed"):
        from serm.versioning import removed_message

        raise DataError(f"model v{version}: {removed_message(reg, version)}")
    if _lineage_version(ws.model_dir) == version:
        yield ws.model_dir, version
        return
    tag = known[version].get("tag")
    with tempfile.TemporaryDirectory(prefix=f"serm-v{version}-") as tmp:
        from serm.errors import WorkspaceError
        from serm.versioning import get_model

        try:
            out = get_model(ws, tag, Path(tmp) / "model")
        except WorkspaceError as exc:
            raise DataError(f"model v{version}: {exc}") from None
        yield out, version


def _lineage_version(model_dir: Path):
    try:
        return json.loads((model_dir / schema.MODEL_LINEAGE).read_text()).get("version")
    except (OSError, ValueError):
        return None
