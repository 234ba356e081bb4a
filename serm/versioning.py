"""DVC-backed versions of `data/`, the production pointer, promotion and rollback.

Every completed round commits `data.dvc` and `versions.json` (only those paths: a user's other
changes are never swept into a SERM commit) after `dvc add data` + `dvc push`; a promoted round
also tags the commit.

The tags are GTO's (DVC's git-tag model registry), so `gto show` and any deploy job that
follows GTO read SERM's registry without SERM: `serm-model@v3.0.0` registers version 3 (SERM's
v3 is GTO's v3.0.0) and `serm-model#production#N` assigns the production stage, the highest N
being in effect (`gto show serm-model#production --ref`). Promotion, `serm promote` and
rollback each add an assignment; none is ever moved or deleted.

Rollback is forward-only and moves the model, not the data: vK's `data/model` is restored from
its tag's DVC version into today's `data/`, so every label, review, escalation and test label
gathered since stays, and the next round trains from vK with all of them. Restoring vK's whole
`data/` is `rollback(..., data=True)`. History is never rewritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from pathlib import Path

from serm import schema
from serm.errors import WorkspaceError
from serm.files import atomic_write_json, atomic_write_text
from serm.workspace import Workspace

GIT_ID = ["-c", "user.name=serm", "-c", "user.email=serm@localhost"]
EMPTY_DIR_MD5 = "d751713988987e9331980363e24189ce.dir"


def git(ws: Workspace, *args: str, check: bool = True, env: dict | None = None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    cmd = ["git", *(GIT_ID if args and args[0] in ("commit", "tag") and not _has_identity(ws) else []), *args]
    proc = subprocess.run(cmd, cwd=ws.root, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise WorkspaceError(f"git {' '.join(args)} failed in {ws.root}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def _has_identity(ws: Workspace) -> bool:
    proc = subprocess.run(["git", "config", "user.email"], cwd=ws.root, capture_output=True, text=True)
    return proc.returncode == 0 and bool(proc.stdout.strip())


def dvc_repo(ws: Workspace):
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    from dvc.repo import Repo

    return Repo(str(ws.root))


@contextlib.contextmanager
def quiet():
    """DVC prints git hints ("To track the changes with git, run: ...") on stdout: SERM makes
    those commits itself, so keep them out of the user's terminal."""
    import io
    import logging
    import warnings

    dvc_log = logging.getLogger("dvc")  # the git hints are INFO records of dvc.repo.scm_context
    level = dvc_log.level
    dvc_log.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        dvc_log.setLevel(level)


def init_repo(ws: Workspace, remote: str) -> None:
    """git + DVC + a local DVC remote; `data/` tracked by `data.dvc` (empty at first)."""
    ws.root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    if not (ws.root / ".git").exists():
        git(ws, "init", "-q")
    if not (ws.root / ".dvc").exists():
        from dvc.repo import Repo

        with quiet():
            Repo.init(str(ws.root))
    repo = dvc_repo(ws)
    with repo.config.edit() as conf:
        # A path relative to the cwd is stored relative to .dvc/config, so clones keep working.
        conf["remote"]["local"] = {"url": os.path.relpath(ws.root / remote, os.getcwd())}
        conf["core"]["remote"] = "local"
        conf["core"]["analytics"] = False
    (ws.root / remote).mkdir(parents=True, exist_ok=True)
    ensure_data(ws)


def ensure_data(ws: Workspace) -> None:
    """Make `data/` match `data.dvc` on a fresh clone: restore from cache or remote, or
    recreate the empty first version (git cannot hold an empty folder)."""
    dvcfile = ws.root / schema.DATA_DVC
    repo = dvc_repo(ws)
    if not dvcfile.exists():
        ws.data.mkdir(exist_ok=True)
        with quiet():
            repo.add(str(ws.data))
        return
    if EMPTY_DIR_MD5 in dvcfile.read_text() and not any(ws.data.glob("*")):
        ws.data.mkdir(exist_ok=True)
        with quiet():
            repo.add(str(ws.data))  # re-creates the (empty) cache entry; data.dvc is unchanged
        return
    if not clean(ws):
        orphans = uncommitted_objects(ws)   # what an interrupted `dvc add` may have left in the cache
        with quiet():
            repo.fetch(targets=[str(ws.root / schema.DATA_DVC)])
            repo.checkout(targets=[str(ws.root / schema.DATA_DVC)], force=True)
        prune_cache(ws, orphans)


