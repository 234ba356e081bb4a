"""Two writers on one workspace, for real: `serm evolve` processes racing for the workspace lock.

A second `serm evolve` refuses with exit 3 and a clear message while the first runs; with
`--wait` it blocks until the first has committed, then runs the next round on top of that
commit. The history shows the rounds one after the other, each commit's data.dvc the whole of
one round, never a mix. Rounds here do not fire the drift trigger (ingest + drift + commit), so
the test costs seconds per round.
"""

import json
import time

from serm import versioning
from serm.workspace import Workspace

from tests.reliability_workspaces import Run, git, initialised_copy, policies, serm


def test_second_writer_waits_then_runs_after_the_first_commit(tmp_path_factory):
    ws = initialised_copy(tmp_path_factory, "concurrency")
    quiet = str(policies(tmp_path_factory)["quiet"])
    head0 = git(ws, "rev-parse", "HEAD")

    first = Run(ws, "evolve", "--policy", quiet)
    first.wait_for("[round 1] starting")            # the first holds the lock from here on
    holder = (ws / ".serm" / "lock").read_text()
    assert holder == f"pid {first.proc.pid}", holder

    refused = serm(ws, "evolve", "--policy", quiet, check=False, timeout=300)
    assert refused.returncode == 3, refused.stderr
    assert f"workspace {ws} is busy (pid {first.proc.pid})" in refused.stderr and "--wait" in refused.stderr
    assert "Traceback" not in refused.stderr

    second = Run(ws, "evolve", "--wait", "--policy", quiet)
    time.sleep(3)
    assert second.proc.poll() is None and not [s for s in second.lines if s.startswith("[round")], \
        "the waiting writer does nothing while the first holds the lock"
    assert first.finish() == 0, first.text[-3000:]
    second.wait_for("[round 2] starting")   # only now: the lock held it until the first finished
    assert second.finish() == 0, second.text[-3000:]

    # The second round started from the first's commit: its manifest records that base, and
    # the history is base -> round 1 -> round 2 with nothing in between.
    log = git(ws, "log", "--format=%H %s", f"{head0}..HEAD").splitlines()[::-1]
    subjects = [line.split(" ", 1)[1] for line in log]
    assert len(log) == 2 and subjects[0].startswith("serm: round 1 kept v0 (no trigger") \
        and subjects[1].startswith("serm: round 2 kept v0 (no trigger"), subjects
    round1_commit = log[0].split()[0]
    man1 = json.loads((ws / "data" / "rounds" / "r0001" / "manifest.json").read_text())
    man2 = json.loads((ws / "data" / "rounds" / "r0002" / "manifest.json").read_text())
    assert man1["base"] == head0 and man2["base"] == round1_commit, "round 2 started on top of round 1's commit"
    assert man1["finished"] <= man2["started"], "round 2 began after round 1 was finished"
    # Each commit holds exactly its round: round 1's commit has no trace of round 2.
    w = Workspace.at(ws)
    assert versioning.clean(w) and w.state()["rounds_done"] == 2
    from dvc.api import DVCFileSystem

    for rev, rounds in ((round1_commit, ["r0001"]), ("HEAD", ["r0001", "r0002"])):
        fs = DVCFileSystem(str(ws), rev=rev)
        try:
            assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls("data/rounds", detail=False)) == rounds, rev
        finally:
            fs.close()
    assert not (ws / ".serm" / "lock").read_text(), "the lock file is cleared when released"
