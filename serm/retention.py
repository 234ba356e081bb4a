"""Retention: which versions' files stay in the DVC cache and remote, and `serm gc`.

Every promoted version adds a model to the DVC cache and remote; a round that is not promoted
adds its label files. Without retention nothing is ever removed. `versioning.retention`
declares what stays:

- production, and the version before it (the `previous` of a disagreement committee);
- the newest `keep_last` versions;
- every version created, or in production, within `keep_within` of now (the rollback window);
- every version the policy's agents name (`committee: [v3]`, a teacher's `model: v3`);
- everything HEAD's `data/` holds (today's labels, reviews and test sets are never touched).

A removed version keeps its git tag, its `versions.json` entry (marked `removed`) and its folder
manifest (a few KB, so DVC and SERM can still tell what it held); its files leave the local
cache and the remote, and GTO sees it deregistered (`serm-model@v3.0.0!`). Files that a kept
version or HEAD share with it (most of `data/` is shared between versions) stay.

Order, so a kill never leaves a version listed as restorable without its files: the registry
marks the versions removed and commits that (and the deregistration tags), then the files go.
A gc interrupted after the commit finishes on the next run (removed versions' files are always
candidates).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from serm import schema
from serm.errors import WorkspaceError
from serm.files import atomic_write_json
from serm.policy_schema import duration
from serm.workspace import Workspace

_VERSION_REF = re.compile(r"^v(\d+)$")
_VERSION_NUMBER = re.compile(r"^v?(\d+)$")   # where a field takes a workspace version ("3" or "v3")
DONE_FILE = "gc-done.json"   # in .serm/: removed versions whose files are all gone (skipped by later plans)


@dataclass
class Plan:
    """What gc keeps and removes; `objects` are DVC object ids (md5) with their sizes."""

    keep: dict[int, list[str]] = field(default_factory=dict)      # version -> why it stays
    remove: list[int] = field(default_factory=list)               # versions whose files go now
    already_removed: list[int] = field(default_factory=list)
    objects: dict[str, int] = field(default_factory=dict)         # md5 -> bytes (local cache, else remote)
    by_version: dict[int, tuple[int, int]] = field(default_factory=dict)  # version -> (objects, bytes) only it held
    other: tuple[int, int] = (0, 0)                               # unpromoted rounds' commits: (objects, bytes)
    rule: str = ""

    @property
    def freed(self) -> int:
        return sum(self.objects.values())

    def as_dict(self) -> dict:
        return {"rule": self.rule, "keep": {f"v{v}": why for v, why in sorted(self.keep.items())},
                "remove": [f"v{v}" for v in self.remove],
                "already_removed": [f"v{v}" for v in self.already_removed],
                "objects": len(self.objects), "bytes": self.freed,
                "by_version": {f"v{v}": {"objects": n, "bytes": b} for v, (n, b) in sorted(self.by_version.items())},
                "unpromoted_rounds": {"objects": self.other[0], "bytes": self.other[1]}}


def describe_rule(spec) -> str:
    if spec is None:
        return "no retention (versioning.retention unset): every version is kept"
    parts = [f"the newest {spec.keep_last}" if spec.keep_last else None,
             f"those created or in production within {duration(spec.keep_within)}" if spec.keep_within else None]
    parts = [p for p in parts if p]
    return "keep production, the version before it, versions the policy names" + (
        ", " + " and ".join(parts) if parts else "")


# --------------------------------------------------------------------------- what stays
def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def served_until(registry: dict) -> dict[int, datetime | None]:
    """version -> when it last stopped being production (None: it still is, or the time is
    unknown), for every version that ever was, from the registry's promotion and rollback
    events (a promotion's time is its version's `created`)."""
    created = {v["version"]: _parse_time(v.get("created")) for v in registry.get("versions", [])}
    changes: list[tuple[int, datetime | None]] = []
    for e in registry.get("events", []):
        if e.get("event") in ("promoted", "rollback") and e.get("version") is not None:
            changes.append((e["version"], _parse_time(e.get("at")) if e.get("at") else created.get(e["version"])))
    # each change ends the previous version's time in production; the last one is still serving
    return {v: (changes[i + 1][1] if i + 1 < len(changes) else None) for i, (v, _) in enumerate(changes)}


def policy_refs(policy) -> set[int]:
    """Versions the policy's agents name (`v3` in a committee, a teacher's `model: v3`)."""
    found: set[int] = set()

    def walk(node, key=None):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v, key)
        elif isinstance(node, str):
            m = (_VERSION_NUMBER if key in ("model", "committee", "base_model") else _VERSION_REF).match(node.strip())
            if m:
                found.add(int(m.group(1)))

    for section in (policy.mining, policy.annotation, policy.model):
        walk(section.model_dump(mode="json"))
    return found


def kept_versions(registry: dict, policy, now: datetime | None = None) -> dict[int, list[str]]:
    """version -> the reasons it stays (empty list: it may go)."""
    spec = policy.versioning.retention
    now = now or datetime.now(timezone.utc)
    live = [v for v in registry.get("versions", []) if not v.get("removed")]
    numbers = sorted(v["version"] for v in live)
    why: dict[int, list[str]] = {n: [] for n in numbers}
    prod = registry.get("production")
    if prod in why:
        why[prod].append("production")
    older = [n for n in numbers if prod is not None and n < prod]
    if older:
        why[older[-1]].append("the version before production")
    for n in policy_refs(policy) & set(numbers):
        why[n].append("named in the policy")
    if spec is None:
        for n in numbers:
            why[n].append("no retention set")
        return why
    if spec.keep_last:
        for n in numbers[-spec.keep_last:]:
            why[n].append(f"newest {spec.keep_last}")
    if spec.keep_within:
        cutoff = now - timedelta(seconds=spec.keep_within)
        until = served_until(registry)
        for v in live:
            n, created = v["version"], _parse_time(v.get("created"))
            if (created and created >= cutoff) or (n in until and (until[n] is None or until[n] >= cutoff)):
                why[n].append(f"within {duration(spec.keep_within)}")
    return why


# --------------------------------------------------------------------------- the objects
class _Store:
    """The local DVC cache and the default remote, read through DVC's own object databases."""

    def __init__(self, ws: Workspace):
        from serm import versioning

        self.ws = ws
        self.repo = versioning.dvc_repo(ws)
        self.local = self.repo.cache.local
        try:
            self.remote = self.repo.cloud.get_remote_odb(None, "gc")
        except Exception:   # no remote configured: the local cache is all there is
            self.remote = None
        self._manifests: dict[str, list[str] | None] = {}

    def manifest(self, dir_md5: str) -> list[str] | None:
        if dir_md5 not in self._manifests:
            entries = None
            for odb in filter(None, (self.local, self.remote)):
                path = odb.oid_to_path(dir_md5)
                if odb.fs.exists(path):
                    with odb.fs.open(path, "r") as fh:
                        entries = [e["md5"] for e in json.load(fh)]
                    break
            self._manifests[dir_md5] = entries
        return self._manifests[dir_md5]

    def objects_of(self, dvcfile_text: str) -> set[str]:
        """Every file object a `data.dvc` names (its folder manifest's entries)."""
        from serm.versioning import _dvc_out_md5

        top = _dvc_out_md5(dvcfile_text)
        if not top:
            return set()
        if not top.endswith(".dir"):
            return {top}
        entries = self.manifest(top)
        if entries is None:
            raise WorkspaceError(f"the folder manifest {top} is in neither the DVC cache nor the remote; "
                                 "gc cannot tell which files it still needs (run `dvc fetch` and retry)")
        return set(entries)

    def size(self, md5: str) -> int | None:
        """Bytes of an object (local cache, else the remote); None where neither holds it."""
        for odb in filter(None, (self.local, self.remote)):
            path = odb.oid_to_path(md5)
            if odb.fs.exists(path):
                return int(odb.fs.size(path) or 0)
        return None

    def delete(self, md5s) -> tuple[int, int]:
        """Remove objects from the local cache and the remote; (local, remote) counts removed.

        DVC remembers what a remote holds (an index of the folder manifests it pushed, whose
        entries it then takes as present); a removed version keeps its manifest, so that index
        is cleared, or a later push of a byte-identical file would skip it as already there."""
        counts = []
        for odb in (self.local, self.remote):
            n = 0
            for md5 in sorted(md5s) if odb is not None else []:
                path = odb.oid_to_path(md5)
                if odb.fs.exists(path):
                    odb.fs.remove(path)
                    n += 1
            counts.append(n)
        if self.remote is not None and counts[1]:
            from dvc_data.hashfile.db import get_index

            get_index(self.remote).clear()
            self.repo.drop_data_index()
        return counts[0], counts[1]


