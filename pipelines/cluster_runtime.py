"""What each component of the cluster pipeline (`pipelines/cluster.py`) runs.

No step shares a filesystem with another. Each starts from its own clone of the workspace's git
repository at `rev` (a folder of its own), pulls `data/` from the DVC remote, lays the artifacts
it was handed out in the round's staging folder of that clone, runs its stage through the round
runner (`serm.round`), and hands its results on as its own output artifacts. Only the last
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

from serm import schema
from serm.errors import PipelineError

BATCH_PARTS = (schema.MANIFEST_FILE, "ingest", "drift")


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


def runner(repo: str, rev: str, policy_path: str, dvc_remote: str, *artifacts: str):
    """The round runner of a step, in its own clone, with `artifacts` laid out in staging."""
    from serm.round import RoundRunner

    ws, policy, round_no, batch_no = context(repo, rev, policy_path, dvc_remote)
    stage_in(ws, round_no, *artifacts)
    return RoundRunner(ws, policy, round_no), batch_no


def stage_in(ws, round_no: int, *artifacts: str) -> None:
    """Lay artifact folders out in the clone's staging folder (`manifest.json`, `ingest/`, …)."""
    stage = ws.staging(round_no)
    stage.mkdir(parents=True, exist_ok=True)
    for art in artifacts:
        for item in Path(art).iterdir():
            dst = stage / item.name
            if item.is_dir():
                shutil.copytree(item, dst, dirs_exist_ok=True)
            elif item.name != schema.STREAM_PAIRS.name:
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
    from serm import featurestore, versioning
    from serm.files import write_parquet

    r, batch_no = runner(repo, rev, policy_path, dvc_remote)
    seed_ts, _ = _history_times(r.ws)
    featurestore.ingest_documents(r.ws.root, r.documents(), seed_ts)
    r.record(batch=batch_no, policy=policy_path, policy_hash=r.policy.hash(), base=versioning.git(r.ws, "rev-parse", "HEAD"))
    ing = r.ingest(batch_no)
    go = r.decide_trigger(r.drift(ing["pairs"]), force)["run_pipeline"]
    Path(out).mkdir(parents=True, exist_ok=True)
    for part in BATCH_PARTS:
        src = r.layout.staging / part
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, Path(out) / part)
    write_parquet(r.stream_pairs(), Path(out) / schema.STREAM_PAIRS.name)
    print(f"[prepare] round {r.round_no}, batch {batch_no}: {'running the round' if go else 'no trigger'}", flush=True)
    return go


def score_shard(repo: str, rev: str, policy_path: str, dvc_remote: str, shard: int, shards: int, batch: str,
                out: str) -> None:
    """The production model's one pass over this shard's pairs (`mining.prefilter` applied to
    them): rows and grade probabilities, NaN where the prefilter skipped a pair."""
    import numpy as np
    import pandas as pd

    from serm import history
    from serm.agents import build
    from serm.files import atomic_write_json, write_parquet
    from serm.mining import REGISTRY
    from serm.mining.base import MiningContext
    from serm.mining.combine import score_once

    ws, policy, round_no, _ = context(repo, rev, policy_path, dvc_remote)
    print(f"[mine] started: shard {shard + 1} of {shards}", flush=True)
    pairs = pd.read_parquet(Path(batch) / schema.STREAM_PAIRS.name)
    rows = np.flatnonzero(shard_of(pairs["query_id"], shards) == shard)
    events = pd.read_parquet(Path(batch) / "ingest" / schema.EVENTS.name)[list(schema.IMPRESSION_COLUMNS)]
    ctx = MiningContext(pairs=pairs.iloc[rows].reset_index(drop=True), events=events,
                        reference_queries=history.training_queries(ws), models=history.model_versions(ws, policy))
    info = score_once(ctx, policy.mining, [build(REGISTRY, a) for a in policy.mining.agents], round_no + shard)
    proba = ctx.proba if len(rows) else np.zeros((0, 4), dtype=np.float32)
    Path(out).mkdir(parents=True, exist_ok=True)
    write_parquet(pd.DataFrame({"row": rows, **{f"p{g}": proba[:, g] for g in range(proba.shape[1])}}),
                  Path(out) / schema.SHARD_SCORES.name)
    atomic_write_json(Path(out) / schema.SHARD_INFO.name, {"shard": shard, "shards": shards, "pairs": int(len(rows)), **info})
    print(f"[mine] shard {shard + 1}/{shards}: {info['scored_pairs']} of {len(rows)} pairs scored", flush=True)


