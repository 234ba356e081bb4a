"""Rollback to every version, for real (slow: two pipeline rounds, then one after a rollback).

After v0 (init), v1 and v2 (two promoted rounds), `serm rollback N` to each version, in an order
that goes back and forth, restores `data/` and the model byte for byte (checksums taken when
each version was made), once with the DVC cache emptied so the version comes from the remote.
Each rollback is a new commit. Then evolution continues from the restored version: the next
round fine-tunes v1, not the newest model, and records v1 as its parent.
"""

import json
import shutil

import pytest

from serm import versioning
from serm.versioning import tree_checksum
from serm.workspace import Workspace

from tests.reliability_workspaces import git, initialised_copy, policies, serm


def sums(ws):
    return tree_checksum(ws / "data"), tree_checksum(ws / "data" / "model")


@pytest.mark.slow
def test_rollback_to_each_version_then_evolve_from_it(tmp_path_factory):
    ws = initialised_copy(tmp_path_factory, "rollback")
    policy = str(policies(tmp_path_factory)["pipeline"])
    made = {0: sums(ws)}
    for version in (1, 2):
        serm(ws, "evolve", "--policy", policy)
        assert Workspace.at(ws).state()["production"] == version
        made[version] = sums(ws)
    assert len({m for _, m in made.values()}) == 3, "three different models"

    order = [1, 0, 2, 1]
    for i, version in enumerate(order):
        head = git(ws, "rev-parse", "HEAD")
        if i == 2:
            shutil.rmtree(ws / ".dvc" / "cache")      # this one must come back from the DVC remote
        res = serm(ws, "rollback", str(version), "--policy", policy)
        assert f"v{version} is production again" in res.stdout
        assert sums(ws) == made[version], f"v{version} restored byte for byte"
        assert git(ws, "rev-parse", "HEAD^") == head, "a new commit on top; history kept"
        reg = json.loads((ws / "versions.json").read_text())
        assert reg["production"] == version and reg["events"][-1] == {"event": "rollback", "version": version}
        assert versioning.clean(Workspace.at(ws))
    assert git(ws, "status", "--porcelain", "--", "data.dvc", "versions.json") == ""

    # Production is v1 again (rounds done: 1): the next round evolves batch 2 from v1.
    res = serm(ws, "evolve", "--policy", policy)
    assert "[round 2] starting: stream batch 2, production v1" in res.stdout
    assert "[train] fine-tuning production v1 on" in res.stdout
    w = Workspace.at(ws)
    assert w.state()["production"] == 3 and "serm-model@v3" in git(ws, "tag")
    lineage = json.loads((ws / "data" / "model" / "lineage.json").read_text())
    assert lineage["parent"] == 1 and lineage["version"] == 3
    reg = json.loads((ws / "versions.json").read_text())
    assert [v["version"] for v in reg["versions"]] == [0, 1, 2, 3]
    assert next(v for v in reg["versions"] if v["version"] == 3)["parent"] == 1
    assert sums(ws)[1] not in {m for _, m in made.values()}, "a new model, trained from v1"
