"""The seed model against BM25 and the off-the-shelf bi-encoder, on every XQuAD language.

The default policy's seed recipe (English questions only, `training.seed_epochs`), trained once
per variant, then scored on held-out questions in all ten languages (the test question ids are
never trained on in any language), 8 candidates per question (the gold paragraph, 2 hard
negatives from its article, 5 random ones). Variants:

- `network`: the cross-encoder alone (`model.lexical_features: []`);
- `lexical`: the cross-encoder with its lexical head (the default);
- `cosine`: the lexical head plus the bi-encoder's cosine (`embedding_cosine`).

Printed per language: NDCG@4 of BM25, the bi-encoder and each variant, the variants' accuracy,
macro-F1 and ECE, and each variant against BM25 and the bi-encoder, paired over the test's
questions (randomization test p, bootstrap 95% CI). Writes `benchmarks/results/seed-model-*.json`.

    .venv/bin/python benchmarks/seed_model.py                     # 300 test questions per language
    .venv/bin/python benchmarks/seed_model.py --test-queries 80 --variants lexical
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
    ap.add_argument("--policy", default=str(ROOT / "policies" / "default.yaml"))
    ap.add_argument("--test-queries", type=int, default=300, help="held-out questions per language")
    ap.add_argument("--seed-queries", type=int, help="default: the policy's data.seed_queries")
    ap.add_argument("--epochs", type=int, help="default: the policy's training.seed_epochs")
    ap.add_argument("--variants", default="network,lexical")
    ap.add_argument("--locales", default="en,es,de,tr,ru,el,ar,hi,zh,th")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    import pandas as pd
    import torch

    from serm.baselines import SCORERS
    from serm.data import xquad
    from serm.evaluation import evaluate, ranking_metrics
    from serm.model.cross_encoder import RelevanceModel
    from serm.model.training import set_seed, train
    from serm.policy import load_policy
    from serm.stats import compare_rankings

    policy = load_policy(args.policy)
    seed_queries = args.seed_queries or policy.data.seed_queries
    epochs = args.epochs or policy.training.seed_epochs
    locales = args.locales.split(",")
    q, paras = xquad.load_questions(), xquad.load_paragraphs()
    split = xquad.split_question_ids(policy.seed, args.test_queries, seed_queries)
    seed_q = q[q.question_id.isin(set(split["seed"])) & (q.locale == policy.data.seed_locale)]
    seed = xquad.candidate_lists(seed_q, paras, policy.data.candidates.hard_negatives,
                                 policy.data.candidates.random_negatives, policy.seed)
    test_q = q[q.question_id.isin(set(split["test"])) & q.locale.isin(locales)]
    test = xquad.candidate_lists(test_q, paras, 2, 5, policy.seed)
    print(f"seed: {len(seed)} pairs / {seed.query_id.nunique()} {policy.data.seed_locale} questions, "
          f"{epochs} epochs; test: {test.query_id.nunique()} questions ({args.test_queries} per language), "
          f"{len(test)} pairs; {torch.get_num_threads()} threads")

    scored = {}
    t0 = time.perf_counter()
    for name, scorer in SCORERS.items():
        scored[name] = test.assign(score=scorer(test, documents=xquad.documents()))
    print(f"baselines scored in {time.perf_counter() - t0:.0f}s")
    results: dict = {"variants": {}, "baselines": {}}
    for name in SCORERS:
        results["baselines"][name] = {loc: ranking_metrics(g, (4,))["ndcg@4"] for loc, g in scored[name].groupby("locale")}
    for variant in args.variants.split(","):
        lexical = [f for f in policy.model.lexical_features if f != "embedding_cosine"]
        features = {"network": [], "lexical": lexical, "cosine": [*lexical, "embedding_cosine"]}
        if variant not in features:
            ap.error(f"unknown variant {variant!r}; known: {', '.join(features)}")
        spec = policy.model.model_copy(update={"lexical_features": features[variant]})
        set_seed(policy.seed)
        model = RelevanceModel.load(spec.base_model, spec, device=policy.training.device)
        t0 = time.perf_counter()
        res = train(model, seed, policy.training, policy.seed, epochs=epochs, log=lambda *_: None)
        t1 = time.perf_counter()
        proba = model.score_frame(test)
        t2 = time.perf_counter()
        ev = evaluate(None, test, (4,), proba=proba)
        frame = test.assign(score=model.expected_grade(proba))
        per = {}
        for loc, g in frame.groupby("locale"):
            m = ev["per_locale"][loc]
            per[loc] = {k: m[k] for k in ("ndcg@4", "accuracy", "macro_f1", "ece", "queries")}
            for base in SCORERS:
                c = compare_rankings(g, scored[base][scored[base].locale == loc], 4)
                per[loc][f"vs_{base}"] = c.to_dict()
        results["variants"][variant] = {"per_locale": per, "overall": ev["overall"], "train_seconds": round(t1 - t0, 1),
                                        "score_seconds": round(t2 - t1, 1), "train_loss": res.train_loss,
                                        "val_loss": res.val_loss}
        print(f"{variant}: trained in {t1 - t0:.0f}s, scored {len(test)} pairs in {t2 - t1:.0f}s")

    head = f"| {'language':<8} | " + " | ".join(f"{b} NDCG@4" for b in SCORERS) + " | " + " | ".join(
        f"{v} NDCG@4 / acc / F1 / ECE | {v} − bm25 [95% CI] p" for v in results["variants"]) + " |"
    print("\n" + head)
    print("|" + "---|" * (head.count("|") - 1))
    for loc in locales:
        cells = [f"{results['baselines'][b][loc]:.4f}" for b in SCORERS]
        for v, r in results["variants"].items():
            m = r["per_locale"][loc]
            c = m["vs_bm25"]
            cells.append(f"{m['ndcg@4']:.4f} / {m['accuracy']:.3f} / {m['macro_f1']:.3f} / {m['ece']:.3f}")
            cells.append(f"{c['delta']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] p={c['p_value']:.3g}"
                         + (" tie" if c["verdict"] == "tie" else ""))
        print(f"| {loc:<8} | " + " | ".join(cells) + " |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"seed-model-{stamp}.json"
    path.write_text(json.dumps({"benchmark": "seed_model", "created": stamp, "policy": args.policy,
                                "seed_pairs": len(seed), "seed_queries": int(seed.query_id.nunique()),
                                "epochs": epochs, "test_queries_per_locale": args.test_queries,
                                "test_pairs": len(test), **results}, indent=1, default=str) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