def clean(ws: Workspace) -> bool:
    """True when `data/` matches the committed `data.dvc`."""
    with quiet():
        return not dvc_repo(ws).status(targets=[str(ws.root / schema.DATA_DVC)])


def restore_committed(ws: Workspace) -> None:
    """Throw away uncommitted changes in `data/` (an interrupted promotion)."""
    with quiet():
        dvc_repo(ws).checkout(targets=[str(ws.root / schema.DATA_DVC)], force=True)


def commit_version(ws: Workspace, message: str, tag: str | None = None) -> str:
    repo = dvc_repo(ws)
    with quiet():
        repo.add(str(ws.data))
        repo.push(targets=[str(ws.root / schema.DATA_DVC)])
    failpoint("version:pushed")
    paths = [*schema.VERSION_FILES, ".gitignore"]
    git(ws, "add", *[p for p in paths if (ws.root / p).exists()])
    git(ws, "commit", "-q", "-m", message, "--", *[p for p in paths if (ws.root / p).exists()])
    sha = git(ws, "rev-parse", "HEAD")
    failpoint("version:committed")
    if tag:   # a promotion: register the version, then make it GTO's production
        git(ws, "tag", "-a", tag, "-m", message)
        failpoint("version:tagged")
        assign_stage(ws, tag, message=message)
    return sha


def tag_exists(ws: Workspace, tag: str) -> bool:
    return bool(git(ws, "tag", "--list", tag))


def record_version(ws: Workspace, entry: dict) -> dict:
    reg = ws.versions()
    reg["versions"] = [v for v in reg["versions"] if v["version"] != entry["version"]] + [entry]
    reg["production"] = entry["version"]
    reg["events"].append({"event": "promoted", "version": entry["version"], "round": entry.get("round")})
    atomic_write_json(ws.versions_path, reg)
    return reg


def next_version(ws: Workspace) -> int:
    return max([v["version"] for v in ws.versions()["versions"]], default=-1) + 1


def rollback(ws: Workspace, version: int, data: bool = False, reason: str | None = None) -> str:
    """Make `version` production again; forward-only (a new commit and stage assignment).

    By default only the model moves: `data/model` becomes vK's, byte for byte, and the rest of
    `data/` (labels, reviews, escalations, test labels, stream position) stays as it is now.
    `data=True` restores vK's whole `data/` as it was committed (what came after it leaves
    the working data; it stays in git and DVC history)."""
    reg = ws.versions()
    known = {v["version"]: v for v in reg["versions"]}
    if version not in known:
        raise WorkspaceError(f"unknown version v{version}; known: {', '.join(f'v{v}' for v in sorted(known))}")
    if known[version].get("removed"):
        raise WorkspaceError(removed_message(reg, version))
    tag = known[version].get("tag")
    if not tag or not tag_exists(ws, tag):
        raise WorkspaceError(f"version v{version} has no tag {tag!r} in {ws.root}; cannot restore it")
    if data:
        content = git(ws, "show", f"{tag}:{schema.DATA_DVC}")
        atomic_write_text(ws.root / schema.DATA_DVC, content + "\n")
        repo = dvc_repo(ws)
        with quiet():
            repo.fetch(targets=[str(ws.root / schema.DATA_DVC)])
            repo.checkout(targets=[str(ws.root / schema.DATA_DVC)], force=True)
    else:
        restore_model(ws, tag)
        state = ws.state()
        state.update(production=version, production_round=known[version].get("round", 0))
        atomic_write_json(ws.state_path, state)
    reg["production"] = version
    reg["events"] = [*reg.get("events", []), {"event": "rollback", "version": version, "data": data,
                                              "reason": reason, "at": schema.now_iso()}]
    atomic_write_json(ws.versions_path, reg)
    what = "data/ and data/model" if data else "data/model (labels and reviews kept)"
    sha = commit_version(ws, f"serm: roll back to v{version}: restores {what} of {tag}"
                         + (f" ({reason})" if reason else ""))
    assign_stage(ws, tag, message=f"rollback to v{version}" + (f": {reason}" if reason else ""))
    return sha


