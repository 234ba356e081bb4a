"""A whole SERM workspace, for real: git + DVC (local remote), Feast (SQLite online store),
Evidently, Great Expectations, the KFP pipeline through kfp.local, the cross-encoder.
One temp workspace is shared by the tests of this module (they run in order)."""

import json
import os
import re
import subprocess
import sys
import threading

import pytest

from serm.versioning import tree_checksum
from serm.workspace import Workspace

from tests.conftest import ROOT

TINY = ROOT / "tests" / "policies" / "tiny.yaml"


def serm(ws, *args, check=True):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    res = subprocess.run([sys.executable, "-m", "serm.cli", *args, "--workspace", str(ws)],
                         capture_output=True, text=True, env=env, timeout=900)
    if check and res.returncode != 0:
        raise AssertionError(f"serm {' '.join(args)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def pd_read(path):
    import pandas as pd

    return pd.read_parquet(path)


def git(ws, *args):
    return subprocess.run(["git", *args], cwd=ws, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    """The tiny policy without the simulated reviewer, so round 1's escalations stay open for
    the people of `test_reviewers_resolve_escalations_between_rounds`."""
    text = TINY.read_text()
    assert "human: {budget: 2}" in text
    path = tmp_path_factory.mktemp("policy") / "tiny-no-reviewer.yaml"
    path.write_text(text.replace("human: {budget: 2}", "human: {budget: 0}"))
    return str(path)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, policy):
    root = tmp_path_factory.mktemp("workspace")
    serm(root, "init", "--policy", policy)
    return root


@pytest.fixture(scope="module")
def v0_checksum(ws):
    return tree_checksum(ws / "data"), tree_checksum(ws / "data" / "model")


def test_init_makes_a_versioned_workspace(ws, v0_checksum):
    w = Workspace.at(ws)
    assert w.state()["production"] == 0
    assert (ws / "data" / "model" / "metrics.json").exists() and (ws / "data" / "model" / "lineage.json").exists()
    assert "serm-model@v0.0.0" in git(ws, "tag")
    assert git(ws, "status", "--porcelain", "--", "data.dvc", "versions.json") == ""
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=ws, capture_output=True, text=True)
    assert "up to date" in status.stdout.lower() or status.stdout.strip() == "", status.stdout
    assert any((ws / ".dvc-remote").rglob("*")), "pushed to the local DVC remote"


def test_round_one_runs_the_whole_pipeline(ws, v0_checksum, policy):
    res = serm(ws, "evolve", "--policy", policy)
    out = res.stdout
    for needle in ("[ingest]", "[drift]", "[mine]", "[annotate]", "[check]", "[evaluate]", "Round 1 summary",
                   "kfp.local run finished"):
        assert needle in out, needle
    rdir = ws / "data" / "rounds" / "r0001"
    for name in ("events.parquet", "quarantine.parquet", "drift.html", "drift.json", "candidates.parquet",
                 "votes.parquet", "labels.parquet", "label_checks.json", "metrics.json", "manifest.json",
                 "report.html"):
        assert (rdir / name).exists(), name
    man = json.loads((rdir / "manifest.json").read_text())
    assert all(man["stages"][s]["status"] == "done" for s in ("ingest", "drift", "mine", "annotate", "check",
                                                               "train", "evaluate", "promote"))
    assert man["promoted"] is True and man["tag"] == "serm-model@v1.0.0"
    # candidate − production per test set, paired over the set's queries, reaches the decision
    paired = json.loads((rdir / "metrics.json").read_text())["paired"]
    assert set(paired) == {"static", "evolving"} and all(0 < c["p_value"] <= 1 for c in paired.values())
    assert paired["evolving"]["queries"] >= 5 and "evolving paired p=" in man["reason"]
    assert "serm-model@v1.0.0" in git(ws, "tag")
    assert Workspace.at(ws).state()["next_batch"] == 2
    assert not (ws / ".serm" / "rounds" / "r0001").exists(), "staging is cleaned after the commit"
    # The agreement thresholds were chosen on labelled seed pairs, measured on the candidates,
    # and the labels were decided by them.
    report = json.loads((rdir / "annotation_report.json").read_text())
    tuning, used = report["agreement_tuning"], report["agreement_used"]
    assert tuning["tuned"] and 20 <= tuning["pairs"] <= 60 and tuning["estimate"].startswith("candidates")
    assert used == tuning["chosen"]
    assert tuning["measured"]["escalation"] == pytest.approx(report["escalation_rate"], abs=1e-3) \
        or report["human_resolved"] > 0
    labels = pd_read(rdir / "labels.parquet")
    accepted = labels[labels.status == "accepted"]
    assert (accepted.agreement >= used["inter_min_agreement"]).all()


