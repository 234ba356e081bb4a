"""What each component of the cluster pipeline (`pipelines/cluster.py`) runs.

No step shares a filesystem with another. Each starts from its own clone of the workspace's git
repository at `rev` (a folder of its own), pulls `data/` from the DVC remote, lays the artifacts
it was handed out where the `serm.stages` functions read them (the round's staging folder of
that clone), runs its stage, and hands its results on as its own output artifacts. Only the last
step writes anything others see: `dvc push` to the DVC remote, then the commit (and tag) pushed
to the git remote, refused if the branch moved on meanwhile.

Derived state is rebuilt in the step that needs it from versioned data: the Feast registry and
offline store (documents from the package, the seed set, every committed batch, this batch)
where a stage reads features. The vote cache starts empty in each annotate step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from serm.errors import PipelineError

BATCH_PARTS = ("manifest.json", "ingest", "drift")


# --------------------------------------------------------------------------- a step's own workspace
def checkout(repo: str, rev: str, dvc_remote: str = ""):
    """A fresh clone of `repo` at `rev` with `data/` pulled from the DVC remote (the one the
    workspace commits, or `dvc_remote`, written to the clone's untracked .dvc/config.local)."""
    from serm import versioning
    from serm.workspace import Workspace

    import atexit

    root = Path(tempfile.mkdtemp(prefix="serm-step-")) / "ws"
    atexit.register(shutil.rmtree, root.parent, True)   # a step's clone goes with it; outputs are copies
    for cmd in (["git", "clone", "-q", "--no-checkout", repo, str(root)], ["git", "-C", str(root), "checkout", "-q", rev]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
        if proc.returncode != 0:
            raise PipelineError(f"`{' '.join(cmd[:3])}` of {repo} at {rev} failed: {proc.stderr.strip()[-500:]}; "
                                "pass a repository URL this step can reach (--repo) and a pushed commit (--rev)")
    ws = Workspace.at(root)
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    if dvc_remote:
        with versioning.dvc_repo(ws).config.edit("local") as conf:
            conf["remote"]["pipeline"] = {"url": dvc_remote}
            conf["core"]["remote"] = "pipeline"
    try:
        versioning.ensure_data(ws)
    except Exception as exc:   # DVC raises its own errors; say which remote and what to do
        raise PipelineError(f"cannot pull data/ of {repo}@{rev} from the DVC remote {dvc_remote or '(the committed one)'}: "
                            f"{exc}; pass --dvc-remote with a remote every step can reach (s3://…, gs://…)") from exc
    return ws


def context(repo: str, rev: str, policy_path: str, dvc_remote: str):
    """(workspace, policy, round number, stream batch) of a step: the round after the last one
    committed at `rev`. The policy is read from the clone (a path relative to the repository)."""
    from serm.policy import load_policy

    ws = checkout(repo, rev, dvc_remote)
    policy = load_policy(Path(policy_path) if os.path.isabs(policy_path) else ws.root / policy_path)
    state = ws.state()
    return ws, policy, state["rounds_done"] + 1, state["next_batch"]


def stage_in(ws, round_no: int, *artifacts: str) -> None:
    """Lay artifact folders out in the clone's staging folder (`manifest.json`, `ingest/`, …)."""
    stage = ws.staging(round_no)
    stage.mkdir(parents=True, exist_ok=True)
    for art in artifacts:
        for item in Path(art).iterdir():
            dst = stage / item.name
            if item.is_dir():
                shutil.copytree(item, dst, dirs_exist_ok=True)
            elif item.name != "pairs.parquet":
                shutil.copy2(item, dst)


def publish(src: Path, dst: str, sub: str | None = None) -> None:
    """Copy a stage folder into the step's output artifact (under `sub`, keeping its name)."""
    out = Path(dst) / sub if sub else Path(dst)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)


def shard_of(query_ids, shards: int):
    """Shard of each query (all pairs of a query go to one shard): a stable hash mod `shards`."""
    import hashlib

    import numpy as np

    return np.array([int(hashlib.md5(str(q).encode()).hexdigest()[:8], 16) % shards for q in query_ids])


# --------------------------------------------------------------------------- the steps
def prepare(repo: str, rev: str, policy_path: str, dvc_remote: str, force: bool, out: str) -> bool:
    """Ingest the next stream batch and check drift; the batch (events, quarantine, drift report,
    the round manifest, the stream pairs with their Feast features) is the output. Returns
    whether the round goes on (the trigger fired, or `force`)."""
    from serm import featurestore, stages, versioning
    from serm.data import xquad

    ws, policy, round_no, batch_no = context(repo, rev, policy_path, dvc_remote)
    seed_ts, _ = _history_times(ws)
    featurestore.ingest_documents(ws.root, xquad.documents(), seed_ts)
    man = stages.Manifest(ws, round_no)
    man.set(batch=batch_no, policy=policy_path, policy_hash=policy.hash(), base=versioning.git(ws, "rev-parse", "HEAD"))
    ing = stages.run_stage(ws, round_no, "ingest", lambda: stages.stage_ingest(ws, policy, round_no, batch_no))
    drift = stages.run_stage(ws, round_no, "drift", lambda: stages.stage_drift(ws, policy, round_no, ing["pairs"]))
    go = bool(drift["trigger"] or force)
    stages.Manifest(ws, round_no).set(decision={
        "run_pipeline": go, "forced_by_cli": bool(force and not drift["trigger"]),
        "reason": drift["reason"] if drift["trigger"] or not force else f"force; the trigger said: {drift['reason']}"})
    Path(out).mkdir(parents=True, exist_ok=True)
    for part in BATCH_PARTS:
        src = ws.staging(round_no) / part
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, Path(out) / part)
    stages.write_parquet(stages.stream_pairs(ws, round_no), Path(out) / "pairs.parquet")
    print(f"[prepare] round {round_no}, batch {batch_no}: {'running the round' if go else 'no trigger'}", flush=True)
    return go