def removed_message(registry: dict, version: int) -> str:
    """Why vN cannot be restored: `serm gc` removed its files (when, under which rule)."""
    entry = next(v for v in registry["versions"] if v["version"] == version)
    gone = entry.get("removed") or {}
    live = [f"v{v['version']}" for v in registry["versions"] if not v.get("removed")]
    return (f"v{version}'s files were removed by `serm gc` on {gone.get('at', '?')} ({gone.get('rule', 'retention')}); "
            f"versions that can be restored: {', '.join(live) or 'none'}")


def promote(ws: Workspace, version: int, reason: str) -> str:
    """A manual promotion: `version` becomes production with `reason` recorded (in
    versions.json's events, the commit message and the GTO assignment)."""
    if not reason or not reason.strip():
        raise WorkspaceError("a manual promotion needs a reason (--reason TEXT): it is recorded with the version")
    reg = ws.versions()
    if reg.get("production") == version:
        raise WorkspaceError(f"v{version} is already production")
    return rollback(ws, version, reason=f"manual promotion: {reason.strip()}")


def get_model(ws: Workspace, tag: str, out: Path) -> Path:
    """Copy `data/model` as committed at `tag` to `out` (from the DVC cache, else the remote)."""
    try:
        from dvc.api import DVCFileSystem

        fs = DVCFileSystem(str(ws.root), rev=tag)
        try:
            fs.get("data/model", str(out), recursive=True)
        finally:
            fs.close()
    except Exception as exc:  # git/DVC say why (missing tag, cache and remote both lack it)
        raise WorkspaceError(f"cannot restore the model of tag {tag!r} in {ws.root}: {exc}") from None
    if not (Path(out) / schema.MODEL_CONFIG).is_file():
        raise WorkspaceError(f"tag {tag!r} in {ws.root} holds no data/model/config.json")
    return Path(out)


def restore_model(ws: Workspace, tag: str) -> None:
    """Replace `data/model` with the model committed at `tag` (DVC cache, else the remote)."""
    import shutil
    import tempfile

    ws.dot.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="restore-", dir=ws.dot) as tmp:   # same filesystem: a rename
        out = get_model(ws, tag, Path(tmp) / "model")
        old = ws.data / ".model.old"
        shutil.rmtree(old, ignore_errors=True)
        if ws.model_dir.exists():
            ws.model_dir.rename(old)
        out.rename(ws.model_dir)
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- GTO stages
PRODUCTION_STAGE = "production"


def artifact_of(tag: str) -> str:
    return tag.split("@", 1)[0]


def _assignments(ws: Workspace, artifact: str, stage: str) -> list[tuple[int, str, int]]:
    """(counter, tag, tagger time) of every `artifact#stage#N` tag, lowest counter first."""
    import re

    out = []
    rows = git(ws, "for-each-ref", "--format=%(refname:short) %(taggerdate:unix)",
               f"refs/tags/{artifact}#{stage}#*").splitlines()
    pattern = re.compile(rf"^{re.escape(artifact)}#{re.escape(stage)}#(\d+)$")
    for row in rows:
        name, _, when = row.partition(" ")
        m = pattern.match(name)
        if m:
            out.append((int(m.group(1)), name, int(when or 0)))
    return sorted(out)


def latest_assignment(ws: Workspace, tag: str, stage: str = PRODUCTION_STAGE) -> str | None:
    """The stage's assignment in effect (`serm-model#production#N`), or None."""
    done = _assignments(ws, artifact_of(tag), stage)
    return done[-1][1] if done else None


