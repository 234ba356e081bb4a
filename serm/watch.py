"""`serm watch`: evolution that runs by itself on a `files` source.

A long-running loop over the inbox folder: new log files → `serm ingest` → one round per
pending batch (drift → trigger → mine … promote) → sleep. It holds the workspace lock for
its whole life, so nothing else writes the workspace meanwhile and two rounds never run at
once. Each decision is one line on stdout (a file ingested or refused, a round promoted, kept
or not triggered); everything the rounds log goes to `.serm/logs/watch.log`.

SIGTERM and SIGINT stop it: while it sleeps at once, during a round by interrupting it, which
leaves production and data/ as they were; the next start (or `serm evolve`) resumes the
round where it stopped. A file that cannot be ingested is moved to `INBOX/rejected/` with a
`.reason.txt` beside it, so it is reported once, not retried every interval.
"""

from __future__ import annotations

import shutil
import signal
import time
from datetime import datetime, timezone
from pathlib import Path

from serm.errors import SermError


SETTLE_S = 5.0   # a file modified this recently may still be arriving: it waits for the next look


class Stopped(Exception):
    """SIGTERM/SIGINT arrived."""


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def watch(root, policy_path, inbox: str | None = None, interval: float = 60.0, run_pipeline=None,
          force: bool = False, once: bool = False, out=print) -> int:
    """Run until stopped (or, with `once`, for one pass over the inbox). Returns the exit code."""
    from serm import ingest
    from serm.evolve import evolve_pending, init_workspace
    from serm.policy import load_policy
    from serm.workspace import Workspace

    ws = Workspace.at(root)
    policy_path = Path(policy_path).resolve()
    policy = load_policy(policy_path)
    if policy.data.source != "files":
        raise SermError(f"the policy's data.source is {policy.data.source!r}: `serm watch` follows the inbox of a "
                        "`files` source; for a simulated stream run `serm evolve` (e.g. from cron)")
    folder = Path(inbox) if inbox else policy.resolve(policy.data.inbox) or ws.root / "inbox"
    folder.mkdir(parents=True, exist_ok=True)

    def stop(signum, _frame):
        raise Stopped(signal.Signals(signum).name)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    log_path = ws.dot / "logs" / "watch.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log_file:
        def log(msg: str) -> None:   # the rounds' and ingests' full log
            log_file.write(msg + "\n")
            log_file.flush()

        def say(msg: str) -> None:   # one line per decision, also in the log
            line = f"{_stamp()} {msg}"
            out(line)
            log(line)

        try:
            with ws.lock():
                init_workspace(ws, policy, policy_path, log)
                say(f"[watch] watching {folder} every {interval:g}s (policy {policy.name}, production "
                    f"v{ws.state()['production']}; log {log_path}); stop with SIGTERM or Ctrl-C")
                hashes: dict = {}   # the inbox files' sha256 by (name, size, mtime)
                while True:
                    _ingest_new(ws, policy, folder, ingest, log, say, hashes)
                    for outcome in evolve_pending(ws, policy, policy_path, force, log, run_pipeline):
                        say(_decision(outcome))
                    if once:
                        return 0
                    time.sleep(interval)
        except Stopped as why:
            say(f"[watch] stopped by {why}; an interrupted round resumes on the next start")
            return 0
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _ingest_new(ws, policy, folder: Path, ingest, log, say, hashes: dict) -> None:
    files = ingest.inbox_files(folder, ingest.read_index(ws.layout), hashes, settle_s=SETTLE_S)
    if not files:
        return
    try:
        result = ingest.ingest(ws, policy, files, log=log)
    except SermError as exc:   # nothing in them could be ingested
        result = {"files": [], "refused": [(str(f), str(exc)) for f in files], "skipped": 0}
    for f in result["files"]:
        say(f"[watch] ingested {Path(f['file']).name}: batch(es) {', '.join(map(str, f['batches']))}, "
            f"{f['events']} events, {f['quarantined']} quarantined")
    for path, why in result["refused"]:
        rejected = folder / "rejected"
        rejected.mkdir(exist_ok=True)
        target = rejected / Path(path).name
        shutil.move(path, target)
        target.with_name(target.name + ".reason.txt").write_text(why + "\n", encoding="utf-8")
        say(f"[watch] refused {Path(path).name}: moved to {target} ({why})")


def _decision(o: dict) -> str:
    if not o["evolved"]:
        what = "not triggered"
    elif o["promoted"]:
        what = f"promoted v{o['production']}"
    else:
        what = f"kept v{o['production']}"
    return f"[watch] round {o['round']} (batch {o['batch']}): {what} — {o['reason']}"
