"""Temporary SERM workspaces for the reliability tests (crash, concurrency, rollback, cluster).

`serm init` trains the seed model (a minute on 2 cores), so one initialised workspace is made
per test session and each test works on its own copy (a workspace is a plain folder: git, DVC
cache and remote, Feast state; Feast re-applies its registry in a copy). Commands run as real
`serm` subprocesses; `Run` streams one's output so a test can act on a line (kill it there).
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from serm.versioning import tree_checksum

from .conftest import ROOT

TINY = ROOT / "tests" / "policies" / "tiny.yaml"


def write_policy(path: Path, **sections) -> Path:
    """tests/policies/tiny.yaml with three stream batches (es, de, tr) and a label-distribution
    gate that tiny batches pass (these tests are about failures of the machine, not of labels);
    `sections` update top-level sections (one level deep)."""
    raw = yaml.safe_load(TINY.read_text())
    raw["name"] = path.stem
    raw["data"]["stream_locales"] = ["es", "de", "tr"]
    raw.setdefault("checks", {})["max_grade_kl"] = 50.0
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def policies(tmp_path_factory) -> dict[str, Path]:
    """`pipeline`: every round runs the KFP pipeline; `quiet`: the drift trigger never fires, so
    a round is ingest + drift + a commit (seconds, not minutes)."""
    base = tmp_path_factory.getbasetemp() / "serm-policies"
    base.mkdir(exist_ok=True)
    return {"pipeline": write_policy(base / "reliability.yaml"),
            "quiet": write_policy(base / "quiet.yaml", drift={"trigger": {"mode": "any", "min_new_pairs": 10**9}})}


def initialised_copy(tmp_path_factory, name: str) -> Path:
    """A copy of the session's initialised workspace (made on first use)."""
    template = tmp_path_factory.getbasetemp() / "serm-template"
    if not (template / "versions.json").exists():
        shutil.rmtree(template, ignore_errors=True)
        template.mkdir()
        serm(template, "init", "--policy", str(policies(tmp_path_factory)["pipeline"]), timeout=900)
    dst = tmp_path_factory.mktemp(name) / "ws"
    shutil.copytree(template, dst, symlinks=True)
    return dst


def env() -> dict[str, str]:
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def serm(ws: Path, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "serm.cli", *args, "--workspace", str(ws)],
                         capture_output=True, text=True, env=env(), timeout=timeout, cwd=ROOT)
    if check and res.returncode != 0:
        raise AssertionError(f"serm {' '.join(args)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n"
                             f"{res.stderr[-4000:]}")
    return res


class Run:
    """A `serm` command in its own process group (kfp.local runs each component as a child
    process: a kill must reach them all), its merged output read line by line."""

    def __init__(self, ws: Path, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "serm.cli", *args, "--workspace", str(ws)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(),
                                     cwd=ROOT, start_new_session=True, bufsize=1)
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, marker: str, timeout: float = 900) -> str:
        """Block until a line contains `marker`; fail when the command ends or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {marker!r} within {timeout}s:\n" + self.text[-4000:]) from None
            if line is None:
                self._q.put(None)
                raise AssertionError(f"the command ended (rc {self.proc.wait()}) before printing {marker!r}:\n"
                                     + self.text[-6000:])
            self.lines.append(line)
            if marker in line:
                return line

    def kill(self) -> None:
        """SIGKILL the whole process group: no handler, no clean-up, as a power cut would."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)
        self._drain(5)

    def finish(self, timeout: float = 900) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._drain(30)
        return rc

    def _drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._q.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                self._q.put(None)
                return
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=ws, capture_output=True, text=True, check=True).stdout.strip()


def snapshot(ws: Path) -> dict[str, str]:
    """What must survive any failure unchanged: the production model and all of `data/`
    (checksums), `data.dvc` as committed and as on disk, versions.json, HEAD, every tag and the
    object it names, and the DVC cache (checksum over every object)."""
    return {"model": tree_checksum(ws / "data" / "model"), "data": tree_checksum(ws / "data"),
            "data.dvc": (ws / "data.dvc").read_text(), "data.dvc@HEAD": git(ws, "show", "HEAD:data.dvc"),
            "versions.json": hashlib.sha256((ws / "versions.json").read_bytes()).hexdigest(),
            "HEAD": git(ws, "rev-parse", "HEAD"), "tags": git(ws, "show-ref", "--tags"),
            "dvc_cache": tree_checksum(ws / ".dvc" / "cache")}


def committed(ws: Path) -> dict[str, str]:
    """The part of `snapshot` a kill cannot touch even before recovery runs (git's records)."""
    return {"data.dvc@HEAD": git(ws, "show", "HEAD:data.dvc"), "HEAD": git(ws, "rev-parse", "HEAD"),
            "tags": git(ws, "show-ref", "--tags")}


def diff(before: dict, after: dict) -> list[str]:
    return [k for k in before if before[k] != after.get(k)]
