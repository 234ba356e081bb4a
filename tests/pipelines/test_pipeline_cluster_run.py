"""The cluster pipeline's own components, run with kfp.local (slow: a whole round in ~9 steps).

The workspace is pushed to a bare git repository (the "git server") and its DVC objects to a
separate folder (the "object store"); the steps see only those two and the artifacts KFP hands
between them. Afterwards the git server holds the round's commit and tag, the object store its
data, and the workspace folder itself is untouched: no step wrote to it. Mining ran as two shards
whose scores the merge saw together, each stream pair scored once.
"""

import json
import re
import shutil
import subprocess

import pytest

from serm import versioning
from serm.workspace import Workspace

from tests.reliability_workspaces import diff, git, initialised_copy, policies, snapshot


@pytest.mark.slow
def test_a_round_on_the_cluster_pipeline_shares_nothing_but_git_and_dvc(tmp_path_factory, tmp_path):
    from pipelines import cluster

    ws = initialised_copy(tmp_path_factory, "cluster")
    shutil.copy2(policies(tmp_path_factory)["pipeline"], ws / "policies" / "reliability.yaml")
    git(ws, "add", "policies/reliability.yaml")
    git(ws, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "policy for the cluster round")
    origin, objects = tmp_path / "origin.git", tmp_path / "objects"
    subprocess.run(["git", "clone", "-q", "--bare", str(ws), str(origin)], check=True)
    shutil.copytree(ws / ".dvc-remote", objects)
    branch, rev = git(ws, "rev-parse", "--abbrev-ref", "HEAD"), git(ws, "rev-parse", "HEAD")
    before = snapshot(ws)

    cluster.run_local({"repo": f"file://{origin}", "rev": rev, "branch": branch,
                       "policy_path": "policies/reliability.yaml", "dvc_remote": str(objects), "force": False},
                      str(tmp_path / "kfp"), str(tmp_path / "kfp.log"), shards=2)

    assert not diff(before, snapshot(ws)), "no step touched the workspace folder"
    log = re.sub(r"\x1b\[[0-9;]*m", "", (tmp_path / "kfp.log").read_text())
    for task in ("prepare-op", "score-shard-op", "mine-op", "annotate-op", "check-op", "train-op", "evaluate-op",
                 "promote-op"):
        assert f"'{task}' finished with status SUCCESS" in log, task
    assert "'keep-op'" not in log, "the trigger fired: the no-trigger branch did not run"
    assert log.count("[mine] started: shard") == 2

    # What the git server and the object store now hold: a fresh clone sees round 1 and v1.
    assert git(origin, "log", "-1", "--format=%s", branch).startswith("serm: round 1 promoted v1")
    assert git(origin, "rev-parse", f"{branch}~1") == rev, "the round's commit is on top of rev"
    assert "serm-model@v1.0.0" in git(origin, "tag")
    prod = max(t for t in git(origin, "tag").split() if t.startswith("serm-model#production#"))
    assert git(origin, "rev-parse", f"{prod}^{{commit}}") == git(origin, "rev-parse", "serm-model@v1.0.0^{commit}"), \
        "GTO's production assignment pushed with the version"
    fresh = tmp_path / "fresh"
    subprocess.run(["git", "clone", "-q", str(origin), str(fresh)], check=True)
    w = Workspace.at(fresh)
    with versioning.dvc_repo(w).config.edit("local") as conf:
        conf["remote"]["store"] = {"url": str(objects)}
        conf["core"]["remote"] = "store"
    versioning.ensure_data(w)
    assert versioning.clean(w) and w.state()["production"] == 1 and w.state()["rounds_done"] == 1
    rdir = fresh / "data" / "rounds" / "r0001"
    man = json.loads((rdir / "manifest.json").read_text())
    assert man["promoted"] is True and man["base"] == rev
    assert all(man["stages"][s]["status"] == "done" for s in
               ("ingest", "drift", "mine", "annotate", "check", "train", "evaluate", "promote"))
    report = json.loads((rdir / "mining_report.json").read_text())
    shards = report["shards"]
    assert [s["shard"] for s in shards] == [0, 1] and all(s["pairs"] > 0 for s in shards)
    assert sum(s["pairs"] for s in shards) == report["stream_pairs"] == report["scored_pairs"]
    assert report["forward_passes"]["production"] == report["stream_pairs"], "one forward pass per pair"
    assert json.loads((fresh / "data" / "model" / "lineage.json").read_text())["parent"] == 0
