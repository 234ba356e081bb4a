"""The teacher's grades: its head's argmax against cut points learned on its expected grade.

Issue 16 asks that every score-based annotator learns its score -> grade mapping from labelled
pairs. `teacher` can (`calibration: learned`, `serm.annotation.teacher`). This measures what
that buys, on `serm bench`'s own world: the teacher is trained on the disjoint gold pool (as the
benchmark trains it), the cuts are fitted on the seed set (the labelled pairs a round has), and
both ways of grading are scored on every fixed test set (static and each period or language),
which neither saw. Reported per set: exact and within-one-grade accuracy, paired over queries
(each query's share of pairs graded right; randomization p, bootstrap 95% CI).

    .venv/bin/python benchmarks/teacher_cuts.py --dataset homedepot
    .venv/bin/python benchmarks/teacher_cuts.py --dataset xquad

Writes `benchmarks/results/teacher-cuts-<dataset>-<UTC>.json`.
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


def per_query(frame, right) -> dict:
    """{query_id: share of its pairs where `right` holds}."""
    return frame.assign(_r=right.astype(float)).groupby("query_id")["_r"].mean().to_dict()


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
    import numpy as np

    from serm import bench, stages
    from serm.annotation.base import AnnotationContext, grade_from_thresholds
    from serm.annotation.teacher import Teacher
    from serm.policy import load_policy
    from serm.stats import compare_queries

    t0 = time.perf_counter()
    policy = load_policy(bench.POLICIES[a.dataset])
    sizes = bench.SIZES[a.preset][a.dataset]
    world = bench.make_world(a.dataset, policy, sizes, 3, a.homedepot)
    _, teacher = bench.seed_models(world, policy, policy.seed, with_teacher=True, log=print)
    labelled = stages.calibration_pairs(world.seed_set)
    ctx = AnnotationContext(pairs=labelled.iloc[:0], documents=world.documents, seed=policy.seed,
                            labelled=labelled)
    cal = Teacher(model="t", calibration="learned").learn(ctx, teacher)
    print(f"[teacher-cuts] cuts {cal.describe()} (per locale: {sorted(cal.per_locale)})")
    sets = {"static": world.static_test, **dict(zip(world.labels, world.evolving_tests))}
    results = {}
    for name, test in sets.items():
        test = test.reset_index(drop=True)
        proba = teacher.score_frame(test)
        expected = teacher.expected_grade(proba)
        truth = test["grade"].astype(int).to_numpy()
        argmax = proba.argmax(axis=1)
        learned = np.array([grade_from_thresholds(float(e), cal.for_locale(loc).thresholds)
                            for e, loc in zip(expected, test["locale"])])
        row = {"pairs": int(len(test)), "queries": int(test.query_id.nunique()),
               "grades": {str(g): int((truth == g).sum()) for g in range(4)}}
        for label, pred in (("argmax", argmax), ("learned", learned)):
            row[label] = {"exact": round(float((pred == truth).mean()), 4),
                          "within_one": round(float((np.abs(pred - truth) <= 1).mean()), 4),
                          "votes": {str(g): int((pred == g).sum()) for g in range(4)}}
        for metric, ok in (("exact", lambda p: p == truth), ("within_one", lambda p: np.abs(p - truth) <= 1)):
            c = compare_queries(per_query(test, ok(learned)), per_query(test, ok(argmax)))
            row[f"{metric}_learned_vs_argmax"] = c.to_dict()
        results[name] = row
        e, w = row["exact_learned_vs_argmax"], row["within_one_learned_vs_argmax"]
        print(f"[teacher-cuts] {name:7s} {row['pairs']:5d} pairs/{row['queries']} queries: exact argmax "
              f"{row['argmax']['exact']:.3f} -> learned {row['learned']['exact']:.3f} (Δ {e['delta']:+.3f} "
              f"[{e['ci_low']:+.3f}, {e['ci_high']:+.3f}] p={e['p_value']:.4f} {e['verdict']}); within one "
              f"{row['argmax']['within_one']:.3f} -> {row['learned']['within_one']:.3f} (p={w['p_value']:.4f} "
              f"{w['verdict']}); votes argmax {row['argmax']['votes']}, learned {row['learned']['votes']}, "
              f"truth {row['grades']}", flush=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    a.out.mkdir(parents=True, exist_ok=True)
    out = a.out / f"teacher-cuts-{a.dataset}-{stamp}.json"
    out.write_text(json.dumps({"benchmark": "teacher-cuts", "dataset": a.dataset, "created": stamp,
                               "preset": a.preset, "sizes": sizes, "seed": policy.seed,
                               "cuts": {"pooled": cal.pooled.__dict__,
                                        "per_locale": {k: v.__dict__ for k, v in cal.per_locale.items()}},
                               "results": results, "wall_seconds": round(time.perf_counter() - t0, 1)},
                              indent=1, default=str) + "\n")
    print(f"[teacher-cuts] wrote {out} ({time.perf_counter() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
