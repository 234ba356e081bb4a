"""Rollback to every version, for real (slow: two pipeline rounds, then one after the rollbacks).

After v0 (init), v1 and v2 (two promoted rounds) a reviewer grades one of the open escalations.
`serm rollback N` to each version, in an order that goes back and forth, restores the model byte
for byte (checksums taken when each version was made), once with the DVC cache emptied so the
version comes from the remote, while every label and the review stay. Each rollback is a new
commit and a new GTO production assignment. Then evolution continues from the restored version:
the next round (on the next stream batch) fine-tunes v1, not the newest model, records v1 as its
parent, and trains on the review imported after v2.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from serm import versioning
from serm.annotation import escalations
from serm.versioning import tree_checksum
from serm.workspace import Workspace

from tests.reliability_workspaces import git, initialised_copy, policies, serm


def model_sum(ws):
    return tree_checksum(ws / "data" / "model")


def gto_production(ws) -> str:
    res = subprocess.run([str(Path(sys.executable).with_name("gto")), "show", "--json"], cwd=ws,
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout)["serm-model"]["stage"]["production"]


@pytest.mark.slow
def test_rollback_to_each_version_keeps_labels_then_evolves_from_it(tmp_path_factory, tmp_path):
    ws = initialised_copy(tmp_path_factory, "rollback")
    policy = str(policies(tmp_path_factory)["pipeline"])
    made = {0: model_sum(ws)}
    for version in (1, 2):
        serm(ws, "evolve", "--policy", policy)
        assert Workspace.at(ws).state()["production"] == version
        made[version] = model_sum(ws)
    assert len(set(made.values())) == 3, "three different models"

    # a reviewer grades one open escalation after v2
    out = tmp_path / "review.csv"
    serm(ws, "escalations", "export", "--format", "csv", "--out", str(out))
    review = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(review), "round 2 left open escalations"
    review.loc[0, "grade"] = "2"
    review.head(1).to_csv(out, index=False)
    serm(ws, "escalations", "import", str(out))
    key = (review.query_id[0], review.doc_id[0])
    labels = tree_checksum(ws / "data" / "labels")

    order = [1, 0, 2, 1]
    for i, version in enumerate(order):
        head = git(ws, "rev-parse", "HEAD")
        if i == 2:
            shutil.rmtree(ws / ".dvc" / "cache")      # this one must come back from the DVC remote
        res = serm(ws, "rollback", str(version))
        assert f"v{version} is production again" in res.stdout
        assert model_sum(ws) == made[version], f"v{version}'s model restored byte for byte"
        assert tree_checksum(ws / "data" / "labels") == labels, "every label kept"
        waiting = escalations.pending(escalations.read_resolved(ws / "data"))
        assert list(zip(waiting.query_id, waiting.doc_id)) == [key], "the review waits for the next round"
        assert git(ws, "rev-parse", "HEAD^") == head, "a new commit on top; history kept"
        reg = json.loads((ws / "versions.json").read_text())
        assert reg["production"] == version and reg["events"][-1]["event"] == "rollback"
        assert gto_production(ws) == f"v{version}.0.0"
        assert versioning.clean(Workspace.at(ws))
    assert git(ws, "status", "--porcelain", "--", "data.dvc", "versions.json") == ""

    # Production is v1 again, the stream position kept (2 rounds done): round 3 evolves batch 3 from v1
    res = serm(ws, "evolve", "--policy", policy)
    assert "[round 3] starting: stream batch 3, production v1" in res.stdout
    assert "[train] fine-tuning production v1 on" in res.stdout
    w = Workspace.at(ws)
    assert w.state()["production"] == 3 and "serm-model@v3.0.0" in git(ws, "tag")
    assert gto_production(ws) == "v3.0.0"
    lineage = json.loads((ws / "data" / "model" / "lineage.json").read_text())
    assert lineage["parent"] == 1 and lineage["version"] == 3
    reg = json.loads((ws / "versions.json").read_text())
    assert [v["version"] for v in reg["versions"]] == [0, 1, 2, 3]
    assert next(v for v in reg["versions"] if v["version"] == 3)["parent"] == 1
    assert model_sum(ws) not in set(made.values()), "a new model, trained from v1"
    # the review imported after v2 reached round 3's training labels
    r3 = pd.read_parquet(ws / "data" / "labels" / "r0003.parquet").set_index(["query_id", "doc_id"])
    assert r3.loc[key, "status"] == "human" and int(r3.loc[key, "grade"]) == 2
    assert escalations.read_resolved(ws / "data").set_index(["query_id", "doc_id"]).loc[key, "trained_round"] == 3
