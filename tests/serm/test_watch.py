"""`serm watch` runs by itself: two log files dropped into its inbox become two batches and two
rounds, a file it cannot ingest is moved aside with its reason, nothing else can write the
workspace meanwhile, and SIGTERM stops it cleanly (exit 0)."""

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

from serm.workspace import Workspace

from tests.files_workspaces import make_files_data

ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def lines_of(proc):
    """The process's stdout lines, on a queue (read by a thread: a test never blocks on a pipe)."""
    q = queue.Queue()

    def pump():
        for line in proc.stdout:
            q.put(line.rstrip("\n"))
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def wait_for(q, seen, needle, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            line = q.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            raise AssertionError(f"serm watch exited before {needle!r}:\n" + "\n".join(seen))
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"no {needle!r} within {timeout}s:\n" + "\n".join(seen))


def test_watch_runs_two_rounds_from_its_inbox_and_stops_on_sigterm(tmp_path):
    data = make_files_data(tmp_path / "data")
    inbox = data["folder"] / "inbox"        # the policy's data.inbox, relative to the policy file
    inbox.mkdir()
    for f in data["events"][:2]:
        shutil.copy2(f, inbox / f.name)
        time.sleep(0.01)                    # oldest first: the inbox is read in mtime order
    (inbox / "truncated.jsonl").write_bytes(b"")
    (inbox / "upload.csv.part").write_text("still uploading")
    ws = tmp_path / "ws"
    proc = subprocess.Popen([sys.executable, "-m", "serm.cli", "watch", "--workspace", str(ws), "--policy",
                             str(data["policy"]), "--interval", "2s", "--in-process"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    q, seen = lines_of(proc), []
    try:
        wait_for(q, seen, "[watch] watching", 600)
        wait_for(q, seen, "round 2 (batch 2)", 900)
        # while it runs, nothing else writes the workspace
        other = subprocess.run([sys.executable, "-m", "serm.cli", "evolve", "--workspace", str(ws), "--policy",
                                str(data["policy"])], capture_output=True, text=True, env=ENV, timeout=300)
        assert other.returncode != 0 and "is busy" in other.stderr, other.stdout + other.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, proc.stderr.read()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "\n".join(seen) + "\n" + "\n".join(iter(lambda: q.get(timeout=10), None))
    assert "stopped by SIGTERM" in out
    assert out.count("[watch] ingested") == 2 and "round 1 (batch 1)" in out
    assert "[watch] refused truncated.jsonl" in out and "the file is empty" in out
    rejected = inbox / "rejected"
    assert (rejected / "truncated.jsonl").exists() and "empty" in (rejected / "truncated.jsonl.reason.txt").read_text()
    assert (inbox / "upload.csv.part").exists(), "a partial upload is left alone"
    state = Workspace.at(ws).state()
    assert state["rounds_done"] == 2 and state["next_batch"] == 3
    assert not any((ws / ".serm" / "rounds").glob("r*")), "no round was left half-done"
    assert "[round 2]" in (ws / ".serm" / "logs" / "watch.log").read_text()
