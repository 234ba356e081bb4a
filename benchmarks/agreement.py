"""The annotator's agreement thresholds: hand-set against tuned (`agreement.tune`), side by side.

The same world, seed model, teacher, stream and mined candidates for both arms (`serm bench`'s
pieces, strategy `serm`); only the agreement thresholds differ: the benchmark policy's hand-set
ones, or the ones `serm.annotation.tuning` chooses each round on the labelled seed pairs
(target accuracy `--target`). Printed per round and arm: candidates, escalated share, accepted
labels and their accuracy against the hidden grades (exact and within one grade), and for the
tuned arm the chosen thresholds with what they measured, and each agent's own accuracy on the
candidates it graded (the issue's "best single agent"). Totals over
rounds carry a 95% Wilson interval on accepted-label accuracy and a two-proportion z-test on
the escalation shares (the same candidates; the arms differ in thresholds only).

    .venv/bin/python benchmarks/agreement.py --dataset xquad
    .venv/bin/python benchmarks/agreement.py --dataset homedepot --target 0.7
    .venv/bin/python benchmarks/agreement.py --annotation policies/default.yaml   # the default annotator

Writes `benchmarks/results/agreement-<dataset>-<UTC>.json`.
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=["xquad", "homedepot"], default="xquad")
    ap.add_argument("--target", type=float, default=0.95, help="tune.target_accuracy of the tuned arm")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, help="default: the benchmark policy's seed")
    ap.add_argument("--budget", type=int, help="pairs mined per round (default: the cpu preset's)")
    ap.add_argument("--annotation", help="take the annotator (agents, agreement) from this policy instead, "
                    "e.g. policies/default.yaml")
    ap.add_argument("--homedepot", default=str(ROOT.parent / "shared" / "data" / "homedepot" / "judgments.parquet"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args(argv)

    import numpy as np

    from serm import bench, stages
    from serm.annotation.base import AnnotationContext
    from serm.annotation.human import SimulatedHuman
    from serm.mining.base import MiningContext, ModelVersions
    from serm.policy import AgreementTuning, load_policy
    from serm.schema import LabelStatus

    t0 = time.perf_counter()
    policy = load_policy(bench.POLICIES[a.dataset])
    seed = policy.seed if a.seed is None else a.seed
    sizes = {**bench.SIZES["cpu"][a.dataset], "test": 20}      # no evaluation here: a token test set
    budget = a.budget or sizes["budget"]
    world = bench.make_world(a.dataset, policy, sizes, a.rounds, a.homedepot)
    hand = policy.annotation if a.annotation is None else load_policy(a.annotation).annotation
    tuned = hand.model_copy(update={"agreement": hand.agreement.model_copy(
        update={"tune": AgreementTuning(target_accuracy=a.target)})})
    arms = {"hand-set": hand, "tuned": tuned}

    base, teacher = bench.seed_models(world, policy, seed, with_teacher=True, log=lambda *_: None)
    streams = bench.simulated_streams(world, base, policy, seed)
    print(f"{a.dataset}: seed model and teacher trained ({time.perf_counter() - t0:.0f}s); "
          f"{len(world.seed_set)} labelled seed pairs; budget {budget} per round", flush=True)

    run = bench.Run("serm", bench.clone(base))
    agent_totals: dict = {}
    rows, totals = [], {arm: {"candidates": 0, "escalated": 0, "accepted": 0, "right": 0, "within1": 0} for arm in arms}
    labelled = stages.calibration_pairs(world.seed_set)
    for r, (pairs, events) in enumerate(streams):
        rnd = r + 1
        reference = sorted(set(world.seed_set["query"]))
        mctx = MiningContext(pairs=pairs, events=events, reference_queries=reference,
                             models=ModelVersions(production=rnd, loaders={rnd: lambda: run.model}))
        cands, _ = stages.mine(mctx, policy.mining.model_copy(update={"budget": budget}), rnd, set())
        picked = pairs.merge(cands[["query_id", "doc_id"]], on=["query_id", "doc_id"])
        for arm, spec in arms.items():
            ctx = AnnotationContext(pairs=picked, documents=world.documents, seed=seed * 1000 + rnd, events=events,
                                    models=lambda ref: teacher, truth=world.grade, labelled=labelled)
            human = SimulatedHuman(0, world.grade)          # no reviewer: what the jury alone decides
            _, labels, _, rep = stages.annotate(ctx, spec, rnd, policy.hash(), human, log=lambda *_: None,
                                                truth=world.grade)
            acc = labels[labels.status == LabelStatus.ACCEPTED]
            truth = np.array([world.grade(q, d) for q, d in zip(acc.query_id, acc.doc_id)], dtype=int)
            got = acc["grade"].astype(int).to_numpy()
            row = {"round": rnd, "batch": world.labels[r], "arm": arm, "candidates": int(len(picked)),
                   "escalated": int((labels.status != LabelStatus.ACCEPTED).sum()), "accepted": int(len(acc)),
                   "right": int((got == truth).sum()), "within1": int((abs(got - truth) <= 1).sum())}
            if arm == "hand-set":       # every agent alone, on the pairs it graded (the same votes in both arms)
                row["agents"] = rep["simulation_agent_accuracy"]
                for agent, acc in row["agents"].items():
                    t = agent_totals.setdefault(agent, [0, 0])
                    t[0] += round((acc["accuracy"] or 0) * acc["graded"])
                    t[1] += acc["graded"]
            if "agreement_tuning" in rep:
                row["thresholds"] = rep["agreement_used"]
                row["tuning_measured"] = rep["agreement_tuning"].get("measured")
                row["met"] = rep["agreement_tuning"].get("met")
            rows.append(row)
            for k in totals[arm]:
                totals[arm][k] += row[k]
            print(f"  round {rnd} ({world.labels[r]}) {arm:<9} {row['candidates']} candidates: "
                  f"escalated {row['escalated'] / max(1, row['candidates']):.1%}, accepted {row['accepted']}, "
                  f"{_share(row['right'], row['accepted'])} right, {_share(row['within1'], row['accepted'])} within one"
                  + (f"; thresholds {row['thresholds']}, measured {row['tuning_measured']}"
                     if "thresholds" in row else ""), flush=True)

    summary = {arm: _summary(t) for arm, t in totals.items()}
    summary["escalation_difference"] = _two_proportions(totals["tuned"], totals["hand-set"])
    print(f"\n{a.dataset}, {a.rounds} rounds, seed {seed}, target {a.target}:")
    for arm in arms:
        s = summary[arm]
        print(f"  {arm:<9} escalated {s['escalation']:.1%} of {s['candidates']}; accepted {s['accepted']}, "
              f"{s['accuracy']:.1%} right [95% CI {s['accuracy_ci'][0]:.1%}, {s['accuracy_ci'][1]:.1%}], "
              f"{s['within1']:.1%} within one")
    summary["agents"] = {agent: {"graded": n, "accuracy": k / n if n else None} for agent, (k, n) in agent_totals.items()}
    alone = ", ".join(f"{agent} {v['accuracy']:.1%} of {v['graded']}" for agent, v in summary["agents"].items()
                      if v["accuracy"] is not None)
    print(f"  each agent alone (exact, on the candidates it graded): {alone}")
    d = summary["escalation_difference"]
    print(f"  escalation tuned − hand-set: {d['difference']:+.1%} (z {d['z']:.2f}, p {d['p']:.4f})")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "" if a.annotation is None else "-" + Path(a.annotation).stem
    path = out / f"agreement-{a.dataset}{tag}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps({"benchmark": "agreement", "dataset": a.dataset, "seed": seed, "target": a.target,
                                "annotation": a.annotation or str(bench.POLICIES[a.dataset].relative_to(ROOT)),
                                "budget": budget, "rounds": rows, "summary": summary,
                                "wall_seconds": round(time.perf_counter() - t0, 1)}, indent=1))
    print(f"wrote {path}")
    return 0


def _share(k: int, n: int) -> str:
    return "–" if n == 0 else f"{k / n:.1%}"


def _summary(t: dict) -> dict:
    from serm.annotation.tuning import wilson_lower

    n = t["accepted"]
    lo = float(wilson_lower([t["right"]], [n], 0.975)[0])                 # two-sided 95%
    hi = 1.0 - float(wilson_lower([n - t["right"]], [n], 0.975)[0]) if n else 0.0
    return {"candidates": t["candidates"], "escalation": t["escalated"] / max(1, t["candidates"]), "accepted": n,
            "accuracy": t["right"] / n if n else 0.0, "accuracy_ci": [float(lo), float(hi)],
            "within1": t["within1"] / n if n else 0.0}


def _two_proportions(x: dict, y: dict) -> dict:
    """Two-proportion z-test of the escalated shares (pooled variance)."""
    import math

    from scipy.stats import norm

    n1, n2 = x["candidates"], y["candidates"]
    p1, p2 = x["escalated"] / max(1, n1), y["escalated"] / max(1, n2)
    p = (x["escalated"] + y["escalated"]) / max(1, n1 + n2)
    se = math.sqrt(max(p * (1 - p) * (1 / max(1, n1) + 1 / max(1, n2)), 1e-12))
    z = (p1 - p2) / se
    return {"difference": p1 - p2, "z": z, "p": float(2 * norm.sf(abs(z)))}


if __name__ == "__main__":
    raise SystemExit(main())
