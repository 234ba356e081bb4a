"""The model registry others read: GTO tags, `serm promote`, and rollback that moves the model
and keeps the labels.

Three versions are committed the way rounds commit them (git + DVC, SERM's promotion path), each
with the label file its round wrote; a reviewer's grade is imported after v2. `gto show` (GTO's
own CLI, a subprocess) must agree with `serm versions` after every move, and a rollback to v1
must restore v1's model byte for byte while the labels and the review gathered after it stay
where the next round reads them."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from serm import versioning
from serm.annotation import escalations
from serm.cli import main
from serm.versioning import tree_checksum

from .version_workspaces import commit_version, empty_workspace

GTO = str(Path(sys.executable).with_name("gto"))


def gto(ws: Path, *args: str) -> str:
    res = subprocess.run([GTO, *args], cwd=ws, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def gto_production(ws: Path) -> str:
    return json.loads(gto(ws, "show", "--json"))["serm-model"]["stage"]["production"]


@pytest.fixture
def workspace(tmp_path):
    ws = empty_workspace(tmp_path / "ws")
    models = {}
    for v in (0, 1, 2):
        commit_version(ws, v, seed=300 + v, labels=bool(v))
        models[v] = tree_checksum(ws.model_dir)
    # a reviewer grades an escalated pair after v2 (not trained on yet)
    escalations.apply_resolutions(ws.data, pd.DataFrame({"query_id": ["q9"], "doc_id": ["d9"], "grade": [2],
                                                          "reviewer": ["ann"]}), source="csv")
    versioning.commit_version(ws, "serm: 1 escalation resolved")
    return ws, models


def test_gto_reads_the_registry(workspace, capsys):
    ws, _ = workspace
    assert gto_production(ws.root) == "v2.0.0"
    assert "serm-model@v2.0.0" == gto(ws.root, "show", "serm-model#production", "--ref")
    assert main(["versions", "-w", str(ws.root), "--json"]) == 0
    reg = json.loads(capsys.readouterr().out)
    assert reg["production"] == 2 and reg["gto"]["production"] == "serm-model@v2.0.0"


def test_rollback_moves_the_model_and_keeps_labels_and_reviews(workspace, capsys):
    ws, models = workspace
    labels_before = tree_checksum(ws.layout.labels_dir)
    head = versioning.git(ws, "rev-parse", "HEAD")
    assert main(["rollback", "v1", "-w", str(ws.root), "--reason", "v2 over-grades"]) == 0
    assert "every label, review and escalation since kept" in capsys.readouterr().out
    assert tree_checksum(ws.model_dir) == models[1], "v1's model byte for byte"
    assert tree_checksum(ws.layout.labels_dir) == labels_before, "round 2's labels are still there"
    assert {"q1", "q2"} <= set(pd.concat(pd.read_parquet(f) for f in ws.layout.label_files())["query_id"])
    waiting = escalations.pending(escalations.read_resolved(ws.data))
    assert waiting[["query_id", "grade"]].values.tolist() == [["q9", 2]], "the review waits for the next round"
    st = ws.state()
    assert st["production"] == 1 and st["production_round"] == 1 and st["rounds_done"] == 2, "stream position kept"
    reg = ws.versions()
    assert reg["production"] == 1 and reg["events"][-1]["event"] == "rollback"
    assert reg["events"][-1]["reason"] == "v2 over-grades"
    assert versioning.git(ws, "rev-parse", "HEAD^") == head and versioning.clean(ws)
    assert gto_production(ws.root) == "v1.0.0"
    # the DVC cache emptied: v2 comes back from the remote; a second move within one second stays ordered
    import shutil

    shutil.rmtree(ws.root / ".dvc" / "cache")
    assert main(["promote", "2", "-w", str(ws.root), "--reason", "fixed the judge, v2 is fine"]) == 0
    assert tree_checksum(ws.model_dir) == models[2] and ws.versions()["production"] == 2
    assert gto_production(ws.root) == "v2.0.0"
    assert "manual promotion: fixed the judge" in ws.versions()["events"][-1]["reason"]
    assert main(["promote", "2", "-w", str(ws.root), "--reason", "again"]) == 2
    assert "already production" in capsys.readouterr().err


def test_rollback_with_data_restores_the_old_data(workspace, capsys):
    ws, models = workspace
    assert main(["rollback", "1", "--data", "-w", str(ws.root)]) == 0
    assert "data/ and data/model restored" in capsys.readouterr().out
    assert tree_checksum(ws.model_dir) == models[1]
    assert [f.name for f in ws.layout.label_files()] == ["r0001.parquet"]
    assert not len(escalations.read_resolved(ws.data)) and ws.state()["rounds_done"] == 1
    assert gto_production(ws.root) == "v1.0.0" and ws.versions()["production"] == 1


def test_kill_before_the_stage_assignment_is_recovered(workspace):
    """A kill between the version tag and the production assignment: recovery assigns it."""
    from serm import round as rounds

    ws, _ = workspace
    last = versioning.latest_assignment(ws, "serm-model@v0.0.0")
    versioning.git(ws, "tag", "-d", last)           # as if killed before `git tag serm-model#production#3`
    assert gto_production(ws.root) == "v1.0.0"
    lines = []
    rounds.recover(ws, lines.append)
    assert gto_production(ws.root) == "v2.0.0"
    assert any("assigned it (serm-model#production#" in s for s in lines), lines


def test_policy_tag_must_be_gto_format(tmp_path):
    from serm.errors import PolicyError
    from serm.policy import load_policy

    raw = (Path(__file__).parents[2] / "policies" / "default.yaml").read_text()
    bad = tmp_path / "p.yaml"
    bad.write_text(raw.replace('tag: "serm-model@v{n}.0.0"', 'tag: "serm-model@v{n}"'))
    with pytest.raises(PolicyError, match=r"versioning.tag.*GTO's version tag NAME@v\{n\}.0.0"):
        load_policy(bad)
