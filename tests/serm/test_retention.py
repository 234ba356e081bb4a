"""Retention and `serm gc`: which versions keep their files, and that removing the others never
touches production, the version before it, a version the policy names, a version inside the
rollback window, or what today's data/ holds.

Five versions are committed the way rounds commit them (git + DVC, SERM's promotion path), each
with its own model weights and label file, created 40, 35, 20, 10 and 1 days ago."""

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from serm import retention, versioning
from serm.cli import main
from serm.errors import WorkspaceError
from serm.policy import load_policy
from serm.versioning import tree_checksum
from serm.workspace import Workspace

from ..conftest import ROOT
from .test_registry import gto
from .version_workspaces import commit_version, empty_workspace

AGES_DAYS = (40, 35, 20, 10, 1)
NOW = datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    ws = empty_workspace(tmp_path_factory.mktemp("retention") / "ws")
    models = {}
    for v, age in enumerate(AGES_DAYS):
        commit_version(ws, v, seed=500 + v, created=(NOW - timedelta(days=age)).isoformat(timespec="seconds"))
        models[v] = tree_checksum(ws.model_dir)
    return ws.root, models


@pytest.fixture
def workspace(template, tmp_path):
    import shutil

    src, models = template
    dst = tmp_path / "ws"
    shutil.copytree(src, dst, symlinks=True)
    return Workspace.at(dst), models


def policy_file(tmp_path: Path, retention_spec: dict | None, **sections) -> Path:
    raw = yaml.safe_load((ROOT / "tests" / "policies" / "tiny.yaml").read_text())
    if retention_spec is not None:
        raw["versioning"] = {"retention": retention_spec}
    raw.update(sections)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def model_objects(ws: Workspace, version: int) -> set[str]:
    """The file objects of vN's data/model that no other version shares."""
    def objs(v):
        top = versioning._dvc_out_md5(versioning.git(ws, "show", f"serm-model@v{v}.0.0:data.dvc"))
        entries = json.loads(versioning.cache_object(ws, top).read_text())
        return {e["md5"] for e in entries if e["relpath"].startswith("model/")}

    others = set().union(*(objs(v) for v in range(len(AGES_DAYS)) if v != version))
    return objs(version) - others


def remote_object(ws: Workspace, md5: str) -> Path:
    return ws.root / ".dvc-remote" / "files" / "md5" / md5[:2] / md5[2:]


