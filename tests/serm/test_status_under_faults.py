"""Truthful status while a promotion is interrupted (issue: a deploy job reading `serm status`
must never ship a version that was not committed).

One pipeline round on a copy of the session's initialised workspace is SIGKILLed at each point
of its promotion, in order, each run resuming the last (`SERM_FAILPOINT` makes the process
kill itself there with SIGKILL, as a power cut would):

  promote:moved     the round's outputs and the new model moved into data/, nothing committed
  version:pushed    data/ added to DVC and pushed, no git commit
  version:tagged    committed and tagged, GTO's production not yet assigned

and the state a kill between the commit and the tag leaves is made with real git commands (too
brief to hit). After each, `serm status`, `serm versions`, `serm.load_model(ws, "production")`
and the dashboard report the committed production and say what was interrupted.
Slow (`-m slow`): about 130 s on 2 cores, `serm init` of the template included."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import serm
from serm import versioning
from serm.workspace import Workspace

from tests.conftest import ROOT
from tests.reliability_workspaces import env, git, initialised_copy, policies, serm as serm_cli

EVOLVE = "import sys; from serm.evolve import evolve; evolve(sys.argv[1], sys.argv[2], run_pipeline=None)"


def evolve_until(ws: Path, policy: Path, failpoint: str | None) -> subprocess.CompletedProcess:
    """`evolve` with the stages in this process, SIGKILLed at `failpoint`."""
    e = {**env(), **({"SERM_FAILPOINT": failpoint} if failpoint else {})}
    return subprocess.run([sys.executable, "-c", EVOLVE, str(ws), str(policy)], capture_output=True, text=True,
                          env=e, cwd=ROOT, timeout=900)


def reports(ws: Path) -> tuple[dict, dict]:
    return (json.loads(serm_cli(ws, "status", "--json").stdout), json.loads(serm_cli(ws, "versions", "--json").stdout))


def gto_production(ws: Path) -> str:
    res = subprocess.run([str(Path(sys.executable).with_name("gto")), "show", "--json"], cwd=ws,
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout)["serm-model"]["stage"]["production"]


@pytest.mark.slow
def test_status_reports_the_committed_production_at_each_point_of_a_promotion(tmp_path_factory):
    from monitoring.dashboard import sync

    ws = initialised_copy(tmp_path_factory, "status-faults")
    policy = policies(tmp_path_factory)["pipeline"]
    for point in ("promote:moved", "version:pushed"):
        res = evolve_until(ws, policy, point)
        assert res.returncode == -9, f"{point}: not killed ({res.returncode}):\n{res.stdout[-3000:]}{res.stderr[-2000:]}"
        lineage = json.loads((ws / "data" / "model" / "lineage.json").read_text())
        assert lineage["version"] == 1, f"{point}: the new model is in data/ (the trap a reader must avoid)"
        status, versions = reports(ws)
        assert status["production"] == 0 and status["rounds_done"] == 0, point
        assert status["interrupted"]["kind"] == "uncommitted" and status["interrupted"]["version"] == 1
        assert "v1's promotion (round 1) was interrupted" in status["interrupted"]["message"]
        assert "`serm evolve` resumes it" in status["interrupted"]["message"]
        assert versions["production"] == 0 and [v["version"] for v in versions["versions"]] == [0], point
        assert "interrupted before its commit; production is still v0" in serm_cli(ws, "status").stdout
        assert serm.load_model(ws, "production", device="cpu").version == 0, point
        assert "skipped" in sync(Workspace.at(ws)), f"{point}: the dashboard keeps the committed picture"
        assert gto_production(ws) == "v0.0.0"

    res = evolve_until(ws, policy, "version:tagged")      # resumes at the commit; dies before the assignment
    assert res.returncode == -9, res.stdout[-3000:]
    status, versions = reports(ws)
    assert status["production"] == 1 and versions["production"] == 1, "committed: v1 is the truth"
    assert status["interrupted"]["kind"] == "unassigned" and gto_production(ws) == "v0.0.0"
    assert serm.load_model(ws, "production", device="cpu").version == 1
    serm_cli(ws, "status")                                 # reading changes nothing
    assert gto_production(ws) == "v0.0.0"
    recovered = serm_cli(ws, "init", "--policy", str(policy)).stdout
    assert "assigned it (serm-model#production#2)" in recovered
    status, versions = reports(ws)
    assert status["interrupted"] is None and gto_production(ws) == "v1.0.0"
    assert versions["gto"]["production"] == "serm-model@v1.0.0"

    # between the commit and the tag (milliseconds: made with git): the tag and assignment missing
    git(ws, "tag", "-d", "serm-model#production#2", "serm-model@v1.0.0")
    status, _ = reports(ws)
    assert status["production"] == 1 and status["interrupted"]["kind"] == "untagged"
    assert "its tag serm-model@v1.0.0 is missing" in status["interrupted"]["message"]
    serm_cli(ws, "init", "--policy", str(policy))
    status, versions = reports(ws)
    assert status["interrupted"] is None and gto_production(ws) == "v1.0.0"
    assert versioning.clean(Workspace.at(ws)) and git(ws, "status", "--porcelain", "--", "versions.json") == ""
