"""What each pipeline component runs: load the policy, run the `serm.stages` function through
the round manifest (so a resumed round reuses finished stages), and hand outputs on as KFP
artifacts. Components import this module inside their function body."""

from __future__ import annotations

import shutil
from pathlib import Path


def _ctx(workspace: str, policy_path: str):
    from serm.policy import load_policy
    from serm.workspace import Workspace

    return Workspace.at(workspace), load_policy(policy_path)


def _publish(src: Path, dst: str) -> None:
    """Copy a stage's staging folder into the component's output artifact folder."""
    dst_p = Path(dst)
    if dst_p.exists():
        shutil.rmtree(dst_p)
    shutil.copytree(src, dst_p)


def mine(workspace: str, round_no: int, policy_path: str, out: str) -> None:
    from serm.stages import run_stage, stage_mine

    ws, policy = _ctx(workspace, policy_path)
    d = ws.staging(round_no) / "mine"
    run_stage(ws, round_no, "mine", lambda: stage_mine(ws, policy, round_no, d))
    _publish(d, out)


def annotate(workspace: str, round_no: int, policy_path: str, candidates: str, out: str) -> None:
    from serm.stages import run_stage, stage_annotate

    ws, policy = _ctx(workspace, policy_path)
    d = ws.staging(round_no) / "annotate"
    run_stage(ws, round_no, "annotate",
              lambda: stage_annotate(ws, policy, round_no, Path(candidates) / "candidates.parquet", d))
    _publish(d, out)


def check(workspace: str, round_no: int, policy_path: str, labels: str, out: str) -> None:
    from serm.stages import run_stage, stage_check

    ws, policy = _ctx(workspace, policy_path)
    d = ws.staging(round_no) / "check"
    run_stage(ws, round_no, "check", lambda: stage_check(ws, policy, Path(labels) / "labels.parquet", d))
    _publish(d, out)


def train(workspace: str, round_no: int, policy_path: str, labels: str, out: str) -> None:
    from serm.stages import run_stage, stage_train

    ws, policy = _ctx(workspace, policy_path)
    d = ws.staging(round_no) / "train"
    run_stage(ws, round_no, "train", lambda: stage_train(ws, policy, round_no, Path(labels) / "labels.parquet", d))
    _publish(d, out)


def evaluate(workspace: str, round_no: int, policy_path: str, model: str, out: str) -> None:
    from serm.stages import run_stage, stage_evaluate

    ws, policy = _ctx(workspace, policy_path)
    d = ws.staging(round_no) / "evaluate"
    run_stage(ws, round_no, "evaluate", lambda: stage_evaluate(ws, policy, round_no, Path(model), d))
    _publish(d, out)


def promote(workspace: str, round_no: int, policy_path: str, model: str, metrics: str) -> str:
    import json

    from serm.stages import finish_round, promotion_decision, run_stage

    ws, policy = _ctx(workspace, policy_path)
    m = json.loads((Path(metrics) / "metrics.json").read_text())
    ok, reason = promotion_decision(m, policy.promotion)
    print(f"[promote] {'promote' if ok else 'keep production'}: {reason}", flush=True)
    run_stage(ws, round_no, "promote", lambda: {"promote": ok, "reason": reason})
    result = finish_round(ws, policy, round_no, ok, reason, Path(model), m)
    return json.dumps(result)
