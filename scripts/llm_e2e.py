"""Judge a few XQuAD pairs with `llm_judge` through a running OpenAI-compatible server and
print what came back: grades, abstentions and their reasons, level-1 agreement, latency, tokens.

Run by `scripts/llm_e2e.sh` (which builds and starts llama.cpp's server); it works against any
endpoint:

    .venv/bin/python scripts/llm_e2e.py --endpoint http://127.0.0.1:8000/v1 --model NAME --pairs 20
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pairs_for(n: int, locales: list[str], seed: int):
    """`n` judged pairs, half answers (grade 3) and half same-article non-answers (grade 0)."""
    import pandas as pd

    from serm.data import xquad

    questions = xquad.load_questions()
    questions = questions[questions.locale.isin(locales)].sample(frac=1.0, random_state=seed)
    picked = questions.groupby("locale").head(-(-n // (2 * len(locales))))
    cands = xquad.candidate_lists(picked, xquad.load_paragraphs(), hard_negatives=1, random_negatives=0, seed=seed)
    out = pd.concat([cands[cands.grade == 3], cands[cands.grade == 0]]).groupby("grade").head((n + 1) // 2)
    return out.head(n).reset_index(drop=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--locales", default="en,es,de")
    ap.add_argument("--timeout-s", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import pandas as pd

    from serm.annotation.agreement import level1
    from serm.annotation.base import AnnotationContext
    from serm.annotation.llm_judge import LLMJudge

    pairs = pairs_for(args.pairs, args.locales.split(","), args.seed)
    judge = LLMJudge(endpoint=args.endpoint, model=args.model, samples=args.samples,
                     timeout_s=args.timeout_s, concurrency=1, max_tokens=64)
    ctx = AnnotationContext(pairs=pairs, documents=pd.DataFrame(columns=["doc_id", "title", "text", "locale"]),
                            seed=args.seed)
    votes = judge.vote(ctx)
    report = judge.report

    graded = votes["grade"].notna()
    reasons = Counter(r.split(":")[0] for r in votes.loc[~graded, "rationale"].fillna(""))
    l1 = level1(votes, intra_min_share=0.67)
    merged = l1.merge(pairs[["query_id", "doc_id", "grade"]].rename(columns={"grade": "gold"}), on=["query_id", "doc_id"])
    kept = merged["grade"].notna()
    right = int((merged.loc[kept, "grade"].astype(int) == merged.loc[kept, "gold"]).sum())
    binary = int(((merged.loc[kept, "grade"].astype(int) >= 2) == (merged.loc[kept, "gold"] >= 2)).sum())
    lat = votes.loc[graded, "latency_ms"]

    print(f"endpoint {args.endpoint}, model {args.model}: {len(pairs)} pairs x {args.samples} samples "
          f"= {len(votes)} votes in {report['seconds']:.1f} s ({report['requests']} requests, "
          f"{report['retries']} retries, {report['failed_requests']} failed)")
    print(f"  graded votes {int(graded.sum())}, abstentions {int((~graded).sum())}"
          + (f" ({', '.join(f'{k}: {v}' for k, v in reasons.most_common())})" if reasons else ""))
    if graded.any():
        print(f"  grades {dict(sorted(Counter(votes.loc[graded, 'grade'].astype(int)).items()))}; latency median "
              f"{lat.median():.0f} ms, max {lat.max():.0f} ms; tokens {int(votes['tokens'].sum())}")
    print(f"  level 1 (share >= 0.67 of {args.samples}): {int(kept.sum())}/{len(l1)} pairs agreed with themselves; "
          f"of those {right} match gold exactly, {binary} on relevant (>= 2) vs not")
    print("  first answers:")
    for r in votes.head(3).itertuples(index=False):
        print(f"    {r.query_id}/{r.doc_id} sample {r.sample}: grade {r.grade} <- {str(r.rationale)[:100]!r}")
    if report["requests"] == 0 or (report["failed_requests"] and not graded.any()):
        print("error: no answer came back from the server", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