def stage_version_tag(ws: Workspace, tag_format_or_tag: str, stage: str = PRODUCTION_STAGE) -> str | None:
    """The version tag the stage is assigned to now (the highest assignment's commit), or None."""
    artifact = artifact_of(tag_format_or_tag)
    done = _assignments(ws, artifact, stage)
    if not done:
        return None
    commit = git(ws, "rev-parse", f"{done[-1][1]}^{{commit}}")
    for name in git(ws, "tag", "--points-at", commit, "--list", f"{artifact}@v*").split():
        return name
    return None


def assign_stage(ws: Workspace, tag: str, stage: str = PRODUCTION_STAGE, message: str | None = None) -> str:
    """Assign `stage` to the version `tag` registers: GTO's annotated `artifact#stage#N` tag on
    the version's commit. GTO orders assignments by tag time (whole seconds), so the new one
    is dated at least a second after the last."""
    import time

    artifact = artifact_of(tag)
    done = _assignments(ws, artifact, stage)
    counter = done[-1][0] + 1 if done else 1
    when = max(int(time.time()), max((t for _, _, t in done), default=0) + 1)
    name = f"{artifact}#{stage}#{counter}"
    git(ws, "tag", "-a", name, "-m", message or f"{stage}: {tag}", f"{tag}^{{commit}}",
        env={"GIT_COMMITTER_DATE": f"{when} +0000"})
    return name


def restore_stage(ws: Workspace) -> str | None:
    """After a kill between a version's tag and its stage assignment: assign production to the
    committed production version if GTO's production is another. Returns the tag made."""
    entry = committed_production(committed_registry(ws))
    if not entry or not entry.get("tag") or not tag_exists(ws, entry["tag"]):
        return None
    if stage_version_tag(ws, entry["tag"]) == entry["tag"]:
        return None
    return assign_stage(ws, entry["tag"], message=f"production: {entry['tag']} (assignment restored after an "
                        "interrupted promotion)")


def tree_checksum(path: Path, skip: frozenset[str] = frozenset()) -> str:
    """sha256 over relative paths and bytes of every file under `path` (files named in `skip`
    left out)."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file() and p.name not in skip):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- crash recovery
VERSION_FILES = schema.VERSION_FILES


def clear_stale_git_lock(ws: Workspace, log=print, wait_s: float = 5.0) -> None:
    """A git command killed mid-write leaves `.git/index.lock`, and every later git command
    refuses to run. SERM holds the workspace lock here, so a lock that outlives a short wait
    belongs to a dead process: remove it."""
    import time

    lock = ws.root / ".git" / "index.lock"
    deadline = time.monotonic() + wait_s
    while lock.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if lock.exists():
        holders = _git_processes_in(ws.root)
        if holders:   # a person's `git commit -a` with its editor open, say: not ours to break
            raise WorkspaceError(f"{lock} is held by a running git process (pid {', '.join(map(str, holders))}) "
                                 f"in {ws.root}; let it finish, then run the command again")
        log(f"[recover] removing a stale {lock} left by an interrupted git command")
        lock.unlink(missing_ok=True)


def _git_processes_in(root: Path) -> list[int]:
    """Pids of running `git` processes whose working directory is inside `root` (Linux /proc;
    elsewhere none are seen and a lock that outlived the wait counts as stale)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "comm").read_text().strip() != "git":
                continue
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:
            continue
        if cwd == root or root in cwd.parents:
            pids.append(int(proc.name))
    return pids


def restore_version_files(ws: Workspace) -> None:
    """`data.dvc` and `versions.json` as HEAD has them, in the index and the work tree (a kill
    after `git add` leaves the new ones staged, so a plain checkout from the index would keep
    them). A `versions.json` that HEAD lacks (an interrupted first version) is dropped."""
    in_head = [p for p in VERSION_FILES if git(ws, "cat-file", "-t", f"HEAD:{p}", check=False) == "blob"]
    if in_head:
        git(ws, "checkout", "HEAD", "--", *in_head)
    for p in VERSION_FILES:
        if p not in in_head:
            git(ws, "rm", "-q", "--cached", "--ignore-unmatch", "--", p)
            (ws.root / p).unlink(missing_ok=True)


