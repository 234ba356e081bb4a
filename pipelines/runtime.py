"""What each kfp.local component runs: open the round's runner and call its step with the
artifacts the component was handed (KFP input paths) and to be handed on (output paths). The
runner owns the manifest (a resumed round reuses finished stages) and the file names
(`serm.schema`); this module only moves artifacts. Components import it inside their body."""

from __future__ import annotations

import shutil
from pathlib import Path


def _runner(workspace: str, round_no: int, policy_path: str):
    from serm.policy import load_policy
    from serm.round import RoundRunner
    from serm.workspace import Workspace

    return RoundRunner(Workspace.at(workspace), load_policy(policy_path), round_no)


def _publish(src: Path, dst: str) -> None:
    """Copy a stage's folder into the component's output artifact folder."""
    dst_p = Path(dst)
    if dst_p.exists():
        shutil.rmtree(dst_p)
    shutil.copytree(src, dst_p)


def mine(workspace: str, round_no: int, policy_path: str, batch: str, out: str) -> None:
    r = _runner(workspace, round_no, policy_path)
    r.mine(batch=Path(batch))
    _publish(r.layout.stage_dir("mine"), out)


def annotate(workspace: str, round_no: int, policy_path: str, batch: str, candidates: str, out: str) -> None:
    from serm import schema

    r = _runner(workspace, round_no, policy_path)
    r.annotate(Path(candidates) / schema.CANDIDATES.name, batch=Path(batch))
    _publish(r.layout.stage_dir("annotate"), out)


def check(workspace: str, round_no: int, policy_path: str, labels: str, out: str) -> None:
    from serm import schema

    r = _runner(workspace, round_no, policy_path)
    r.check(Path(labels) / schema.LABELS.name, Path(labels) / schema.ANNOTATION_REPORT.name)
    _publish(r.layout.stage_dir("check"), out)


def train(workspace: str, round_no: int, policy_path: str, labels: str, out: str) -> None:
    from serm import schema

    r = _runner(workspace, round_no, policy_path)
    r.train(Path(labels) / schema.LABELS.name)
    _publish(r.layout.stage_dir("train"), out)


def evaluate(workspace: str, round_no: int, policy_path: str, model: str, out: str) -> None:
    r = _runner(workspace, round_no, policy_path)
    r.evaluate(Path(model))
    _publish(r.layout.stage_dir("evaluate"), out)


def promote(workspace: str, round_no: int, policy_path: str, model: str, metrics: str) -> str:
    import json

    from serm import schema

    r = _runner(workspace, round_no, policy_path)
    return json.dumps(r.promote(Path(model), Path(metrics) / schema.METRICS.name))