def _tag_commits(ws: Workspace) -> dict[str, str]:
    """tag -> the commit it points at, for every tag (one git call)."""
    from serm import versioning

    out = {}
    for line in versioning.git(ws, "for-each-ref", "--format=%(refname:lstrip=2) %(objectname) %(*objectname)",
                               "refs/tags").splitlines():
        name, obj, *peeled = line.split()
        out[name] = peeled[0] if peeled else obj   # an annotated tag points at a tag object: peel it
    return out


def _rev_dvcfile(ws: Workspace, rev: str) -> str:
    from serm import versioning

    return versioning.git(ws, "show", f"{rev}:{schema.DATA_DVC}", check=False)


def plan(ws: Workspace, policy, now: datetime | None = None, store: _Store | None = None,
         registry_only: bool = False) -> Plan:
    """What `gc` would do now, from HEAD's registry (nothing is written); `registry_only`: which
    versions stay and go, without reading DVC for the files and their sizes."""
    from serm import versioning

    registry = versioning.committed_registry(ws)
    out = Plan(rule=describe_rule(policy.versioning.retention))
    why = kept_versions(registry, policy, now)
    entries = {v["version"]: v for v in registry.get("versions", [])}
    out.keep = {n: r for n, r in why.items() if r}
    out.remove = sorted(n for n, r in why.items() if not r)
    done = _done(ws)
    out.already_removed = sorted(n for n, v in entries.items() if v.get("removed") and n not in done)
    if registry_only or not (out.remove or out.already_removed):
        return out
    store = store or _Store(ws)
    tag_commits = _tag_commits(ws)
    keep_objs: set[str] = set()
    # HEAD, and the tip of every other branch, local or remote-tracking (a cluster's round
    # branch, a colleague's push): what a ref still points at is never this gc's to remove.
    tips = ["HEAD", *versioning.git(ws, "for-each-ref", "--format=%(objectname)", "refs/heads", "refs/remotes").split()]
    for rev in dict.fromkeys(tips):
        keep_objs |= store.objects_of(_rev_dvcfile(ws, rev))   # nothing for a tip without data.dvc
    for n in out.keep:
        tag = entries[n].get("tag")
        if tag not in tag_commits:
            raise WorkspaceError(f"v{n} is kept but its tag {tag!r} is missing, so gc cannot tell which files it "
                                 "needs; run `serm evolve` (recovery restores missing tags) and retry")
        keep_objs |= store.objects_of(_rev_dvcfile(ws, tag))
    version_objs = {}
    for n in out.remove + out.already_removed:
        tag = entries[n].get("tag")
        version_objs[n] = (store.objects_of(_rev_dvcfile(ws, tag)) - keep_objs) if tag else set()
    # The commits of rounds that promoted nothing hold label files HEAD has superseded; their
    # files go too unless a kept version or HEAD shares them. Commits older than the oldest
    # kept version only: a newer one may be what a kept version's data grew from.
    oldest_kept = min(out.keep, default=None)
    floor = entries[oldest_kept]["tag"] if oldest_kept is not None else None
    other: set[str] = set()
    revs = versioning.git(ws, "rev-list", *([floor] if floor else ["HEAD"]), "--", schema.DATA_DVC).split()
    tagged = {tag_commits[v["tag"]] for v in entries.values() if v.get("tag") in tag_commits}
    for rev in revs:
        if rev in tagged:
            continue
        text = _rev_dvcfile(ws, rev)
        if not versioning._dvc_out_md5(text):
            continue
        try:
            other |= store.objects_of(text) - keep_objs
        except WorkspaceError:   # an old unpromoted commit whose manifest is gone: nothing left to free
            continue
    claimed: set[str] = set()
    for n in out.remove + out.already_removed:
        mine = version_objs[n] - claimed
        claimed |= mine
        sizes = {m: b for m in mine if (b := store.size(m)) is not None}
        out.objects.update(sizes)
        if n in out.remove or sizes:
            out.by_version[n] = (len(sizes), sum(sizes.values()))
    rest = {m: b for m in other - claimed if (b := store.size(m)) is not None}
    out.objects.update(rest)
    out.other = (len(rest), sum(rest.values()))
    return out