def score_shard(repo: str, rev: str, policy_path: str, dvc_remote: str, shard: int, shards: int, batch: str,
                out: str) -> None:
    """The production model's one pass over this shard's pairs (`mining.prefilter` applied to
    them): rows and grade probabilities, NaN where the prefilter skipped a pair."""
    import numpy as np
    import pandas as pd

    from serm import stages
    from serm.agents import build
    from serm.mining import REGISTRY
    from serm.mining.base import MiningContext
    from serm.mining.combine import score_once

    ws, policy, round_no, _ = context(repo, rev, policy_path, dvc_remote)
    print(f"[mine] started: shard {shard + 1} of {shards}", flush=True)
    pairs = pd.read_parquet(Path(batch) / "pairs.parquet")
    rows = np.flatnonzero(shard_of(pairs["query_id"], shards) == shard)
    events = pd.read_parquet(Path(batch) / "ingest" / "events.parquet")[["query_id", "doc_id", "position", "clicked"]]
    ctx = MiningContext(pairs=pairs.iloc[rows].reset_index(drop=True), events=events,
                        reference_queries=stages.training_queries(ws), models=stages.model_versions(ws, policy))
    info = score_once(ctx, policy.mining, [build(REGISTRY, a) for a in policy.mining.agents], round_no + shard)
    proba = ctx.proba if len(rows) else np.zeros((0, 4), dtype=np.float32)
    Path(out).mkdir(parents=True, exist_ok=True)
    stages.write_parquet(pd.DataFrame({"row": rows, **{f"p{g}": proba[:, g] for g in range(proba.shape[1])}}),
                         Path(out) / "scores.parquet")
    stages.atomic_write_json(Path(out) / "shard.json", {"shard": shard, "shards": shards, "pairs": int(len(rows)), **info})
    print(f"[mine] shard {shard + 1}/{shards}: {info['scored_pairs']} of {len(rows)} pairs scored", flush=True)


