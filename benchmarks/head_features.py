"""What a head feature buys: the seed model with and without `embedding_cosine`, on `serm bench`'s
fixed tests, against BM25 and the bi-encoder.

The bench's world for the dataset (the `cpu` preset's sizes by default), its policy's seed recipe
trained once per variant and seed from the same start, each variant scored on the static test and
every language's (XQuAD) or period's (Home Depot) own test. Printed per test: NDCG@4, accuracy and
macro-F1 of each variant, and the paired comparisons (per-query NDCG@4 averaged over the seeds,
randomization p, bootstrap 95% CI): with − without, with − bi-encoder, with − BM25, without −
bi-encoder. Writes `benchmarks/results/head-features-*.json`.

    .venv/bin/python benchmarks/head_features.py --dataset homedepot
    .venv/bin/python benchmarks/head_features.py --dataset xquad --seeds 13,14
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ADDED = "embedding_cosine"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=("xquad", "homedepot"), default="homedepot")
    ap.add_argument("--preset", default="cpu", help="serm bench preset whose sizes to use")
    ap.add_argument("--seeds", default="13")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    import numpy as np

    from serm import bench
    from serm.baselines import bi_encoder_scores, bm25_scores
    from serm.evaluation import evaluate
    from serm.policy import load_policy
    from serm.stats import compare_queries, per_query_ndcg

    policy = load_policy(ROOT / "benchmarks" / f"evolution-{args.dataset}.yaml")
    base = [f for f in policy.model.lexical_features if f != ADDED]
    variants = {"without": base, "with": [*base, ADDED]}
    seeds = [int(s) for s in args.seeds.split(",")]
    world = bench.make_world(args.dataset, policy, bench.SIZES[args.preset][args.dataset], 3)
    tests = {"static": world.static_test, **dict(zip(world.labels, world.evolving_tests))}
    per_query: dict = {}          # (variant, test) -> {query: NDCG@4 averaged over seeds}
    metrics: dict = {}
    t_all = time.perf_counter()
    for name, feats in variants.items():
        pol = policy.model_copy(update={"model": policy.model.model_copy(update={"lexical_features": feats})})
        for seed in seeds:
            model, _ = bench.seed_models(world, pol, seed, False, log=print)
            for test, frame in tests.items():
                proba = model.score_frame(frame)
                m = evaluate(None, frame, (4,), proba=proba)["overall"]
                metrics.setdefault(name, {}).setdefault(test, []).append(
                    {k: m[k] for k in ("ndcg@4", "accuracy", "macro_f1", "ece")})
                pq = per_query_ndcg(frame.assign(score=model.expected_grade(proba)), 4)
                acc = per_query.setdefault((name, test), {})
                for q, v in pq.items():
                    acc[q] = acc.get(q, 0.0) + v / len(seeds)
    for test, frame in tests.items():
        per_query[("bi_encoder", test)] = per_query_ndcg(frame.assign(score=bi_encoder_scores(frame)), 4)
        per_query[("bm25", test)] = per_query_ndcg(frame.assign(score=bm25_scores(frame, world.documents)), 4)
    pairs = (("with", "without"), ("with", "bi_encoder"), ("with", "bm25"), ("without", "bi_encoder"))
    rows = []
    print(f"\n{args.dataset}, seeds {seeds}: NDCG@4 ×100 (accuracy, macro-F1 ×100), mean over seeds\n")
    print("| test (queries) | " + " | ".join(f"{v} {ADDED}" for v in variants) + " | bi-encoder | BM25 | "
          + " | ".join(f"{a} − {b}" for a, b in pairs) + " |")
    print("|" + "---|" * (5 + len(pairs)))
    for test in tests:
        cells = []
        for name in variants:
            ms = metrics[name][test]
            mean = {k: float(np.mean([m[k] for m in ms])) for k in ms[0]}
            cells.append(f"{mean['ndcg@4'] * 100:.1f} ({mean['accuracy'] * 100:.1f}, {mean['macro_f1'] * 100:.1f})")
        for ref in ("bi_encoder", "bm25"):
            cells.append(f"{np.mean(list(per_query[(ref, test)].values())) * 100:.1f}")
        comps = {}
        for a, b in pairs:
            c = compare_queries(per_query[(a, test)], per_query[(b, test)])
            comps[f"{a}-{b}"] = c.to_dict()
            cells.append(f"{c.delta * 100:+.1f} [{c.ci_low * 100:+.1f}, {c.ci_high * 100:+.1f}] p={c.p_value:.3g}"
                         + (" tie" if c.verdict == "tie" else ""))
        n = len(per_query[("with", test)])
        print(f"| {test} ({n}) | " + " | ".join(cells) + " |")
        rows.append({"test": test, "queries": n, "comparisons": comps,
                     "metrics": {name: metrics[name][test] for name in variants}})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"head-features-{stamp}.json"
    path.write_text(json.dumps({"benchmark": "head_features", "created": stamp, "dataset": args.dataset,
                                "preset": args.preset, "seeds": seeds, "variants": variants,
                                "sizes": bench.SIZES[args.preset][args.dataset], "rows": rows,
                                "seconds": round(time.perf_counter() - t_all, 1)}, indent=1) + "\n")
    print(f"\nwrote {path} ({time.perf_counter() - t_all:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