# --------------------------------------------------------------------------- doing it
def gc(ws: Workspace, policy, dry_run: bool = False, log=print, now: datetime | None = None) -> Plan:
    """Remove the files of versions retention lets go (see the module doc). The caller holds
    the workspace lock; an interrupted promotion must be resumed first."""
    from serm import versioning

    p = plan(ws, policy, now, store=None, registry_only=True)   # the registry alone: no DVC when all stay
    if not (p.remove or p.already_removed):
        return p
    if versioning.interrupted_promotion(ws) or not versioning.clean(ws):
        raise WorkspaceError("a promotion was interrupted (data/ differs from the committed version); "
                             "run `serm evolve` to resume it, then gc")
    store = _Store(ws)
    p = plan(ws, policy, now, store)
    if dry_run:
        return p
    if p.remove:
        _mark_removed(ws, p, now)
    gone = p.remove + p.already_removed
    _deregister(ws, gone, p.rule)   # again for versions an interrupted gc marked but did not tag
    removed_local, removed_remote = store.delete(p.objects) if p.objects else (0, 0)
    for n in gone:
        shutil.rmtree(ws.dot / "models" / f"v{n}", ignore_errors=True)   # history's restored copies
    _record_done(ws, gone)
    if p.objects:
        log(f"[gc] removed {removed_local} object(s) from the DVC cache and {removed_remote} from the remote "
            f"({_mb(p.freed)} MB)")
    return p