def mine(repo: str, rev: str, policy_path: str, dvc_remote: str, batch: str, scores: list[str], out: str) -> dict:
    """Merge the shards' scores into one pass over the whole batch (each pair scored by exactly
    one shard, checked) and run every miner agent and the combiner on all of it."""
    import numpy as np
    import pandas as pd

    from serm.files import atomic_write_json

    r, _ = runner(repo, rev, policy_path, dvc_remote, batch)
    pairs = pd.read_parquet(Path(batch) / schema.STREAM_PAIRS.name)
    proba = np.full((len(pairs), 4), np.nan, dtype=np.float32)
    seen = np.zeros(len(pairs), dtype=int)
    shards = []
    for s in scores:
        part = pd.read_parquet(Path(s) / schema.SHARD_SCORES.name)
        proba[part["row"].to_numpy()] = part[[f"p{g}" for g in range(4)]].to_numpy()
        seen[part["row"].to_numpy()] += 1
        shards.append(json.loads((Path(s) / schema.SHARD_INFO.name).read_text()))
    if len(pairs) and not (seen == 1).all():
        raise PipelineError(f"the mining shards cover {int((seen == 1).sum())} of {len(pairs)} stream pairs exactly once "
                            f"({int((seen == 0).sum())} missing, {int((seen > 1).sum())} twice); "
                            "every shard of the ParallelFor must succeed: rerun the pipeline")
    r.mine(batch=Path(batch) / "ingest", pairs=pairs, proba=proba)
    report_path = r.layout.staged(schema.MINING_REPORT)
    report = json.loads(report_path.read_text())
    report["shards"] = sorted(shards, key=lambda s: s["shard"])
    atomic_write_json(report_path, report)
    publish(r.layout.stage_dir("mine"), out, "mine")
    return r.manifest.entry("mine").to_dict()


def annotate(repo: str, rev: str, policy_path: str, dvc_remote: str, batch: str, candidates: str, out: str) -> dict:
    r, _ = runner(repo, rev, policy_path, dvc_remote, batch)
    r.annotate(Path(candidates) / "mine" / schema.CANDIDATES.name, batch=Path(batch) / "ingest")
    publish(r.layout.stage_dir("annotate"), out, "annotate")
    return r.manifest.entry("annotate").to_dict()


def check(repo: str, rev: str, policy_path: str, dvc_remote: str, labels: str, out: str) -> dict:
    r, _ = runner(repo, rev, policy_path, dvc_remote)
    r.check(Path(labels) / "annotate" / schema.LABELS.name)
    publish(r.layout.stage_dir("check"), out, "check")
    return r.manifest.entry("check").to_dict()


def train(repo: str, rev: str, policy_path: str, dvc_remote: str, batch: str, labels: str, out: str) -> dict:
    r, _ = runner(repo, rev, policy_path, dvc_remote, batch)
    rebuild_features(r.ws, Path(batch))
    r.train(Path(labels) / "annotate" / schema.LABELS.name)
    publish(r.layout.stage_dir("train"), out)
    return r.manifest.entry("train").to_dict()


def evaluate(repo: str, rev: str, policy_path: str, dvc_remote: str, batch: str, model: str, out: str) -> dict:
    r, _ = runner(repo, rev, policy_path, dvc_remote, batch)
    r.evaluate(Path(model))
    publish(r.layout.stage_dir("evaluate"), out, "evaluate")
    return r.manifest.entry("evaluate").to_dict()