def mine(repo: str, rev: str, policy_path: str, dvc_remote: str, batch: str, scores: list[str], out: str) -> dict:
    """Merge the shards' scores into one pass over the whole batch (each pair scored by exactly
    one shard, checked) and run every miner agent and the combiner on all of it."""
    import numpy as np
    import pandas as pd

    from serm import stages

    ws, policy, round_no, _ = context(repo, rev, policy_path, dvc_remote)
    stage_in(ws, round_no, batch)
    pairs = pd.read_parquet(Path(batch) / "pairs.parquet")
    proba = np.full((len(pairs), 4), np.nan, dtype=np.float32)
    seen = np.zeros(len(pairs), dtype=int)
    shards = []
    for s in scores:
        part = pd.read_parquet(Path(s) / "scores.parquet")
        proba[part["row"].to_numpy()] = part[[f"p{g}" for g in range(4)]].to_numpy()
        seen[part["row"].to_numpy()] += 1
        shards.append(json.loads((Path(s) / "shard.json").read_text()))
    if len(pairs) and not (seen == 1).all():
        raise PipelineError(f"the mining shards cover {int((seen == 1).sum())} of {len(pairs)} stream pairs exactly once "
                            f"({int((seen == 0).sum())} missing, {int((seen > 1).sum())} twice); "
                            "every shard of the ParallelFor must succeed: rerun the pipeline")
    d = ws.staging(round_no) / "mine"
    stages.run_stage(ws, round_no, "mine", lambda: stages.stage_mine(ws, policy, round_no, d, pairs=pairs, proba=proba))
    report = json.loads((d / "mining_report.json").read_text())
    report["shards"] = sorted(shards, key=lambda s: s["shard"])
    stages.atomic_write_json(d / "mining_report.json", report)
    publish(d, out, "mine")
    return stages.Manifest(ws, round_no).data["stages"]["mine"]


def annotate(repo: str, rev: str, policy_path: str, dvc_remote: str, batch: str, candidates: str, out: str) -> dict:
    from serm import stages

    ws, policy, round_no, _ = context(repo, rev, policy_path, dvc_remote)
    stage_in(ws, round_no, batch)
    d = ws.staging(round_no) / "annotate"
    stages.run_stage(ws, round_no, "annotate", lambda: stages.stage_annotate(
        ws, policy, round_no, Path(candidates) / "mine" / "candidates.parquet", d))
    publish(d, out, "annotate")
    return stages.Manifest(ws, round_no).data["stages"]["annotate"]


def check(repo: str, rev: str, policy_path: str, dvc_remote: str, labels: str, out: str) -> dict:
    from serm import stages

    ws, policy, round_no, _ = context(repo, rev, policy_path, dvc_remote)
    d = ws.staging(round_no) / "check"
    stages.run_stage(ws, round_no, "check", lambda: stages.stage_check(
        ws, policy, Path(labels) / "annotate" / "labels.parquet", d))
    publish(d, out, "check")
    return stages.Manifest(ws, round_no).data["stages"]["check"]


def train(repo: str, rev: str, policy_path: str, dvc_remote: str, batch: str, labels: str, out: str) -> dict:
    from serm import stages

    ws, policy, round_no, _ = context(repo, rev, policy_path, dvc_remote)
    stage_in(ws, round_no, batch)
    rebuild_features(ws, Path(batch))
    d = ws.staging(round_no) / "train"
    stages.run_stage(ws, round_no, "train", lambda: stages.stage_train(
        ws, policy, round_no, Path(labels) / "annotate" / "labels.parquet", d))
    publish(d, out)
    return stages.Manifest(ws, round_no).data["stages"]["train"]


def evaluate(repo: str, rev: str, policy_path: str, dvc_remote: str, batch: str, model: str, out: str) -> dict:
    from serm import stages

    ws, policy, round_no, _ = context(repo, rev, policy_path, dvc_remote)
    stage_in(ws, round_no, batch)
    d = ws.staging(round_no) / "evaluate"
    stages.run_stage(ws, round_no, "evaluate", lambda: stages.stage_evaluate(ws, policy, round_no, Path(model), d))
    publish(d, out, "evaluate")
    return stages.Manifest(ws, round_no).data["stages"]["evaluate"]


def promote(repo: str, rev: str, policy_path: str, dvc_remote: str, branch: str, batch: str, candidates: str,
            labels: str, report: str, model: str, metrics: str, entries: dict) -> str:
    """Decide, commit the round in this step's clone (`dvc push` first), push commit and tag.
    `entries`: each earlier step's round-manifest entry (KFP artifact metadata), so the
    committed manifest records every stage although each ran in a clone of its own."""
    from serm import stages

    ws, policy, round_no, _ = context(repo, rev, policy_path, dvc_remote)
    stage_in(ws, round_no, batch, candidates, labels, report, metrics)
    man = stages.Manifest(ws, round_no)
    for stage, entry in entries.items():
        if not entry:
            raise PipelineError(f"the {stage} step handed on no manifest entry (artifact metadata 'manifest'); "
                                "rerun the pipeline with this version's components")
        man.data["stages"][stage] = entry
    man.set()
    m = json.loads((Path(metrics) / "evaluate" / "metrics.json").read_text())
    ok, reason = stages.promotion_decision(m, policy.promotion)
    print(f"[promote] {'promote' if ok else 'keep production'}: {reason}", flush=True)
    stages.run_stage(ws, round_no, "promote", lambda: {"promote": ok, "reason": reason})
    result = stages.finish_round(ws, policy, round_no, ok, reason, Path(model), m)
    push(ws, branch, result["tag"])
    return json.dumps(result)


