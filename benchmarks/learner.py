"""Does the training recipe turn labels into gains? Gold labels against no new labels, per recipe.

Issue 16 asks that, in the benchmark, gold labels beat the no-new-labels control with paired
significance, and says that where they do not the training recipe is the first suspect. This
benchmark isolates the learner: no miner, no annotator. The same world, seed model and rounds as
`serm bench` (its pieces); each round a seeded random `budget` pairs of the batch get their
hidden grades (`gold@budget`; `gold@all` labels the whole batch), and the model is trained the
way the round trains (`serm.stages.replay` + `serm.stages.train`) under each recipe variant.
The control (`none`) trains as many steps on replayed labels only. After the last round every
arm is scored on the static test and on `seen` (every period's or language's test), and each
gold arm is tested against the same recipe's control, paired over queries (randomization p,
bootstrap 95% CI), with accuracy and macro-F1 beside NDCG@4.

    .venv/bin/python benchmarks/learner.py --dataset homedepot
    .venv/bin/python benchmarks/learner.py --dataset homedepot --variants "policy;epochs=3;class_weighting=false"
    .venv/bin/python benchmarks/learner.py --dataset xquad --budgets 60,all --stream-locales hi,zh,th

A variant is `name` or `key=value[,key=value]` over `training` (`policy` is the benchmark
policy's recipe unchanged). Writes `benchmarks/results/learner-<dataset>-<UTC>.json`.
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


def parse_variant(text: str, training) -> tuple[str, object]:
    """('name', training spec) of one `--variants` entry."""
    text = text.strip()
    if text in ("", "policy"):
        return "policy", training
    update = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in type(training).model_fields:
            raise SystemExit(f"--variants: {part!r} is not key=value over training "
                             f"({', '.join(type(training).model_fields)})")
        update[key.strip()] = value.strip()
    spec = type(training).model_validate({**training.model_dump(), **update})
    return text, spec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=["xquad", "homedepot"], default="homedepot")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, help="default: the benchmark policy's seed")
    ap.add_argument("--budgets", default="60,all", help="labels per round of each gold arm; `all`: the whole batch")
    ap.add_argument("--variants", default="policy", help="recipes, `;`-separated (see the module doc)")
    ap.add_argument("--stream-locales", help="xquad: the languages of rounds 1.. (default: the policy's, es,de,tr)")
    ap.add_argument("--preset", default="cpu", help="serm bench's sizes to use (quick, cpu, full)")
    ap.add_argument("--homedepot", default=str(ROOT.parent / "shared" / "data" / "homedepot" / "judgments.parquet"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args(argv)

    import numpy as np
    import pandas as pd

    from serm import bench
    from serm.policy import load_policy
    from serm.stats import compare_queries, with_holm

    t0 = time.perf_counter()
    policy = load_policy(bench.POLICIES[a.dataset])
    if a.stream_locales:
        data = policy.data.model_copy(update={"stream_locales": [x.strip() for x in a.stream_locales.split(",")]})
        policy = policy.model_copy(update={"data": data})
    seed = policy.seed if a.seed is None else a.seed
    sizes = bench.SIZES[a.preset][a.dataset]
    world = bench.make_world(a.dataset, policy, sizes, a.rounds, a.homedepot)
    variants = [parse_variant(v, policy.training) for v in a.variants.split(";")]
    budgets = [b.strip() for b in a.budgets.split(",") if b.strip()]
    ks = tuple(policy.evaluation.k)
    print(f"[learner] {a.dataset}: seed set {len(world.seed_set)} pairs, batches "
          f"{', '.join(str(len(b)) for b in world.batches)} pairs, tests "
          f"{world.static_test.query_id.nunique()} static + {sum(t.query_id.nunique() for t in world.evolving_tests)} "
          f"seen queries; arms: none, {', '.join('gold@' + b for b in budgets)}; variants: "
          f"{', '.join(n for n, _ in variants)}")
    base, _ = bench.seed_models(world, policy, seed, with_teacher=False, log=print)
    last = a.rounds

    def scored(model):
        m, pq = bench._metrics(model, world, last, ks)
        return {k: m[k] for k in ("static", "seen")}, {k: pq[k] for k in ("static", "seen")}

    seed_m, seed_pq = scored(base)
    arms = ["none", *(f"gold@{b}" for b in budgets)]
    results = []
    for vname, spec in variants:
        vpolicy = policy.model_copy(update={"training": spec})
        for arm in arms:
            t1 = time.perf_counter()
            # the control trains as `serm bench`'s no_new_labels does: as many steps, replay only
            run = bench.Run("no_new_labels" if arm == "none" else arm, bench.clone(base))
            for r in range(a.rounds):
                pairs = world.batches[r].drop(columns=["grade"], errors="ignore")
                if arm == "none":
                    new = pairs.iloc[0:0].assign(grade=pd.Series(dtype="int64"))
                    budget = int(sizes["budget"])
                else:
                    b = arm.split("@")[1]
                    n = len(pairs) if b == "all" else min(int(b), len(pairs))
                    rng = np.random.default_rng([seed, r + 1, 11])
                    new = pairs.iloc[np.sort(rng.choice(len(pairs), n, replace=False))]
                    new = new.assign(grade=[world.grade(q, d) for q, d in zip(new.query_id, new.doc_id)])
                    budget = n
                bench._train_round(run, world, vpolicy, new, budget, seed, r + 1)
            m, pq = scored(run.model)
            rec = {"variant": vname, "arm": arm, "new_labels": int(sum(len(f) for f in run.labels)),
                   "metrics": m, "seconds": round(time.perf_counter() - t1, 1), "_pq": pq}
            results.append(rec)
            print(f"  {vname:<28} {arm:<10} {rec['new_labels']:>5} labels: "
                  + ", ".join(f"{k} ndcg@4 {v['ndcg@4']:.4f} acc {v['accuracy']:.4f} F1 {v['macro_f1']:.4f}"
                              for k, v in m.items()) + f" ({rec['seconds']}s)")

    def versus(x_pq, y_pq, test):
        return compare_queries(x_pq[test], y_pq[test]).to_dict()

    for rec in results:
        control = next(r for r in results if r["variant"] == rec["variant"] and r["arm"] == "none")
        rec["vs_none"] = {t: versus(rec["_pq"], control["_pq"], t) for t in ("static", "seen")}
        rec["vs_seed"] = {t: versus(rec["_pq"], seed_pq, t) for t in ("static", "seen")}
    # the headline family: every gold arm of every recipe against its control on the seen test
    with_holm([r["vs_none"]["seen"] for r in results if r["arm"] != "none"])

    print("\n| recipe | arm | labels | static NDCG@4 | seen NDCG@4 | seen acc | seen F1 | "
          "seen Δ vs none [95% CI], p (Holm over the gold arms) | seen Δ vs seed, p |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| seed model | – | 0 | {seed_m['static']['ndcg@4']:.4f} | {seed_m['seen']['ndcg@4']:.4f} | "
          f"{seed_m['seen']['accuracy']:.4f} | {seed_m['seen']['macro_f1']:.4f} | | |")
    for rec in results:
        vn, vs = rec["vs_none"]["seen"], rec["vs_seed"]["seen"]
        cell = "" if rec["arm"] == "none" else \
            (f"{100 * vn['delta']:+.2f} [{100 * vn['ci_low']:+.2f}, {100 * vn['ci_high']:+.2f}], "
             f"p={vn['p_value']:.4f} ({vn['p_holm']:.4f})")
        m = rec["metrics"]
        print(f"| {rec['variant']} | {rec['arm']} | {rec['new_labels']} | {m['static']['ndcg@4']:.4f} | "
              f"{m['seen']['ndcg@4']:.4f} | {m['seen']['accuracy']:.4f} | {m['seen']['macro_f1']:.4f} | {cell} | "
              f"{100 * vs['delta']:+.2f}, p={vs['p_value']:.4f} |")
    for rec in results:
        rec.pop("_pq")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(a.out) / f"learner-{a.dataset}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "learner", "dataset": a.dataset, "created": stamp, "seed": seed,
                               "rounds": a.rounds, "sizes": sizes, "preset": a.preset,
                               "policy": str(bench.POLICIES[a.dataset]), "seed_model": seed_m,
                               "batches": list(world.labels),
                               "variants": {n: s.model_dump(mode="json") for n, s in variants},
                               "results": results, "wall_seconds": round(time.perf_counter() - t0, 1)},
                              indent=1, default=str) + "\n")
    print(f"\n[learner] wrote {out} ({time.perf_counter() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