def promote(repo: str, rev: str, policy_path: str, dvc_remote: str, branch: str, batch: str, candidates: str,
            labels: str, report: str, model: str, metrics: str, entries: dict) -> str:
    """Decide, commit the round in this step's clone (`dvc push` first), push commit and tag.
    `entries`: each earlier step's round-manifest entry (KFP artifact metadata), so the
    committed manifest records every stage although each ran in a clone of its own."""
    from serm.schema import StageEntry

    r, _ = runner(repo, rev, policy_path, dvc_remote, batch, candidates, labels, report, metrics)
    man = r.manifest
    for stage, entry in entries.items():
        if not entry:
            raise PipelineError(f"the {stage} step handed on no manifest entry (artifact metadata 'manifest'); "
                                "rerun the pipeline with this version's components")
        man.stages[stage] = StageEntry.from_dict(entry)
    man.save()
    result = r.promote(Path(model), Path(metrics) / "evaluate" / schema.METRICS.name)
    push(r.ws, branch, result["tag"])
    return json.dumps(result)


def keep(repo: str, rev: str, policy_path: str, dvc_remote: str, branch: str, batch: str) -> str:
    """The round without the pipeline (no trigger): its batch and drift report are committed."""
    r, _ = runner(repo, rev, policy_path, dvc_remote, batch)
    result = r.keep()
    push(r.ws, branch, None)
    return json.dumps(result)


def push(ws, branch: str, tag: str | None) -> None:
    """Publish the step's commit: a fast-forward of `branch` on the git remote (and the version and
    stage tags). A
    branch that moved on since `rev` (another round committed first) is refused, not merged."""
    from serm import versioning

    stage = versioning.latest_assignment(ws, tag) if tag else None   # GTO's production assignment
    refs = [f"HEAD:refs/heads/{branch}"] + [f"refs/tags/{t}" for t in (tag, stage) if t]
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

    from serm.schema import RoundManifest, WorkspaceLayout

    rounds = []
    for rl in WorkspaceLayout(ws.root).committed_rounds():
        at = RoundManifest.load(rl.committed_manifest).ingest.get("ingested_at")
        if at and rl.kept(schema.EVENTS).exists():
            rounds.append((rl.committed, datetime.fromisoformat(at)))
    first = min([t for _, t in rounds], default=datetime.now(timezone.utc) - timedelta(minutes=5))
    return first - timedelta(hours=1), rounds


def rebuild_features(ws, batch: Path) -> None:
    """This step's Feast store from versioned data: the workspace's documents, the seed set (its
    queries as impressions; only their text is read from it), every committed batch and this
    one, each stamped when it was ingested."""
    from datetime import datetime

    import pandas as pd

    from serm import featurestore, history
    from serm.data import xquad
    from serm.schema import RoundManifest

    seed_ts, rounds = _history_times(ws)
    featurestore.ingest_documents(ws.root, history.documents(ws, fallback=xquad.documents), seed_ts)
    seed = history.seed_set(ws)
    featurestore.ingest_events(ws.root, pd.DataFrame({
        "event_id": [f"seed-{i}" for i in range(len(seed))], "ts": seed_ts, "query_id": seed["query_id"],
        "query": seed["query"], "locale": seed["locale"], "doc_id": seed["doc_id"],
        "position": seed.groupby("query_id").cumcount() + 1, "clicked": False, "dwell_s": 0.0}), seed_ts)
    for rdir, at in rounds:
        featurestore.ingest_events(ws.root, pd.read_parquet(rdir / schema.EVENTS.name), at)
    man = RoundManifest.load(batch)
    featurestore.ingest_events(ws.root, pd.read_parquet(batch / "ingest" / schema.EVENTS.name),
                               datetime.fromisoformat(man.ingest["ingested_at"]))