def keep(repo: str, rev: str, policy_path: str, dvc_remote: str, branch: str, batch: str) -> str:
    """The round without the pipeline (no trigger): its batch and drift report are committed."""
    from serm import stages

    ws, policy, round_no, _ = context(repo, rev, policy_path, dvc_remote)
    stage_in(ws, round_no, batch)
    reason = stages.Manifest(ws, round_no).data["stages"]["drift"]["result"]["reason"]
    stages.run_stage(ws, round_no, "promote", lambda: {"promote": False, "reason": reason})
    result = stages.finish_round(ws, policy, round_no, False, f"no trigger: {reason}", None, None)
    push(ws, branch, None)
    return json.dumps(result)


def push(ws, branch: str, tag: str | None) -> None:
    """Publish the step's commit: a fast-forward of `branch` on the git remote (and the tag). A
    branch that moved on since `rev` (another round committed first) is refused, not merged."""
    refs = [f"HEAD:refs/heads/{branch}"] + ([f"refs/tags/{tag}"] if tag else [])
    proc = subprocess.run(["git", "push", "-q", "--atomic", "origin", *refs], cwd=ws.root, capture_output=True,
                          text=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    if proc.returncode != 0:
        raise PipelineError(f"git push of the round to {branch} failed: {proc.stderr.strip()[-800:]}; nothing was "
                            "published (the DVC objects already pushed are unreferenced). If the branch moved on, "
                            "submit the round again at its new head")
    print(f"[version] pushed {', '.join(refs)}", flush=True)


# --------------------------------------------------------------------------- derived state
def _history_times(ws):
    """(time for the documents and the seed set, [(round folder, its ingest time)]): the seed
    an hour before the first committed batch, so every point-in-time join finds its rows."""
    from datetime import datetime, timedelta, timezone

    rounds = []
    for rdir in sorted((ws.data / "rounds").glob("r[0-9]*")) if (ws.data / "rounds").exists() else []:
        man = rdir / "manifest.json"
        at = json.loads(man.read_text())["stages"].get("ingest", {}).get("result", {}).get("ingested_at") \
            if man.exists() else None
        if at and (rdir / "events.parquet").exists():
            rounds.append((rdir, datetime.fromisoformat(at)))
    first = min([t for _, t in rounds], default=datetime.now(timezone.utc) - timedelta(minutes=5))
    return first - timedelta(hours=1), rounds


def rebuild_features(ws, batch: Path) -> None:
    """This step's Feast store from versioned data: the packaged documents, the seed set (its
    queries as impressions; only their text is read from it), every committed batch and this
    one, each stamped when it was ingested."""
    from datetime import datetime

    import pandas as pd

    from serm import featurestore
    from serm.data import xquad

    seed_ts, rounds = _history_times(ws)
    featurestore.ingest_documents(ws.root, xquad.documents(), seed_ts)
    seed = pd.read_parquet(ws.data / "seed" / "train.parquet")
    featurestore.ingest_events(ws.root, pd.DataFrame({
        "event_id": [f"seed-{i}" for i in range(len(seed))], "ts": seed_ts, "query_id": seed["query_id"],
        "query": seed["query"], "locale": seed["locale"], "doc_id": seed["doc_id"],
        "position": seed.groupby("query_id").cumcount() + 1, "clicked": False, "dwell_s": 0.0}), seed_ts)
    for rdir, at in rounds:
        featurestore.ingest_events(ws.root, pd.read_parquet(rdir / "events.parquet"), at)
    man = json.loads((batch / "manifest.json").read_text())
    featurestore.ingest_events(ws.root, pd.read_parquet(batch / "ingest" / "events.parquet"),
                               datetime.fromisoformat(man["stages"]["ingest"]["result"]["ingested_at"]))
