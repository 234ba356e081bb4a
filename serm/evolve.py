"""`serm init` and `serm evolve`: bootstrap a workspace, then run one evolution round —
ingest the next stream batch, check drift, and when the policy's trigger fires run mine →
annotate → check → train → evaluate → promote, in this process or through a pipeline runner
the caller injects (the CLI injects the kfp.local pipeline). The round itself is
`serm.round.RoundRunner`'s; this module only starts it and cleans up after it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from serm.errors import WorkspaceError
from serm.workspace import Workspace

PROJECT_ROOT = Path(__file__).resolve().parents[1]
GITIGNORE = ["/.serm/", "/.dvc-remote/", "/.venv/", "__pycache__/", "/data"]


def init_workspace(ws: Workspace, policy, policy_path: Path, log=print) -> None:
    """Make `ws` a SERM workspace (git + DVC + feature repo + policy) and train v0 if needed."""
    from serm import featurestore, round as rounds, schema, versioning

    if ws.root != PROJECT_ROOT:
        for sub in ("features", "policies"):
            if not (ws.root / sub).exists():
                shutil.copytree(PROJECT_ROOT / sub, ws.root / sub,
                                ignore=shutil.ignore_patterns("__pycache__"))
    gi = ws.root / ".gitignore"
    lines = gi.read_text().splitlines() if gi.exists() else []
    missing = [line for line in GITIGNORE if line not in lines]
    if missing:
        gi.write_text("\n".join(lines + missing) + "\n")
    if (ws.root / ".git").exists() and (ws.root / ".dvc").exists() and \
            versioning.git(ws, "rev-parse", "--verify", "-q", "HEAD", check=False):
        rounds.recover(ws, log)  # before init_repo, which would repair data/ without a word
    versioning.init_repo(ws, policy.versioning.remote)
    if not versioning.git(ws, "rev-parse", "--verify", "-q", "HEAD", check=False):
        versioning.git(ws, "add", ".gitignore", schema.DATA_DVC, ".dvc/config", ".dvc/.gitignore",
                       *[p for p in ("features", "policies") if (ws.root / p).exists()])
        versioning.git(ws, "commit", "-q", "-m", "serm: new workspace")
    rounds.recover(ws, log)
    featurestore.apply(ws.root)
    if ws.initialised():
        return
    t0 = time.perf_counter()
    result = rounds.bootstrap(ws, policy, log)
    tag = policy.versioning.tag.format(n=0)
    versioning.record_version(ws, {"version": 0, "tag": tag, "round": 0, "parent": None,
                                   "metrics": result["metrics"], "policy_hash": policy.hash(),
                                   "created": schema.now_iso()})
    sha = versioning.commit_version(ws, "serm: seed model v0", tag)
    log(f"[init] workspace ready: v0 is production (commit {sha[:10]}, tag {tag}, {time.perf_counter() - t0:.0f}s)")


def evolve(root: str | Path, policy_path: str | Path, force: bool = False, wait: bool = False, log=print,
           run_pipeline=None) -> list[dict]:
    """Evolve on what is waiting: one round on the next stream batch of a simulated source, or
    one round per pending ingested batch of a `files` source (none pending: nothing to do).
    `run_pipeline(workspace, round_no, policy_path, pipeline_root, log_path)` runs mine →
    promote (e.g. `pipelines.evolution.run_local`); None runs them in this process. Returns
    each round's outcome (`run_round`)."""
    from serm.policy import load_policy

    ws = Workspace.at(root)
    policy_path = Path(policy_path).resolve()
    policy = load_policy(policy_path)
    with ws.lock(wait=wait):
        init_workspace(ws, policy, policy_path, log)
        return evolve_pending(ws, policy, policy_path, force, log, run_pipeline)


