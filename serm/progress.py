"""Progress of the long loops (scoring, training epochs): a bar with rate and ETA when stderr is
a terminal, plain periodic lines when it is not, so CI logs and `kfp.local` logs stay readable.

    with progress.stage("mine"):                     # names what the loops below belong to
        with progress.Progress(len(pairs), "scoring", "pairs") as bar:
            for batch in batches:
                ...
                bar.update(len(batch))

Nothing is shown for a loop that ends within `SERM_PROGRESS_AFTER` seconds (default 3), so
short calls (tests, a handful of pairs) stay silent. `SERM_PROGRESS` = `auto` (default: bar on
a terminal, lines otherwise), `bar`, `lines` or `off`; `SERM_PROGRESS_EVERY` = seconds between
plain lines (default 30). Everything goes to stderr: stdout stays for results (`--json`).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import time

_STAGE: contextvars.ContextVar[str | None] = contextvars.ContextVar("serm_progress_stage", default=None)


@contextlib.contextmanager
def stage(name: str):
    """Label the progress of the loops run inside (`[mine] scoring …`)."""
    token = _STAGE.set(name)
    try:
        yield
    finally:
        _STAGE.reset(token)


def mode() -> str:
    m = os.environ.get("SERM_PROGRESS", "auto").strip().lower()
    if m not in ("auto", "bar", "lines", "off"):
        m = "auto"
    if sys.stderr is None:   # no stderr at all (a daemon, pythonw): nothing to show
        return "off"
    if m == "auto":
        return "bar" if sys.stderr.isatty() else "lines"
    return m


def _float_env(name: str, default: float) -> float:
    try:
        return max(0.0, float(os.environ.get(name, default)))
    except ValueError:
        return default


def eta(seconds: float) -> str:
    seconds = int(max(0, round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """`total` units of work; `update(n)` as they finish. A context manager (closes the bar)."""

    def __init__(self, total: int, what: str, unit: str = "items", stream=None, clock=time.monotonic):
        self.total, self.what, self.unit = int(total), what, unit
        self.stream = stream or sys.stderr
        self.clock = clock
        self.mode = mode()
        self.after = _float_env("SERM_PROGRESS_AFTER", 3.0)
        self.every = _float_env("SERM_PROGRESS_EVERY", 30.0) or 30.0
        self.done = 0
        self.t0 = clock()
        self._next_line = self.t0 + max(self.after, 0.0)
        self._bar = None
        self.lines = 0
        prefix = _STAGE.get()
        self.label = f"[{prefix}] {what}" if prefix else what

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.mode == "off" or self.total <= 0:
            return
        now = self.clock()
        if self.mode == "bar":
            if self._bar is None and now - self.t0 >= self.after:
                self._open_bar()
            if self._bar is not None:
                self._bar.update(self.done - self._bar.n)
            return
        if now >= self._next_line and self.done < self.total:
            self._write(self.line(now))
            self.lines += 1
            self._next_line = now + self.every

    def _write(self, text: str) -> None:
        """A closed or broken stderr turns progress off; it never stops the work it reports on."""
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            self.mode = "off"

    def line(self, now: float | None = None) -> str:
        elapsed = (now if now is not None else self.clock()) - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        share = self.done / self.total if self.total else 1.0
        return (f"{self.label}: {self.done:,}/{self.total:,} {self.unit} ({share:.0%}), "
                f"{rate:,.1f} {self.unit}/s, elapsed {eta(elapsed)}, ETA {eta(left) if left == left else '?'}")

    def _open_bar(self) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=self.total, desc=self.label, unit=f" {self.unit}", file=self.stream, leave=False,
                         dynamic_ncols=True, mininterval=0.5, initial=0)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.update(self.done - self._bar.n)
            self._bar.close()
            self._bar = None
        elif self.mode == "lines" and self.lines:
            elapsed = self.clock() - self.t0
            self._write(f"{self.label}: {self.done:,}/{self.total:,} {self.unit} done in {eta(elapsed)}")
