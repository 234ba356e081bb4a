"""What `model.precision: int8` costs `serm bench`'s evaluation: time and fidelity against fp32.

The bench policies score in int8 on a CPU (evaluation, mining, the teacher's votes), because
evaluating every fixed test set after every round is most of the benchmark's wall time. This
measures that choice on the bench's own world: the seed model (trained as `serm bench` trains it)
scores every fixed test set of round 3 (the cpu preset's sizes) in fp32 and in int8, alternating,
twice each; reported per set: seconds per evaluation, NDCG@4 and accuracy in both precisions, and
int8 - fp32 paired over queries (randomization p, bootstrap 95% CI).

    .venv/bin/python benchmarks/eval_precision.py --dataset homedepot
    .venv/bin/python benchmarks/eval_precision.py --dataset xquad

Writes `benchmarks/results/eval-precision-<dataset>-<UTC>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=("xquad", "homedepot"), default="homedepot")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--homedepot", help="judgments file (default: the shared Home Depot data)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("SERM_PROGRESS", "off")
    from serm import bench
    from serm.policy import load_policy
    from serm.stats import compare_queries

    t0 = time.perf_counter()
    policy = load_policy(bench.POLICIES[a.dataset])
    sizes = bench.SIZES[a.preset][a.dataset]
    world = bench.make_world(a.dataset, policy, sizes, 3, a.homedepot)
    model, _ = bench.seed_models(world, policy, policy.seed, with_teacher=False, log=print)
    seconds: dict = {"fp32": [], "int8": []}
    metrics, per_query = {}, {}
    for precision in ("fp32", "int8", "fp32", "int8"):
        model.spec = model.spec.model_copy(update={"precision": precision})
        t = time.perf_counter()
        metrics[precision], per_query[precision] = bench._metrics(model, world, 3, (4, 10))
        seconds[precision].append(round(time.perf_counter() - t, 1))
        print(f"[eval-precision] {precision}: {seconds[precision][-1]:.1f}s", flush=True)
    results = {}
    for label in per_query["fp32"]:
        c = compare_queries(per_query["int8"][label], per_query["fp32"][label])
        results[label] = {p: {k: metrics[p][label][k] for k in ("ndcg@4", "accuracy", "queries")} for p in seconds}
        results[label]["int8_minus_fp32"] = c.to_dict()
        print(f"[eval-precision] {label:8s} {c.queries:5d} queries: ndcg@4 fp32 {c.mean_b:.4f} int8 {c.mean_a:.4f} "
              f"(Δ {c.delta:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}] p={c.p_value:.3f} {c.verdict}); accuracy "
              f"{results[label]['fp32']['accuracy']} -> {results[label]['int8']['accuracy']}", flush=True)
    ratio = min(seconds["fp32"]) / min(seconds["int8"])
    print(f"[eval-precision] one evaluation: fp32 {min(seconds['fp32']):.1f}s, int8 {min(seconds['int8']):.1f}s: "
          f"int8 {ratio:.2f}x as fast")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    a.out.mkdir(parents=True, exist_ok=True)
    out = a.out / f"eval-precision-{a.dataset}-{stamp}.json"
    out.write_text(json.dumps({"benchmark": "eval-precision", "dataset": a.dataset, "created": stamp,
                               "preset": a.preset, "sizes": sizes, "seed": policy.seed, "seconds": seconds,
                               "speedup": round(ratio, 2), "results": results,
                               "wall_seconds": round(time.perf_counter() - t0, 1)}, indent=1, default=str) + "\n")
    print(f"[eval-precision] wrote {out} ({time.perf_counter() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