def test_reviewers_resolve_escalations_between_rounds(ws, tmp_path):
    import pandas as pd

    from serm.annotation import escalations
    from serm.data import xquad

    queue = escalations.read_queue(ws / "data")
    assert len(queue) > 0, "round 1 left open escalations (no simulated reviewer here)"
    out = tmp_path / "review.csv"
    serm(ws, "escalations", "export", "--format", "csv", "--out", str(out))
    review = pd.read_csv(out, dtype=str, keep_default_na=False)
    gold = xquad.gold_pairs()
    review.loc[0, "grade"] = "3" if (review.query_id[0], review.doc_id[0]) in gold else "0"
    review.to_csv(out, index=False)
    head = git(ws, "rev-parse", "HEAD")
    res = serm(ws, "escalations", "import", str(out))
    assert "imported 1 grade(s)" in res.stdout
    assert git(ws, "rev-parse", "HEAD^") == head and git(ws, "status", "--porcelain", "--", "data.dvc") == ""
    assert len(escalations.read_queue(ws / "data")) == len(queue) - 1


def test_round_two_evolves_on_the_next_batch(ws, policy):
    from serm.annotation import escalations

    res = serm(ws, "evolve", "--policy", policy, "--in-process")   # the same stages without kfp.local (round 1 used it)
    assert "stream batch 2" in res.stdout and "(de)" in res.stdout and "in this process" in res.stdout
    assert "agreement tuned on" in res.stdout          # the annotate stage says what it chose, and on what
    # Production (v1) was round 1's candidate: its scores on the unchanged static test come back
    # from the score cache; only the new evolving test (de) and the candidate are scored.
    prod = re.search(r"\[evaluate\] production: (\d+) pair\(s\) scored, (\d+) from the score cache", res.stdout)
    cand = re.search(r"\[evaluate\] candidate: (\d+) pair\(s\) scored, 0 from the score cache", res.stdout)
    assert prod and cand and int(prod.group(2)) > 0 and int(prod.group(1)) < int(cand.group(1)), res.stdout[-3000:]
    # The reviewer's grade from between the rounds is trained on in round 2, and marked so.
    resolved = escalations.read_resolved(ws / "data")
    assert resolved["trained_round"].tolist() == [2]
    labels = pd_read(ws / "data" / "labels" / "r0002.parquet")
    key = (resolved.query_id[0], resolved.doc_id[0])
    assert key in set(zip(labels.query_id, labels.doc_id))
    assert labels.set_index(["query_id", "doc_id"]).loc[key, "status"] == "human"
    ledger = json.loads((ws / "data" / "rounds" / "r0002" / "cost_ledger.json").read_text())
    assert {"lexical", "embedding", "click_evidence"} <= set(ledger["agents"])
    # The learned lexical cut was fitted on the seed set plus that reviewed pair (query text from Feast).
    seed_pairs = len(pd_read(ws / "data" / "seed" / "train.parquet"))
    votes = pd_read(ws / "data" / "rounds" / "r0002" / "votes.parquet")
    why = votes[(votes.agent == "lexical") & (votes["sample"] == 0)].rationale
    fitted = {int(m) for m in why.str.extract(r"learned on (\d+) labelled pairs")[0].dropna()}
    assert fitted == {seed_pairs + 1}, (fitted, seed_pairs)
    versions = json.loads(serm(ws, "versions", "--json").stdout)
    assert [v["version"] for v in versions["versions"]] == [0, 1, 2]
    assert versions["production"] == 2


def test_rollback_moves_the_model_keeps_the_labels_and_restores_data_on_request(ws, v0_checksum, policy):
    data_v0, model_v0 = v0_checksum
    head_before = git(ws, "rev-parse", "HEAD")
    labels = tree_checksum(ws / "data" / "labels")
    serm(ws, "rollback", "0")
    assert tree_checksum(ws / "data" / "model") == model_v0, "v0's model byte for byte"
    assert tree_checksum(ws / "data" / "labels") == labels, "rounds 1-2's labels stay"
    assert git(ws, "rev-parse", "HEAD^") == head_before, "rollback is a new commit, history kept"
    versions = json.loads(serm(ws, "versions", "--json").stdout)
    assert versions["production"] == 0 and versions["gto"]["production"] == "serm-model@v0.0.0"
    serm(ws, "rollback", "0", "--data")
    assert tree_checksum(ws / "data") == data_v0, "--data: v0's whole data/ byte for byte"
    assert json.loads(serm(ws, "versions", "--json").stdout)["production"] == 0


def test_second_writer_is_refused(ws, policy):
    with Workspace.at(ws).lock():
        res = serm(ws, "evolve", "--policy", policy, check=False)
    assert res.returncode == 3
    assert "busy" in res.stderr and "--wait" in res.stderr


def test_malformed_policy_stops_before_anything_runs(ws, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("budget: 24", "budget: lots"))
    head = git(ws, "rev-parse", "HEAD")
    res = serm(ws, "evolve", "--policy", str(bad), check=False)
    assert res.returncode != 0 and "mining.budget" in res.stderr
    assert git(ws, "rev-parse", "HEAD") == head
