"""Crash safety, for real: `serm evolve` is killed with SIGKILL (its whole process group, the
kfp.local component processes included) inside each stage of a round; after every kill the
committed state (HEAD, tags, data.dvc) is untouched, and once the next command has recovered,
`data/`, the production model, data.dvc, versions.json, the tags and the DVC cache are
byte-identical to before the round (checksums). The next `serm evolve` resumes the round,
reusing the stages that finished, and completes it.

Default: a kill inside the commit of a round (between `dvc add` and `git commit`), and the two
states a kill can leave that are too brief to hit by timing (index staged, commit without tag),
made with real git/DVC commands. Slow (`-m slow`): a kill in every stage of a pipeline round.
"""

import pytest

from serm import round as rounds, versioning
from serm.schema import RoundManifest, WorkspaceLayout
from serm.workspace import Workspace

from tests.reliability_workspaces import Run, committed, diff, git, initialised_copy, policies, serm, snapshot

PIPELINE_KILLS = [            # (stage, the line it prints once it is under way)
    ("mine", "[mine] started"),
    ("annotate", "[annotate] started"),
    ("check", "[check] started"),
    ("train", "[train] fine-tuning"),
    ("evaluate", "[evaluate] started"),
    ("promote", "[promote] moving round"),            # data/ is being rewritten
    ("promote", "[version] dvc add + push"),          # data/ rewritten, DVC cache written, no commit yet
]


def kill_at(ws, policy, marker):
    run = Run(ws, "evolve", "--policy", str(policy))
    run.wait_for(marker)
    run.kill()
    return run


def assert_recovered(ws, policy, before):
    """Committed state untouched right after the kill; everything identical after recovery
    (`serm init` on an initialised workspace recovers and changes nothing else)."""
    assert not diff(committed(ws), before), diff(committed(ws), before)
    res = serm(ws, "init", "--policy", str(policy))
    after = snapshot(ws)
    assert not diff(before, after), f"changed after recovery: {diff(before, after)}"
    assert versioning.clean(Workspace.at(ws))
    return res.stdout


def test_kill_inside_the_commit_leaves_production_untouched(tmp_path_factory):
    ws = initialised_copy(tmp_path_factory, "crash-commit")
    quiet = policies(tmp_path_factory)["quiet"]
    before = snapshot(ws)
    run = kill_at(ws, quiet, "[version] dvc add + push")
    assert "[ingest] started" in run.text and "[drift] trigger: no" in run.text
    recovered = assert_recovered(ws, quiet, before)
    assert "[recover] data/ differs from data.dvc" in recovered, "the kill left data/ half-written: undone"
    res = serm(ws, "evolve", "--policy", str(quiet))
    assert "[ingest] already done in this round" in res.stdout and "[drift] already done" in res.stdout
    assert git(ws, "log", "--format=%s").count("serm: round 1 kept v0") == 1
    assert Workspace.at(ws).state()["rounds_done"] == 1
    assert not (ws / ".serm" / "rounds" / "r0001").exists()


def test_recover_undoes_a_staged_but_uncommitted_version(tmp_path_factory):
    """The state a kill between `git add` and `git commit` leaves: new data/ added to DVC,
    data.dvc and versions.json staged. A checkout from the index would keep them."""
    ws = initialised_copy(tmp_path_factory, "crash-staged")
    before = snapshot(ws)
    w = Workspace.at(ws)
    (ws / "data" / "model" / "metrics.json").write_text('{"half": "promoted"}\n')
    (ws / "data" / "rounds" / "r0001").mkdir(parents=True)
    (ws / "data" / "rounds" / "r0001" / "new.txt").write_text("an interrupted round's output\n")
    (ws / "versions.json").write_text((ws / "versions.json").read_text().replace('"production": 0', '"production": 1'))
    with versioning.quiet():
        versioning.dvc_repo(w).add(str(w.data))
    git(ws, "add", "data.dvc", "versions.json")
    assert git(ws, "diff", "--cached", "--name-only") == "data.dvc\nversions.json"
    assert snapshot(ws)["dvc_cache"] != before["dvc_cache"], "dvc add wrote new cache objects"
    lines = []
    rounds.recover(w, lines.append)
    assert any("uncommitted version files" in s for s in lines) and any("cache object(s)" in s for s in lines), lines
    assert not diff(before, snapshot(ws)), diff(before, snapshot(ws))
    assert git(ws, "status", "--porcelain", "--", "data.dvc", "versions.json") == ""


def test_recover_tags_a_commit_whose_tag_was_never_written(tmp_path_factory):
    ws = initialised_copy(tmp_path_factory, "crash-tag")
    before = snapshot(ws)
    target = git(ws, "rev-list", "-n1", "serm-model@v0.0.0")
    git(ws, "tag", "-d", "serm-model@v0.0.0")
    lines = []
    rounds.recover(Workspace.at(ws), lines.append)
    assert git(ws, "rev-list", "-n1", "serm-model@v0.0.0") == target
    assert any("tagged it serm-model@v0.0.0" in s for s in lines), lines
    assert diff(before, snapshot(ws)) == ["tags"], "only the tag object is new"
    rounds.recover(Workspace.at(ws), lines.append)
    assert sum("tagged it" in s for s in lines) == 1, "recovery is idempotent"


@pytest.mark.slow
def test_kill_in_every_stage_then_resume(tmp_path_factory):
    """One pipeline round, killed seven times (each stage, promote twice); each run resumes
    where the last one died and the eighth completes the round."""
    ws = initialised_copy(tmp_path_factory, "crash-stages")
    policy = policies(tmp_path_factory)["pipeline"]
    before = snapshot(ws)
    runs = []
    for i, (stage, marker) in enumerate(PIPELINE_KILLS):
        run = kill_at(ws, policy, marker)
        runs.append(run)
        if i:   # the stages that finished before the last kill are reused, the killed one runs again
            for s in ["ingest", "drift", *[s for s, _ in PIPELINE_KILLS[:i - 1] if s != stage]]:
                assert f"[{s}] already done in this round" in run.text, (stage, s, run.text[-3000:])
            killed = PIPELINE_KILLS[i - 1][0]
            assert f"[{killed}] started" in run.text or killed == stage, (killed, run.text[-3000:])
        recovered = assert_recovered(ws, policy, before)
        if stage != "promote":
            assert "[recover]" not in recovered, (stage, recovered)   # data/ was never touched
        man = RoundManifest.load(WorkspaceLayout(ws).round(1).manifest)
        assert man.entry(stage).status in ("running", "done"), (stage, man.entry(stage))
    final = Run(ws, "evolve", "--policy", str(policy))
    assert final.finish() == 0, final.text[-4000:]
    for s in ("ingest", "drift", "mine", "annotate", "check", "train", "evaluate"):
        assert f"[{s}] already done in this round" in final.text, s
    w = Workspace.at(ws)
    assert w.state()["rounds_done"] == 1 and w.state()["production"] == 1
    assert "serm-model@v1.0.0" in git(ws, "tag")
    assert git(ws, "log", "--format=%s").count("serm: round 1 promoted v1") == 1
    assert versioning.clean(w)
    man = (ws / "data" / "rounds" / "r0001" / "manifest.json").read_text()
    assert '"promoted": true' in man
