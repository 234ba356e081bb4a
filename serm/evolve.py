"""`serm init` and `serm evolve`: bootstrap a workspace, then run one evolution round —
ingest the next stream batch, check drift, and when the policy's trigger fires run the
Kubeflow pipeline (mine → annotate → check → train → evaluate → promote) with kfp.local."""

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
    from serm import featurestore, stages, versioning

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
        stages.recover(ws, log)  # before init_repo, which would repair data/ without a word
    versioning.init_repo(ws, policy.versioning.remote)
    if not versioning.git(ws, "rev-parse", "--verify", "-q", "HEAD", check=False):
        versioning.git(ws, "add", ".gitignore", "data.dvc", ".dvc/config", ".dvc/.gitignore",
                       *[p for p in ("features", "policies") if (ws.root / p).exists()])
        versioning.git(ws, "commit", "-q", "-m", "serm: new workspace")
    stages.recover(ws, log)
    featurestore.apply(ws.root)
    if ws.initialised():
        return
    t0 = time.perf_counter()
    result = stages.bootstrap(ws, policy, log)
    tag = policy.versioning.tag.format(n=0)
    versioning.record_version(ws, {"version": 0, "tag": tag, "round": 0, "parent": None,
                                   "metrics": result["metrics"], "policy_hash": policy.hash(),
                                   "created": stages._now()})
    sha = versioning.commit_version(ws, "serm: seed model v0", tag)
    log(f"[init] workspace ready: v0 is production (commit {sha[:10]}, tag {tag}, {time.perf_counter() - t0:.0f}s)")


def evolve(root: str | Path, policy_path: str | Path, force: bool = False, wait: bool = False, log=print) -> dict:
    from pipelines.evolution import run_local
    from serm import stages, versioning
    from serm.policy import load_policy
    from serm.report import summary_lines

    ws = Workspace.at(root)
    policy_path = Path(policy_path).resolve()
    policy = load_policy(policy_path)
    with ws.lock(wait=wait):
        init_workspace(ws, policy, policy_path, log)
        state = ws.state()
        round_no, batch_no = state["rounds_done"] + 1, state["next_batch"]
        for old in sorted((ws.dot / "rounds").glob("r[0-9]*")):
            if old.name[1:].isdigit() and int(old.name[1:]) <= state["rounds_done"]:
                shutil.rmtree(old, ignore_errors=True)  # committed, but killed before its clean-up
        base = versioning.git(ws, "rev-parse", "HEAD")
        man = stages.Manifest(ws, round_no)
        restart = ("the policy changed" if man.data.get("policy_hash") not in (None, policy.hash()) else
                   "the workspace has a new commit (a rollback or an import)" if man.data.get("base") not in (None, base)
                   else None)
        if restart:
            log(f"[round {round_no}] {restart} since this round started; restarting the round")
            shutil.rmtree(ws.staging(round_no))
            man = stages.Manifest(ws, round_no)
        resumed = bool(man.data["stages"])
        man.set(batch=batch_no, policy=str(policy_path), policy_hash=policy.hash(), base=base)
        log(f"[round {round_no}] {'resuming' if resumed else 'starting'}: stream batch {batch_no}, "
            f"production v{state['production']}, policy {policy.name} ({policy.hash()})")

        ing = stages.run_stage(ws, round_no, "ingest", lambda: stages.stage_ingest(ws, policy, round_no, batch_no, log), log)
        drift = stages.run_stage(ws, round_no, "drift",
                                 lambda: stages.stage_drift(ws, policy, round_no, ing["pairs"], log), log)
        if force and not drift["trigger"]:
            log("[drift] --force: running the round although the trigger did not fire")
        stages.Manifest(ws, round_no).set(decision={
            "run_pipeline": bool(drift["trigger"] or force), "forced_by_cli": bool(force and not drift["trigger"]),
            "reason": drift["reason"] if drift["trigger"] or not force else f"--force; the trigger said: {drift['reason']}"})
        if drift["trigger"] or force:
            t0 = time.perf_counter()
            log(f"[pipeline] running mine → annotate → check → train → evaluate → promote with kfp.local "
                f"(full log: {ws.staging(round_no) / 'kfp.log'})")
            run_local(str(ws.root), round_no, str(policy_path), str(ws.staging(round_no) / "kfp"),
                      str(ws.staging(round_no) / "kfp.log"))
            log(f"[pipeline] kfp.local run finished in {time.perf_counter() - t0:.0f}s")
        else:
            stages.run_stage(ws, round_no, "promote", lambda: {"promote": False, "reason": drift["reason"]}, log)
            stages.finish_round(ws, policy, round_no, False, f"no trigger: {drift['reason']}", None, None, log)
        rdir = ws.round_dir(round_no)
        if not (rdir / "manifest.json").exists() or ws.state()["rounds_done"] < round_no:
            raise WorkspaceError(f"round {round_no} did not finish; run `serm evolve` again to resume it")
        # The round is committed: keep the pipeline's full log beside the workspace, drop staging.
        logs = ws.dot / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if (ws.staging(round_no) / "kfp.log").exists():
            shutil.copy2(ws.staging(round_no) / "kfp.log", logs / f"r{round_no:04d}-kfp.log")
        shutil.rmtree(ws.staging(round_no), ignore_errors=True)
        log("\n".join(summary_lines(rdir)))
        log(f"report: {rdir / 'report.html'}")
        return {"round": round_no, "report": str(rdir / "report.html")}