def evolve_pending(ws: Workspace, policy, policy_path: Path, force: bool = False, log=print,
                   run_pipeline=None) -> list[dict]:
    """`evolve`'s rounds, the workspace lock already held by the caller."""
    from serm.sources import open_source

    source = open_source(policy)
    if source.simulated:
        return [run_round(ws, policy, policy_path, force, log, run_pipeline)]
    outcomes = []
    while source.pending(ws):
        outcomes.append(run_round(ws, policy, policy_path, force, log, run_pipeline))
    if not outcomes:
        log("[evolve] no ingested batch is waiting: nothing to do (`serm ingest FILE` adds one)")
    return outcomes


def run_round(ws: Workspace, policy, policy_path: Path, force: bool = False, log=print, run_pipeline=None) -> dict:
    """One round on the next batch, resuming one in progress; the lock is the caller's.
    Returns {round, batch, promoted, production, reason, report}."""
    from serm import round as rounds, schema, versioning
    from serm.report import summary_lines

    lay = schema.WorkspaceLayout(ws.root)
    state = ws.state()
    round_no, batch_no = state["rounds_done"] + 1, state["next_batch"]
    for old in lay.staged_rounds():
        if old <= state["rounds_done"]:
            shutil.rmtree(lay.round(old).staging, ignore_errors=True)  # committed, but killed before its clean-up
    runner = rounds.RoundRunner(ws, policy, round_no, log)
    resumed = runner.begin(batch_no, str(policy_path), versioning.git(ws, "rev-parse", "HEAD"))
    log(f"[round {round_no}] {'resuming' if resumed else 'starting'}: stream batch {batch_no}, "
        f"production v{state['production']}, policy {policy.name} ({policy.hash()})")

    ing = runner.ingest(batch_no)
    drift = runner.drift(ing["pairs"])
    if runner.decide_trigger(drift, force)["run_pipeline"]:
        t0 = time.perf_counter()
        rl = runner.layout
        if run_pipeline is None:
            log("[pipeline] running mine → annotate → check → train → evaluate → promote in this process")
            runner.run_pipeline()
            log(f"[pipeline] finished in {time.perf_counter() - t0:.0f}s")
        else:
            log(f"[pipeline] running mine → annotate → check → train → evaluate → promote with kfp.local "
                f"(full log: {rl.kfp_log})")
            run_pipeline(str(ws.root), round_no, str(policy_path), str(rl.kfp_root), str(rl.kfp_log))
            log(f"[pipeline] kfp.local run finished in {time.perf_counter() - t0:.0f}s")
    else:
        runner.keep()
    rl = runner.layout
    if not rl.committed_manifest.exists() or ws.state()["rounds_done"] < round_no:
        raise WorkspaceError(f"round {round_no} did not finish; run `serm evolve` again to resume it")
    # The round is committed: keep the pipeline's full log beside the workspace, drop staging.
    logs = ws.dot / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if rl.kfp_log.exists():
        shutil.copy2(rl.kfp_log, logs / f"{schema.round_name(round_no)}-{schema.KFP_LOG}")
    shutil.rmtree(rl.staging, ignore_errors=True)
    log("\n".join(summary_lines(rl.committed)))
    log(f"report: {rl.report}")
    retain(ws, policy, log)
    man = schema.RoundManifest.load(rl.committed_manifest)
    return {"round": round_no, "batch": batch_no, "promoted": bool(man.promoted), "reason": man.reason,
            "evolved": man.evolved, "production": ws.state()["production"], "report": str(rl.report)}


def retain(ws: Workspace, policy, log=print) -> None:
    """After a committed round: remove the files of versions `versioning.retention` lets go
    (`auto`). A failed gc never fails the round; the next round (or `serm gc`) tries again."""
    from serm import retention

    spec = policy.versioning.retention
    if spec is None or not spec.auto:
        return
    try:
        p = retention.gc(ws, policy, log=log)
    except Exception as exc:   # derived clean-up: the round and its version are committed already
        log(f"[gc] skipped: {exc}")
        return
    if p.remove:
        log(f"[gc] retention removed {', '.join(f'v{n}' for n in p.remove)} ({p.freed / 1e6:.1f} MB freed)")
