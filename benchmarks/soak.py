"""Soak: many consecutive rounds of a test-sized policy in a temporary workspace, measuring
what running for months would show first — round time, peak memory and disk per round.

Each round is one real `serm evolve --force` subprocess (every round runs the whole pipeline,
and with the tiny policy's open promotion gate nearly every round adds a version: the worst
case for disk). Per round it records the wall time, the peak RSS of that process and its
children (`os.wait4`), and the disk of the DVC cache, the DVC remote, `data/`, `.serm/` and
`.git/`. Growth is a least-squares slope over rounds 2..N, stated per round and as a share of
the early rounds' level; a run with `versioning.retention` is measured beside one without.

    .venv/bin/python benchmarks/soak.py                          # 20 rounds, with and without retention
    .venv/bin/python benchmarks/soak.py --rounds 5 --only retention --kfp   # through kfp.local

Writes `benchmarks/results/soak-<UTC>.json` and `.png` (or `--out DIR`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "policies" / "tiny.yaml"
PARTS = {"dvc_cache": ".dvc/cache", "dvc_remote": ".dvc-remote", "data": "data", "serm": ".serm", "git": ".git"}


def env() -> dict:
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1"}


def write_policy(path: Path, retention: dict | None) -> Path:
    import yaml

    raw = yaml.safe_load(TINY.read_text())
    raw["name"] = path.stem
    raw.setdefault("checks", {})["max_grade_kl"] = 50.0   # tiny batches: a label gate is not what this measures
    if retention:
        raw["versioning"] = {"retention": retention}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def du(path: Path) -> int:
    """Bytes of the files under `path` (each hard-linked inode once)."""
    seen, total = set(), 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def disk(ws: Path) -> dict:
    out = {k: du(ws / v) for k, v in PARTS.items()}
    out["total"] = du(ws)
    return out


def run_serm(ws: Path, *args: str, log: Path) -> tuple[float, int, int]:
    """(wall seconds, peak RSS bytes of the process tree, exit status) of one `serm` command."""
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "serm.cli", *args, "--workspace", str(ws)],
                                stdout=fh, stderr=subprocess.STDOUT, env=env(), cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, usage.ru_maxrss * 1024, proc.returncode


def soak(rounds: int, retention: dict | None, workdir: Path, kfp: bool = False, echo=print) -> dict:
    """`rounds` rounds in a fresh workspace under `workdir`; per-round records."""
    name = "retention" if retention else "no_retention"
    ws = workdir / name
    policy = write_policy(workdir / f"soak-{name}.yaml", retention)
    log = workdir / f"{name}.log"
    wall, rss, rc = run_serm(ws, "init", "--policy", str(policy), log=log)
    if rc:
        raise SystemExit(f"serm init failed ({rc}); see {log}")
    init = {"wall_s": round(wall, 1), "peak_rss_mb": round(rss / 2**20, 1), "disk": disk(ws)}
    echo(f"[{name}] init {wall:.0f}s, peak RSS {rss / 2**20:.0f} MB, disk {init['disk']['total'] / 1e6:.0f} MB")
    records = []
    for r in range(1, rounds + 1):
        args = ["evolve", "--force", "--policy", str(policy)] + ([] if kfp else ["--in-process"])
        wall, rss, rc = run_serm(ws, *args, log=log)
        if rc:
            raise SystemExit(f"[{name}] round {r} failed ({rc}); see {log}")
        d = disk(ws)
        versions = json.loads((ws / "versions.json").read_text())["versions"]
        rec = {"round": r, "wall_s": round(wall, 2), "peak_rss_mb": round(rss / 2**20, 1), "disk": d,
               "versions": len(versions), "versions_with_files": sum(not v.get("removed") for v in versions)}
        records.append(rec)
        echo(f"[{name}] round {r:>2}: {wall:6.1f}s  peak RSS {rec['peak_rss_mb']:7.0f} MB  disk {d['total'] / 1e6:7.0f} MB"
             f" (cache {d['dvc_cache'] / 1e6:.0f}, remote {d['dvc_remote'] / 1e6:.0f}, data {d['data'] / 1e6:.0f},"
             f" .serm {d['serm'] / 1e6:.0f}, git {d['git'] / 1e6:.1f})  versions {rec['versions_with_files']}/"
             f"{rec['versions']} with files")
    return {"name": name, "retention": retention, "init": init, "rounds": records, "growth": growth(records)}


def slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


def growth(records: list[dict]) -> dict:
    """Least-squares slope per round over rounds 2..N (round 1 pays first-use costs), and that
    slope as a share of the median of rounds 2..6."""
    rest = records[1:] or records
    xs = [r["round"] for r in rest]
    out = {}
    for key, get in (("wall_s", lambda r: r["wall_s"]), ("peak_rss_mb", lambda r: r["peak_rss_mb"]),
                     ("disk_mb", lambda r: r["disk"]["total"] / 1e6)):
        ys = [get(r) for r in rest]
        early = sorted(ys[:5])[len(ys[:5]) // 2]
        s = slope(xs, ys)
        out[key] = {"per_round": round(s, 3), "share_of_early_per_round": round(s / early, 4) if early else None,
                    "first": round(ys[0], 2), "last": round(ys[-1], 2)}
    return out


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for run in runs:
        xs = [r["round"] for r in run["rounds"]]
        label = "retention " + ", ".join(f"{k}={v}" for k, v in run["retention"].items()) if run["retention"] \
            else "no retention"
        axes[0].plot(xs, [r["wall_s"] for r in run["rounds"]], marker="o", label=label)
        axes[1].plot(xs, [r["peak_rss_mb"] for r in run["rounds"]], marker="o", label=label)
        axes[2].plot(xs, [r["disk"]["total"] / 1e6 for r in run["rounds"]], marker="o", label=label)
    for ax, title in zip(axes, ("round wall time (s)", "peak RSS of the round (MB)", "workspace disk (MB)")):
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_retention(text: str) -> dict:
    out = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        out[key.strip()] = int(value) if value.strip().isdigit() else value.strip()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--retention", default="keep_last=3", help="the retained run's versioning.retention "
                    "(e.g. keep_last=3 or keep_last=5,keep_within=1d)")
    ap.add_argument("--only", choices=["retention", "no_retention"], help="one run instead of both")
    ap.add_argument("--kfp", action="store_true", help="rounds through kfp.local (default: in-process stages)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary workspaces (printed)")
    args = ap.parse_args(argv)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    workdir = Path(tempfile.mkdtemp(prefix="serm-soak-"))
    configs = [("retention", parse_retention(args.retention)), ("no_retention", None)]
    runs = []
    t0 = time.perf_counter()
    try:
        for name, spec in configs:
            if args.only in (None, name):
                runs.append(soak(args.rounds, spec, workdir, kfp=args.kfp))
    finally:
        if args.keep:
            print(f"workspaces kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"created": stamp, "rounds": args.rounds, "runner": "kfp.local" if args.kfp else "in-process",
              "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
              "wall_s": round(time.perf_counter() - t0), "runs": runs,
              "command": "benchmarks/soak.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    (out / f"soak-{stamp}.json").write_text(json.dumps(result, indent=2))
    plot(runs, out / f"soak-{stamp}.png")
    print()
    print(f"{'run':<14}{'round 2 → N: time/round':>26}{'peak RSS/round':>18}{'disk/round':>14}{'disk at N':>12}")
    for run in runs:
        g = run["growth"]
        print(f"{run['name']:<14}{g['wall_s']['per_round']:>+20.2f} s ({g['wall_s']['share_of_early_per_round']:+.1%})"
              f"{g['peak_rss_mb']['per_round']:>+12.1f} MB{g['disk_mb']['per_round']:>+11.1f} MB"
              f"{run['rounds'][-1]['disk']['total'] / 1e6:>9.0f} MB")
    print(f"wrote {out / f'soak-{stamp}.json'} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