def _done(ws: Workspace) -> set[int]:
    try:
        return set(json.loads((ws.dot / DONE_FILE).read_text())["versions"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()   # lost or damaged: the next plan looks at every removed version again


def _record_done(ws: Workspace, versions: list[int]) -> None:
    ws.dot.mkdir(parents=True, exist_ok=True)
    atomic_write_json(ws.dot / DONE_FILE, {"versions": sorted(_done(ws) | set(versions))})


def _deregister(ws: Workspace, versions: list[int], rule: str) -> None:
    """GTO's deregistration tag `NAME@vN.0.0!` on each removed version's tag (once)."""
    from serm import versioning

    tags = {v["version"]: v.get("tag") for v in ws.versions()["versions"]}
    for n in versions:
        tag = tags.get(n)
        if tag and versioning.tag_exists(ws, tag) and not versioning.tag_exists(ws, f"{tag}!"):
            versioning.git(ws, "tag", "-a", f"{tag}!", "-m", f"serm gc: files removed ({rule})", f"{tag}^{{}}")


def _mark_removed(ws: Workspace, p: Plan, now: datetime | None) -> None:
    """Registry first: versions.json marks them removed (one git commit); `_deregister` tags them."""
    from serm import versioning

    at = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    reg = ws.versions()
    names = ", ".join(f"v{n}" for n in p.remove)
    for v in reg["versions"]:
        if v["version"] in p.remove:
            v["removed"] = {"at": at, "rule": p.rule}
    reg["events"] = [*reg.get("events", []), {"event": "gc", "removed": p.remove, "at": at,
                                              "bytes": p.freed, "rule": p.rule}]
    atomic_write_json(ws.versions_path, reg)
    msg = f"serm: gc removes the files of {names} ({p.rule})"
    versioning.git(ws, "add", schema.VERSIONS_FILE)
    versioning.git(ws, "commit", "-q", "-m", msg, "--", schema.VERSIONS_FILE)
    versioning.failpoint("gc:committed")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def format_plan(p: Plan, dry_run: bool) -> str:
    lines = [f"retention: {p.rule}"]
    for n, why in sorted(p.keep.items()):
        lines.append(f"  keep   v{n}: {', '.join(why)}")
    verb = "would remove" if dry_run else "removed"
    for n in p.remove:
        cnt, size = p.by_version.get(n, (0, 0))
        lines.append(f"  {verb} v{n}: {cnt} file(s) only it held, {_mb(size)} MB")
    for n in p.already_removed:
        if n in p.by_version:
            cnt, size = p.by_version[n]
            lines.append(f"  {verb} v{n} (removed earlier, files left): {cnt} file(s), {_mb(size)} MB")
    if p.other[0]:
        lines.append(f"  {verb} {p.other[0]} file(s) of unpromoted rounds' commits, {_mb(p.other[1])} MB")
    if not p.objects and not p.remove:
        lines.append("nothing to remove")
    else:
        lines.append(f"{'would free' if dry_run else 'freed'} {_mb(p.freed)} MB in the DVC cache and the remote "
                     f"({len(p.objects)} object(s))")
    return "\n".join(lines)
