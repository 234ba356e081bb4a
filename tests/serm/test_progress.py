"""Progress of long loops: plain periodic lines off a terminal, a bar with ETA on one, silence
for short loops, and the real scorer and trainer reporting through it."""

import io
import os
import subprocess
import sys

import pandas as pd
import pytest

from serm import progress
from serm.progress import Progress

from ..conftest import ROOT


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def run_loop(monkeypatch, mode, steps=100, dt=0.5, total=1000, after="1", every="10"):
    monkeypatch.setenv("SERM_PROGRESS", mode)
    monkeypatch.setenv("SERM_PROGRESS_AFTER", after)
    monkeypatch.setenv("SERM_PROGRESS_EVERY", every)
    clock, buf = Clock(), io.StringIO()
    with progress.stage("mine"), Progress(total, "scoring", "pairs", stream=buf, clock=clock) as bar:
        for _ in range(steps):
            clock.t += dt
            bar.update(total // steps)
    return buf.getvalue()


def test_plain_lines_carry_rate_and_eta(monkeypatch):
    out = run_loop(monkeypatch, "lines").splitlines()
    assert out[0] == "[mine] scoring: 20/1,000 pairs (2%), 20.0 pairs/s, elapsed 1s, ETA 49s"
    assert out[1].startswith("[mine] scoring: 220/1,000 pairs (22%)"), "then one line per SERM_PROGRESS_EVERY"
    assert len(out) == 6 and out[-1] == "[mine] scoring: 1,000/1,000 pairs done in 50s"


def test_short_loops_and_off_are_silent(monkeypatch):
    assert run_loop(monkeypatch, "lines", dt=0.001) == ""
    assert run_loop(monkeypatch, "off") == ""


def test_bar_on_a_terminal_shows_eta(monkeypatch):
    out = run_loop(monkeypatch, "bar")
    assert "[mine] scoring" in out and "pairs/s" in out and "<" in out, out[-300:]


def test_auto_picks_bar_on_a_tty_and_lines_off_it():
    import pty

    code = ("import sys; from serm import progress; "
            "print(progress.mode(), file=sys.stderr)")
    env = {**os.environ, "SERM_PROGRESS": "auto"}
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert off.stderr.strip() == "lines"
    pid, fd = pty.fork()
    if pid == 0:   # the child: stderr is the pty
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "-c", code], env)
    chunks = []
    while True:
        try:
            data = os.read(fd, 1024)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.waitpid(pid, 0)
    assert b"bar" in b"".join(chunks)


@pytest.mark.parametrize("what", ["score", "train"])
def test_the_scorer_and_trainer_report_progress(monkeypatch, capsys, what):
    from serm.model.cross_encoder import RelevanceModel
    from serm.model.training import train
    from serm.policy import ModelSpec, TrainingSpec

    monkeypatch.setenv("SERM_PROGRESS", "lines")
    monkeypatch.setenv("SERM_PROGRESS_AFTER", "0")
    monkeypatch.setenv("SERM_PROGRESS_EVERY", "0.000001")
    model = RelevanceModel.load("builtin:minilm-l6", ModelSpec(max_length=32, window_words=16, batch_size=8),
                                device="cpu")
    frame = pd.DataFrame({"query": [f"query {i}" for i in range(40)], "doc_title": ["t"] * 40,
                          "doc_text": [f"some document text {i}" for i in range(40)], "grade": [i % 4 for i in range(40)]})
    if what == "score":
        with progress.stage("evaluate"):
            model.score_frame(frame)
        err = capsys.readouterr().err
        assert "[evaluate] scoring: 8/40 pairs (20%)" in err and "ETA" in err
        assert "[evaluate] scoring: 40/40 pairs done in" in err
    else:
        train(model, frame, TrainingSpec(epochs=1, batch_size=8, validation_share=0.0), seed=1, log=lambda m: None)
        err = capsys.readouterr().err
        assert "training epoch 1/1: 8/40 pairs" in err and "ETA" in err


def test_a_broken_stderr_turns_progress_off_not_the_work(monkeypatch):
    class Broken(io.StringIO):
        def write(self, s):
            raise BrokenPipeError("stderr closed")

    monkeypatch.setenv("SERM_PROGRESS", "lines")
    monkeypatch.setenv("SERM_PROGRESS_AFTER", "0")
    clock = Clock()
    with Progress(10, "scoring", "pairs", stream=Broken(), clock=clock) as bar:
        for _ in range(10):
            clock.t += 1
            bar.update(1)
    assert bar.mode == "off" and bar.done == 10