def cache_object(ws: Workspace, md5: str) -> Path:
    """Where DVC 3 keeps an object (`.dvc/cache/files/md5/ab/cdef…`, `.dir` for a folder's manifest)."""
    return ws.root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def _dvc_out_md5(text: str) -> str | None:
    import re

    m = re.search(r"md5: ([0-9a-f]{32}(?:\.dir)?)", text or "")
    return m.group(1) if m else None


def _manifest(ws: Workspace, dir_md5: str) -> list[str] | None:
    import json

    f = cache_object(ws, dir_md5)
    if not f.exists():
        return None
    return [e["md5"] for e in json.loads(f.read_text())]


def uncommitted_objects(ws: Workspace) -> set[str]:
    """Cache objects an interrupted `dvc add data` may have written: the md5 of every file now
    in `data/`, the folder manifest named by the work tree's `data.dvc` and its entries."""
    out: set[str] = set()
    for f in sorted(p for p in ws.data.rglob("*") if p.is_file()) if ws.data.exists() else []:
        h = hashlib.md5()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        out.add(h.hexdigest())
    dvcfile = ws.root / schema.DATA_DVC
    top = _dvc_out_md5(dvcfile.read_text()) if dvcfile.exists() else None
    if top:
        out.add(top)
        if top.endswith(".dir"):
            out.update(_manifest(ws, top) or [])
    return out


def committed_objects(ws: Workspace) -> set[str] | None:
    """Every cache object some committed `data.dvc` (any branch or tag) refers to, or None when
    a committed folder manifest is not in the local cache (then nobody can tell what is unused)."""
    keep: set[str] = set()
    for rev in git(ws, "rev-list", "--all", "--", schema.DATA_DVC).split():
        top = _dvc_out_md5(git(ws, "show", f"{rev}:data.dvc", check=False))
        if not top:
            continue
        keep.add(top)
        if top.endswith(".dir"):
            entries = _manifest(ws, top)
            if entries is None:
                return None
            keep.update(entries)
    return keep


def prune_cache(ws: Workspace, candidates: set[str]) -> int:
    """Remove the `candidates` that no committed version refers to; returns how many went.
    Only objects of `data/` are ever candidates, so nothing else DVC tracks is touched."""
    keep = committed_objects(ws)
    if keep is None:
        return 0
    removed = 0
    for md5 in sorted(candidates - keep):
        f = cache_object(ws, md5)
        if f.exists():
            f.unlink()
            removed += 1
    return removed


def restore_missing_tags(ws: Workspace) -> list[str]:
    """Tag each committed version whose tag is missing (a kill between `git commit` and `git
    tag`) on the first commit whose `versions.json` records it. Returns the tags made."""
    import json

    if git(ws, "cat-file", "-t", "HEAD:versions.json", check=False) != "blob":
        return []
    tags = set(git(ws, "tag", "--list").split())
    missing = {v["version"]: v["tag"] for v in json.loads(git(ws, "show", "HEAD:versions.json"))["versions"]
               if v.get("tag") and v["tag"] not in tags}
    made = []
    for rev in git(ws, "rev-list", "--reverse", "HEAD", "--", schema.VERSIONS_FILE).split() if missing else []:
        recorded = {v["version"] for v in json.loads(git(ws, "show", f"{rev}:versions.json"))["versions"]}
        for version in sorted(recorded & set(missing)):
            tag = missing.pop(version)
            git(ws, "tag", "-a", tag, "-m", f"serm: version v{version} (tag restored after an interrupted promotion)", rev)
            made.append(tag)
    return made


