"""Soak: 20 consecutive rounds of the tiny policy with `versioning.retention: {keep_last: 3}`,
each a real `serm evolve --force --in-process` subprocess (`benchmarks/soak.py`), checking that
running for long does not grow what it must not: round time and peak memory stay flat, and with
retention the versions holding files and the disk stay bounded.

Slow (`-m slow`): about 15 minutes on 2 cores."""

import json
import sys

import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.slow

ROUNDS = 20
KEEP_LAST = 3


def test_twenty_rounds_time_memory_and_disk_stay_flat(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import soak

    assert soak.main(["--rounds", str(ROUNDS), "--only", "retention", "--retention", f"keep_last={KEEP_LAST}",
                      "--out", str(tmp_path)]) == 0
    result = json.loads(next(tmp_path.glob("soak-*.json")).read_text())
    run = result["runs"][0]
    rounds = run["rounds"]
    assert len(rounds) == ROUNDS
    g = run["growth"]
    # Time: rounds vary with their batch (locale, mined pairs); a per-round slope above 1% of the
    # early rounds' time would add 20% over 20 rounds, and that is what a history-wide re-read shows.
    assert g["wall_s"]["share_of_early_per_round"] < 0.01, g["wall_s"]
    # Peak RSS follows the batch (±100 MB round to round); accumulation would show as a slope.
    assert g["peak_rss_mb"]["share_of_early_per_round"] < 0.005, g["peak_rss_mb"]
    # Retention: production + the version before it + the newest 3 (they overlap) hold files,
    # and gc frees the rest every round, so disk grows only by each round's own small files.
    assert max(r["versions_with_files"] for r in rounds) <= KEEP_LAST + 1
    assert rounds[-1]["versions"] > KEEP_LAST + 5, "rounds promoted versions (the gate is open)"
    assert g["disk_mb"]["per_round"] < 3.0, g["disk_mb"]
    assert (ROOT / "benchmarks" / "soak.py").exists() and next(tmp_path.glob("soak-*.png")).stat().st_size > 10_000