def test_dry_run_lists_what_goes_and_removes_nothing(workspace, tmp_path, capsys):
    ws, _ = workspace
    pol = policy_file(tmp_path, {"keep_last": 1})
    assert main(["gc", "-w", str(ws.root), "-p", str(pol), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["dry_run"] and plan["remove"] == ["v0", "v1", "v2"]
    assert plan["keep"] == {"v3": ["the version before production"], "v4": ["production", "newest 1"]}
    assert plan["bytes"] > 10_000_000, "three models' weights would go"
    for v in (0, 1, 2):
        assert plan["by_version"][f"v{v}"]["objects"] >= 1
        assert all(versioning.cache_object(ws, m).exists() and remote_object(ws, m).exists()
                   for m in model_objects(ws, v)), "a dry run removes nothing"
    assert not any(v.get("removed") for v in ws.versions()["versions"])
    assert main(["gc", "-w", str(ws.root), "-p", str(pol), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "would remove v0:" in text and "keep   v4: production, newest 1" in text and "would free" in text


def test_gc_frees_old_versions_and_keeps_what_is_needed(workspace, tmp_path, capsys):
    ws, models = workspace
    head_before = tree_checksum(ws.data)
    pol = policy_file(tmp_path, {"keep_last": 1})
    gone = {v: model_objects(ws, v) for v in (0, 1, 2)}
    assert main(["gc", "-w", str(ws.root), "-p", str(pol)]) == 0
    out = capsys.readouterr().out
    assert "removed v0:" in out and "freed" in out
    for v, objs in gone.items():
        assert objs and not any(versioning.cache_object(ws, m).exists() or remote_object(ws, m).exists()
                                for m in objs), f"v{v}'s weights left the cache and the remote"
    assert tree_checksum(ws.data) == head_before and versioning.clean(ws), "today's data/ untouched"
    for v in (3, 4):   # the kept ones restore byte for byte from DVC
        out_dir = versioning.get_model(ws, f"serm-model@v{v}.0.0", tmp_path / f"m{v}")
        assert tree_checksum(out_dir) == models[v]
    # the registry says so, in git (committed) and in GTO (deregistered)
    reg = versioning.committed_registry(ws)
    assert [v["version"] for v in reg["versions"] if v.get("removed")] == [0, 1, 2]
    assert reg["events"][-1]["event"] == "gc" and reg["events"][-1]["removed"] == [0, 1, 2]
    assert "serm-model@v1.0.0!" in versioning.git(ws, "tag", "--list").split()
    shown = json.loads(gto(ws.root, "show", "serm-model", "--json"))
    assert {e["version"] for e in shown} == {"v3.0.0", "v4.0.0"}, "GTO lists only the versions with files"
    assert json.loads(gto(ws.root, "show", "--json"))["serm-model"]["stage"]["production"] == "v4.0.0"
    # a removed version is refused with the reason, not a DVC stack trace
    with pytest.raises(WorkspaceError, match=r"v1's files were removed by `serm gc`.*restored: v3, v4"):
        versioning.rollback(ws, 1)
    assert main(["versions", "-w", str(ws.root)]) == 0
    assert "(files removed by gc)" in capsys.readouterr().out
    # nothing more to do
    assert main(["gc", "-w", str(ws.root), "-p", str(pol)]) == 0
    assert "nothing to remove" in capsys.readouterr().out


def test_rollback_window_and_policy_names_keep_versions(workspace, tmp_path):
    ws, _ = workspace
    versioning.rollback(ws, 1, reason="check v1")      # v1 serves again for a moment (now) ...
    versioning.promote(ws, 4, reason="back to v4")      # ... then v4 again
    pol = load_policy(policy_file(tmp_path, {"keep_last": 1, "keep_within": "8d"}))
    plan = retention.plan(ws, pol)
    assert plan.remove == [0, 2], "v2 served until v3 came, 10 days ago: outside the window"
    assert "within 8d" in plan.keep[1], "v1 served inside the rollback window (just now)"
    assert "within 8d" in plan.keep[3], "v3 served until a day ago"
    assert plan.keep[4][0] == "production"
    wider = retention.plan(ws, load_policy(policy_file(tmp_path, {"keep_last": 1, "keep_within": "15d"})))
    assert wider.remove == [0] and "within 15d" in wider.keep[2]
    raw = yaml.safe_load(policy_file(tmp_path, {"keep_last": 1}).read_text())
    raw["mining"]["agents"].append({"name": "disagreement", "committee": ["production", "v0"]})
    raw["annotation"]["agents"].insert(0, {"name": "teacher", "model": "2"})   # a teacher takes 2 or v2
    named = tmp_path / "named.yaml"
    named.write_text(yaml.safe_dump(raw))
    plan = retention.plan(ws, load_policy(named))
    assert plan.keep[0] == ["named in the policy"] and plan.keep[2] == ["named in the policy"]
    assert plan.remove == [1]


def test_no_retention_keeps_everything(workspace, tmp_path, capsys):
    ws, _ = workspace
    assert main(["gc", "-w", str(ws.root), "-p", str(policy_file(tmp_path, None))]) == 0
    out = capsys.readouterr().out
    assert "no retention" in out and "nothing to remove" in out
    assert not any(v.get("removed") for v in ws.versions()["versions"])


def test_malformed_retention_names_the_fix(tmp_path):
    from serm.errors import PolicyError

    with pytest.raises(PolicyError, match="keep_last"):
        load_policy(policy_file(tmp_path, {"auto": True}))
    with pytest.raises(PolicyError, match="keep_last"):
        load_policy(policy_file(tmp_path, {"keep_last": 0}))


def test_gc_killed_after_its_commit_finishes_on_the_next_run(workspace, tmp_path):
    ws, _ = workspace
    pol = policy_file(tmp_path, {"keep_last": 3})
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "SERM_FAILPOINT": "gc:committed"}
    cmd = [sys.executable, "-m", "serm.cli", "gc", "-w", str(ws.root), "-p", str(pol)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert res.returncode == -9, res.stderr
    gone = model_objects(ws, 0) | model_objects(ws, 1)
    assert [v["version"] for v in versioning.committed_registry(ws)["versions"] if v.get("removed")] == [0, 1]
    assert all(versioning.cache_object(ws, m).exists() for m in gone), "killed before any file went"
    with pytest.raises(WorkspaceError, match="removed by `serm gc`"):
        versioning.rollback(ws, 0)
    env.pop("SERM_FAILPOINT")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "removed earlier, files left" in res.stdout
    assert not any(versioning.cache_object(ws, m).exists() or remote_object(ws, m).exists() for m in gone)
    tags = versioning.git(ws, "tag", "--list").split()
    assert {"serm-model@v0.0.0!", "serm-model@v1.0.0!"} <= set(tags), "the rerun deregistered them in GTO"
    res = subprocess.run(cmd + ["--dry-run"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert "nothing to remove" in res.stdout and "removed earlier" not in res.stdout, "finished: not planned again"


def test_each_round_ends_with_gc_when_auto_and_never_fails_the_round(workspace, tmp_path):
    from serm.evolve import retain

    ws, _ = workspace
    lines = []
    retain(ws, load_policy(policy_file(tmp_path, {"keep_last": 1, "auto": False})), lines.append)
    assert lines == [] and not any(v.get("removed") for v in ws.versions()["versions"]), "auto: false leaves it to serm gc"
    (ws.data / "state.json").write_text("{}")        # data/ no longer matches its committed version
    retain(ws, load_policy(policy_file(tmp_path, {"keep_last": 1})), lines.append)
    assert lines and lines[0].startswith("[gc] skipped: a promotion was interrupted"), lines
    versioning.restore_committed(ws)
    lines.clear()
    retain(ws, load_policy(policy_file(tmp_path, {"keep_last": 1})), lines.append)
    assert lines[-1] == "[gc] retention removed v0, v1, v2 (" + lines[-1].split("(", 1)[1]
    assert [v["version"] for v in ws.versions()["versions"] if v.get("removed")] == [0, 1, 2]


def test_a_file_gc_removed_is_pushed_again_when_it_comes_back(tmp_path):
    """DVC remembers what it pushed to a remote and skips those files on the next push; gc
    deletes files behind its back, so it must make DVC forget, or a byte-identical file that
    returns (an empty escalation queue, a re-trained identical model) never reaches the remote."""
    import hashlib

    ws = empty_workspace(tmp_path / "ws")
    (ws.data / "a.txt").write_text("aaa\n")
    (ws.data / "b.txt").write_text("bbb\n")
    versioning.commit_version(ws, "two files")
    b = hashlib.md5(b"bbb\n").hexdigest()
    assert remote_object(ws, b).exists()
    (ws.data / "b.txt").unlink()
    versioning.commit_version(ws, "b is gone")
    retention._Store(ws).delete({b})
    assert not remote_object(ws, b).exists() and not versioning.cache_object(ws, b).exists()
    (ws.data / "b.txt").write_text("bbb\n")
    (ws.data / "c.txt").write_text("ccc\n")
    versioning.commit_version(ws, "b is back")
    assert remote_object(ws, b).exists(), "the returning file was pushed"