# --------------------------------------------------------------------------- what is committed
def failpoint(name: str) -> None:
    """SIGKILL this process at `name` when `SERM_FAILPOINT` says so: the crash tests stop a
    promotion at an exact point (`promote:moved`, `promote:pushed`, `promote:committed`,
    `promote:tagged`) the way a power cut would; unset, it does nothing."""
    if os.environ.get("SERM_FAILPOINT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def committed_registry(ws: Workspace) -> dict:
    """`versions.json` as HEAD has it (the empty registry before the first version commit)."""
    import json

    if not (ws.root / ".git").exists() or git(ws, "cat-file", "-t", f"HEAD:{schema.VERSIONS_FILE}",
                                              check=False) != "blob":
        return {"production": None, "versions": [], "events": []}
    return json.loads(git(ws, "show", f"HEAD:{schema.VERSIONS_FILE}"))


def committed_state(ws: Workspace) -> dict:
    """`data/state.json` as the committed `data.dvc` describes it (read from the DVC cache or
    remote; the working copy may be half-way through a promotion)."""
    import json

    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(str(ws.root), rev="HEAD")
    try:
        return json.loads(fs.read_text("data/state.json"))
    except FileNotFoundError:
        return {"rounds_done": 0, "next_batch": 1, "production": None}
    finally:
        fs.close()


def committed_production(registry: dict) -> dict | None:
    """The registry's entry for its production version (None before the first version)."""
    return next((v for v in registry["versions"] if v["version"] == registry.get("production")), None)


def interrupted_promotion(ws: Workspace, committed: dict | None = None) -> dict | None:
    """What an interrupted promotion left, or None. Two kinds:
    - `uncommitted`: a round's outputs were (being) moved into `data/` but not committed; the
      committed production stands and the next `serm evolve` undoes the move and resumes;
    - `untagged` / `unassigned`: the round is committed, its version tag or GTO's production
      assignment is missing; the next command's recovery writes it."""
    from serm.schema import RoundManifest, WorkspaceLayout

    if not (ws.root / ".git").exists():
        return None
    lay = WorkspaceLayout(ws.root)
    committed = committed_registry(ws) if committed is None else committed
    working = ws.versions()
    for r in lay.staged_rounds():
        man = RoundManifest.maybe(lay.round(r).manifest)
        if man is None or not man.done("promote") or committed_state(ws).get("rounds_done", 0) >= r:
            continue   # not at the commit yet, or committed and only its staging left to clean
        promote = man.entry("promote")
        version = working.get("production") if working.get("production") != committed.get("production") else None
        promoting = bool((promote.result or {}).get("promote"))
        if version is None and promoting:   # killed before the new version was recorded
            version = max((v["version"] for v in committed["versions"]), default=-1) + 1
        what = f"v{version}'s promotion (round {r})" if version is not None else (
            f"round {r}'s {'promotion' if promoting else 'commit'}")
        return {"kind": "uncommitted", "round": r, "version": version,
                "message": f"{what} was interrupted before its commit; production is still "
                           f"v{committed.get('production')}; `serm evolve` resumes it"}
    entry = committed_production(committed)
    if entry and entry.get("tag"):
        if not tag_exists(ws, entry["tag"]):
            return {"kind": "untagged", "round": entry.get("round"), "version": entry["version"],
                    "message": f"v{entry['version']} is committed but its tag {entry['tag']} is missing (a promotion "
                               "interrupted after its commit); the next serm command writes it"}
        if stage_version_tag(ws, entry["tag"]) != entry["tag"]:
            return {"kind": "unassigned", "round": entry.get("round"), "version": entry["version"],
                    "message": f"v{entry['version']} is committed and tagged but GTO's production stage is not "
                               "assigned to it yet (interrupted); the next serm command assigns it"}
    return None


def production_view(ws: Workspace) -> tuple[dict, dict, dict | None]:
    """(registry, state, interrupted): what readers report. While a promotion is interrupted
    before its commit, the committed registry and state, never the half-moved working copies."""
    committed = committed_registry(ws)
    interrupted = interrupted_promotion(ws, committed)
    if interrupted and interrupted["kind"] == "uncommitted":
        return committed, committed_state(ws), interrupted
    return ws.versions(), ws.state(), interrupted
