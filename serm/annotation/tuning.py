"""Agreement thresholds chosen from the measured escalation/accuracy trade-off.

Hand-set agreement thresholds trade escalations (people's time) against the accuracy of the
labels trained on, blindly. With `annotation.agreement.tune`, every round measures that
trade-off and uses the thresholds that escalate least while the accepted labels stay accurate:

1. Labelled pairs: up to `max_pairs` of the pairs whose grades are known (the seed set and
   human-reviewed pairs, the context's `labelled`), whole queries drawn with the round's seed,
   split into `folds` by query. The jury's agents vote on each fold with the *other* labelled
   pairs as their `labelled` context, so an agent that learns its cuts from labels
   (`calibration: learned`) never grades a pair it was fitted on. Not run there: `human`
   (it would vote the answer) and agents that grade from clicks (`uses_engagement`: labelled
   pairs were never shown). A `teacher` that is a workspace version was trained on the seed
   set and reviewed pairs, so it grades them in-sample and its patterns look better than they
   are: give it a model trained apart (as `serm bench` does) or expect an optimistic estimate.
2. Every combination of `intra_min_share` (the modal shares the votes show), `inter_min_agents`
   (1 … the voters), `inter_max_spread` (0 … 3) and `inter_min_agreement` (the agreements the
   votes show, at most 40) is applied.
3. Measured, once the round's candidates have their votes: the share of the *candidates*
   escalated, counted exactly, and the accuracy of the accepted candidates, estimated per vote
   pattern: each accepted candidate counts at the accuracy the labelled pairs show for its
   pattern (the label's grade and how many of the agents run on labelled pairs voted it, a
   higher grade, a lower one), Laplace smoothed, so a pattern the labelled pairs never show
   counts 1/2 and pulls the estimate down. Mined candidates are harder than labelled pairs
   (they are picked for it): measured on the labelled pairs alone, the benchmark's jury looked
   98% right with nothing escalated and was 91% right on the candidates. The bound is the
   estimate minus z(`confidence`) standard deviations: with `bound: round` (the default) of
   the patterns' Beta posteriors and the binomial spread of the round's few accepted labels
   ("this round's labels are at least the target right"), with `bound: rate` of the posteriors
   only ("labels accepted this way are"); on a round of 30 labels near 60% right the binomial
   spread alone is ±9 points, so `round` escalates much more. It is a guard, not a strict confidence bound:
   it is maximised over about a thousand correlated combinations, so it leans optimistic; the
   benchmark's rounds showed the estimate off by up to 12 points. Without candidate votes (a
   direct call), both are measured on the labelled pairs, with a one-sided Wilson bound.
4. Chosen: the combination with the fewest escalations whose bound reaches `target_accuracy`
   (ties: the higher bound, then the policy's own values, then the stricter). Where none
   reaches it, the one with the highest bound, flagged `met: false`: still short of the target,
   but as close to it as this jury gets. The policy's thresholds stay when fewer than
   `min_pairs` labelled pairs are drawn, when no agent runs on labelled pairs, and in a round
   without candidates.

The estimate assumes a vote pattern is as often right on the candidates as on the labelled
pairs; a new language or a grade mix the labelled pairs lack breaks that, which is why the
round's reviewed escalations join the labelled pairs. The aggregation (`majority`,
`dawid_skene`, `weighted`) and its reliabilities are the policy's; only the thresholds move.
The round's report (`agreement_tuning`) carries the policy's thresholds and the chosen ones
measured the same way (with their figures on the labelled pairs beside) and the Pareto front.
"""

from __future__ import annotations

import dataclasses
import math

from serm.annotation.agreement import level1, level2
from serm.annotation.base import HUMAN

MAX_AGREEMENT_CUTS = 40
THRESHOLDS = ("intra_min_share", "inter_min_agents", "inter_max_spread", "inter_min_agreement")


@dataclasses.dataclass(frozen=True)
class Tuned:
    """The outcome of a tuning: the agreement spec to use and what was measured."""

    spec: object           # AgreementSpec (the policy's, thresholds replaced when tuned)
    report: dict
    votes: object = None   # the jury's votes on the held-out labelled pairs (for inspection; not stored)


def wilson_lower(correct: "object", n: "object", confidence: float):
    """One-sided Wilson score lower bound of a binomial proportion (elementwise; 0 where n = 0)."""
    import numpy as np

    k, n = np.asarray(correct, dtype=float), np.asarray(n, dtype=float)
    z = _z(confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(n > 0, k / n, 0.0)
        centre = p + z * z / (2 * n)
        margin = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        lb = (centre - margin) / (1 + z * z / n)
    return np.where(n > 0, np.clip(lb, 0.0, 1.0), 0.0)


def held_out_pairs(labelled, max_pairs: int, seed: int):
    """Whole queries of `labelled`, drawn with `seed`, while their pairs fit in `max_pairs`."""
    import numpy as np

    sizes = labelled.groupby("query_id", sort=True).size()
    rng = np.random.default_rng([seed, 29])
    chosen, used = [], 0
    for q in sizes.index[rng.permutation(len(sizes))]:
        if used + sizes[q] <= max_pairs:
            chosen.append(q)
            used += int(sizes[q])
        if used >= max_pairs:
            break
    return labelled[labelled.query_id.isin(set(chosen))].reset_index(drop=True)


def tune_agreement(ctx, spec, candidate_votes=None, cache=None, audits=None, log=print, memo=None) -> Tuned:
    """Measure the trade-off and choose the thresholds (module docstring). `spec`: the policy's
    `annotation`; `candidate_votes`: the votes the agreement decides on the round's candidates
    (not the `human` agent's, not on pairs a reviewer's grade decides), whose escalations are
    then counted exactly and whose accuracy is estimated per vote pattern; None: both measured
    on the labelled pairs alone. `memo`: a dict the votes on the labelled
    pairs are kept in and reused from (the same labelled pairs, agents, teacher and seed)."""
    from serm.annotation import REGISTRY
    from serm.annotation.voting import cast_votes

    t = spec.agreement.tune
    base = spec.agreement.model_copy(update={"tune": None})

    def keep(why: str) -> Tuned:
        return Tuned(base, {"tuned": False, "why": f"{why}: the policy's thresholds stay", "chosen": _thresholds(base)})

    voters = [a for a in spec.agents if a.name != HUMAN]
    # agents grading from clicks abstain on labelled pairs (never shown): they are not run there
    judges = [a for a in voters if not REGISTRY[a.name].uses_engagement]
    labelled = ctx.labelled
    pairs = held_out_pairs(labelled, t.max_pairs, ctx.seed) if labelled is not None and len(labelled) else None
    n_held = 0 if pairs is None else len(pairs)
    if n_held < t.min_pairs:
        return keep(f"{n_held} labelled pair(s) drawn (of {0 if labelled is None else len(labelled)}) "
                    f"< tune.min_pairs {t.min_pairs}")
    if not judges:
        return keep("no agent besides `human` and click agents votes on labelled pairs")
    if candidate_votes is not None and not len(candidate_votes):
        return keep("no candidates this round")
    import pandas as pd

    queries = sorted(pairs.query_id.unique())
    folds = min(t.folds, len(queries))
    if memo is not None and "votes" in memo:
        votes, cost, tokens = memo["votes"], 0.0, 0
    else:
        fold_of = {q: i % folds for i, q in enumerate(queries)}
        parts, cost, tokens = [], 0.0, 0
        for f in range(folds):
            fold = pairs[pairs.query_id.map(fold_of) == f]
            if not len(fold):
                continue
            fit_on = labelled[~labelled.query_id.isin(set(fold.query_id))].reset_index(drop=True)
            fctx = dataclasses.replace(ctx, pairs=_as_candidates(fold), labelled=fit_on, events=None, resolved=None)
            v, ledger = cast_votes(fctx, judges, cache, log=lambda *_: None)
            parts.append(v)
            cost += sum(e["cost"] for e in ledger.values())
            tokens += sum(e["tokens"] for e in ledger.values())
        votes = pd.concat(parts, ignore_index=True)
        if memo is not None:
            memo["votes"] = votes
    truth = dict(zip(zip(pairs.query_id, pairs.doc_id), pairs.grade.astype(int)))
    curve = trade_off(votes, base, truth, len(voters), audits, candidate_votes)
    weighted = candidate_votes is not None
    if weighted:      # the candidates' figures decide; the labelled pairs' stay beside them
        z = _z(t.confidence)
        curve = curve.rename(columns={"escalation": "labelled_escalation", "accuracy": "labelled_accuracy",
                                      "accepted": "labelled_accepted"})
        curve["escalation"], curve["accepted"] = curve["cand_escalation"], curve["cand_accepted"]
        curve["accuracy"] = curve["est_accuracy"]
        var = curve["rate_var"] + (curve["round_var"] if t.bound == "round" else 0.0)
        curve["bound"] = (curve["est_accuracy"] - z * var ** 0.5).clip(lower=0.0).where(curve["accepted"] > 0, 0.0)
    else:
        curve["bound"] = wilson_lower(curve["correct"], curve["accepted"], t.confidence)
    chosen, met = choose(curve, base, t.target_accuracy)
    tuned = base.model_copy(update=_thresholds_of(chosen))
    policy_row = _row_of(curve, base)
    report = {
        "tuned": True, "met": met, "pairs": int(len(pairs)), "queries": len(queries), "folds": folds,
        "estimate": "candidates, accuracy per vote pattern" if weighted else "labelled pairs",
        "candidates": int(curve["cand_pairs"].iloc[0]) if weighted else 0,
        "target_accuracy": t.target_accuracy, "confidence": t.confidence, "bound": t.bound,
        "locales": {str(k): int(v) for k, v in pairs.locale.value_counts().items()} if "locale" in pairs.columns else {},
        "chosen": _thresholds(tuned), "measured": _measured(chosen),
        "policy": {**_thresholds(base), **(_measured(policy_row) if policy_row is not None else {})},
        "front": [_measured(r) | _thresholds_of(r) for r in pareto_front(curve)],
        "cost": round(cost, 6), "tokens": int(tokens)}
    m = report["measured"]
    right = "none accepted" if m["accuracy"] is None else \
        f"accepted {m['accuracy']:.1%} right (≥ {m['accuracy_bound']:.1%} at {t.confidence:.0%} confidence)"
    where = f"on {report['candidates']} candidates, accuracy from {len(pairs)} labelled pairs" if weighted \
        else f"on {len(pairs)} labelled pairs"
    log(f"  agreement tuned {where}: {_describe(tuned)}: escalates {m['escalation']:.0%}, "
        f"{right}" + ("" if met else f"; no thresholds reach the target {t.target_accuracy:.0%}"))
    return Tuned(tuned, report, votes)


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(confidence)) if confidence > 0.5 else 0.0


def _pair_stats(raw, share: float, spec, audits, keys, judged=None):
    """Per pair of `keys` under intra share `share`, from `raw` (level 1 at any share, exact
    shares): voting agents, spread, aggregated grade (or -1), its agreement (`spec`'s
    aggregation), whether it has one, and its support: how many of the `judged` agents (None:
    all) voted that grade, a higher one, a lower one."""
    import numpy as np
    import pandas as pd

    per_agent = raw.assign(grade=raw["grade"].where(raw["intra_share"] >= share))
    loose = spec.model_copy(update=dict(intra_min_share=share, inter_min_agents=1, inter_max_spread=3,
                                        inter_min_agreement=0.0))
    labels = level2(per_agent, loose, "escalate", 0, "", audits).set_index(["query_id", "doc_id"])
    voting = per_agent.dropna(subset=["grade"]).astype({"grade": int})
    stats = voting.groupby(["query_id", "doc_id"])["grade"].agg(["size", "min", "max"])
    idx = pd.MultiIndex.from_tuples(keys, names=["query_id", "doc_id"])
    n = stats["size"].reindex(idx).fillna(0).to_numpy().astype(int)
    spread = (stats["max"] - stats["min"]).reindex(idx).fillna(9).to_numpy().astype(int)
    grade = labels["grade"].reindex(idx)
    has = grade.notna().to_numpy()
    grade = grade.fillna(-1).astype(int).to_numpy()
    sub = voting if judged is None else voting[voting.agent.isin(judged)]
    label_of = pd.Series(grade, index=idx)
    lab = label_of.reindex(pd.MultiIndex.from_arrays([sub.query_id, sub.doc_id])).to_numpy()
    g = sub["grade"].to_numpy()
    counts = pd.DataFrame({"query_id": sub.query_id.to_numpy(), "doc_id": sub.doc_id.to_numpy(), "same": g == lab,
                           "above": g > lab, "below": g < lab}).groupby(["query_id", "doc_id"])[
        ["same", "above", "below"]].sum()
    support = [counts[c].reindex(idx).fillna(0).to_numpy().astype(int) for c in ("same", "above", "below")]
    agreement = labels["agreement"].reindex(idx).fillna(0).to_numpy()
    return n, spread, grade, agreement, has, support, set(voting.agent)


def trade_off(votes, spec, truth: dict, voters: int, audits=None, candidates=None):
    """Every threshold combination on `votes` (the jury's votes on pairs whose grade `truth`
    knows): a frame of the thresholds, `accepted`, `correct`, `pairs`, `escalation`, `accuracy`
    on the labelled pairs. With `candidates` (the jury's votes on the round's candidates), also
    `cand_pairs`, `cand_accepted`, `cand_escalation` (counted on the candidates) and
    `est_accuracy` with `rate_var` (the variance from the patterns' rates) and `round_var` (the
    binomial variance of which of the accepted labels are right): the accepted candidates' accuracy, each candidate counted at the
    labelled pairs' accuracy of its vote pattern (the label's grade, how many of the agents that
    vote on labelled pairs voted it and how many another grade; Laplace smoothed, so a pattern
    never seen on labelled pairs counts 1/2).
    One level-2 pass per intra share and side, the rest vectorized."""
    import numpy as np
    import pandas as pd

    keys = list(truth)
    total = len(keys)
    raw = level1(votes, 1e-9, exact=True)         # every agent's modal grade and its share
    observed = list(raw["intra_share"])
    if candidates is not None:
        ckeys = list(dict.fromkeys(zip(candidates.query_id, candidates.doc_id)))
        craw = level1(candidates, 1e-9, exact=True)
        observed += list(craw["intra_share"])
    shares = sorted({_share_cut(float(s)) for s in observed if s > 0} | {spec.intra_min_share})
    truth_arr = np.array([truth[k] for k in keys])
    rows = []
    for share in shares:
        n, spread, grade, agree, has, lab_support, judged = _pair_stats(raw, share, spec, audits, keys)
        right = has & (grade == truth_arr)
        cuts = np.unique(np.floor(agree[has] * 1e4) / 1e4)
        if candidates is not None:
            cn, cspread, cgrade, cagree, chas, c_support, _ = _pair_stats(craw, share, spec, audits,
                                                                          ckeys, judged)
            cuts = np.unique(np.concatenate([cuts, np.floor(cagree[chas] * 1e4) / 1e4]))
            # vote patterns over the agents that vote on labelled pairs (click agents do not):
            # the label's grade, how many of them voted it, a higher grade, a lower one
            lab_cells = pd.Series(list(zip(grade, *lab_support)))
            cand_cells = pd.Series(list(zip(cgrade, *c_support)))
            codes, uniques = pd.factorize(pd.concat([lab_cells, cand_cells], ignore_index=True))
            lab_code, cand_code = codes[:total], codes[total:]
            k_cell = np.bincount(lab_code[has], weights=right[has].astype(float), minlength=len(uniques))
            n_cell = np.bincount(lab_code[has], minlength=len(uniques)).astype(float)
            p_cell = (k_cell + 1) / (n_cell + 2)
            v_cell = p_cell * (1 - p_cell) / (n_cell + 3)          # the Beta posterior's variance
        if len(cuts) > MAX_AGREEMENT_CUTS:
            cuts = np.unique(np.quantile(cuts, np.linspace(0, 1, MAX_AGREEMENT_CUTS)))
        cuts = np.unique(np.concatenate([[0.0], cuts, [spec.inter_min_agreement]]))
        for a in range(1, voters + 1):
            for s in range(0, 4):
                ok = has & (n >= a) & (spread <= s)
                cok = chas & (cn >= a) & (cspread <= s) if candidates is not None else None
                for m in cuts:
                    acc = ok & (agree >= m)
                    row = [share, a, s, float(m), int(acc.sum()), int((acc & right).sum())]
                    if candidates is not None:
                        cacc = cok & (cagree >= m)
                        mc = int(cacc.sum())
                        if mc:
                            counts = np.bincount(cand_code[cacc], minlength=len(uniques))
                            est = float((counts * p_cell).sum() / mc)
                            # the patterns' rates, and which of the mc accepted labels are right
                            rate_var = float((counts ** 2 * v_cell).sum() / mc ** 2)
                            round_var = est * (1 - est) / mc
                        else:
                            est, rate_var, round_var = float("nan"), 0.0, 0.0
                        row += [len(ckeys), mc, est, rate_var, round_var]
                    rows.append(tuple(row))
    cols = [*THRESHOLDS, "accepted", "correct"]
    if candidates is not None:
        cols += ["cand_pairs", "cand_accepted", "est_accuracy", "rate_var", "round_var"]
    out = pd.DataFrame(rows, columns=cols)
    out["pairs"] = total
    out["escalation"] = 1.0 - out["accepted"] / max(1, total)
    out["accuracy"] = np.where(out["accepted"] > 0, out["correct"] / out["accepted"].clip(lower=1), np.nan)
    if candidates is not None:
        out["cand_escalation"] = 1.0 - out["cand_accepted"] / out["cand_pairs"].clip(lower=1)
    return out


def _share_cut(share: float) -> float:
    """The `intra_min_share` (4 decimals) that keeps exactly the modal shares ≥ `share` (an exact
    share k/n): 2 of 3 is kept by 0.6666, and no smaller share of a few samples is."""
    return math.floor(share * 1e4 + 1e-9) / 1e4


def choose(curve, spec, target: float) -> tuple[dict, bool]:
    """(the chosen row, whether it reaches `target`): the fewest escalations among the rows
    whose accuracy bound (`bound`) reaches the target; else the highest bound. Ties: the higher
    bound (then the fewer escalations), the policy's own thresholds, the stricter ones."""
    c = curve.assign(is_policy=_is_policy(curve, spec))
    ok = c[c["bound"] >= target]
    met = len(ok) > 0
    if met:
        pick = ok.sort_values(["escalation", "bound", "is_policy", *THRESHOLDS],
                              ascending=[True, False, False, False, False, False, False], kind="stable")
    else:
        pick = c.sort_values(["bound", "escalation", "is_policy", *THRESHOLDS],
                             ascending=[False, True, False, False, False, False, False], kind="stable")
    return pick.iloc[0].to_dict(), met


def pareto_front(curve, limit: int = 12) -> list[dict]:
    """The rows no other row beats on both escalation and accuracy, by escalation (at most `limit`)."""
    c = curve[curve["accepted"] > 0].sort_values(["escalation", "accuracy"], ascending=[True, False], kind="stable")
    front, best = [], -1.0
    for r in c.to_dict("records"):
        if r["accuracy"] > best + 1e-12:
            front.append(r)
            best = r["accuracy"]
    if len(front) > limit:
        step = (len(front) - 1) / (limit - 1)
        front = [front[round(i * step)] for i in range(limit)]
    return front


def _as_candidates(labelled):
    """Labelled pairs in the candidates' columns (no engagement: they were never shown)."""
    cols = ["query_id", "doc_id", "query", "locale", "doc_title", "doc_text"]
    return labelled[cols].assign(impressions=0, clicks=0, mean_position=float("nan"), mean_dwell_s=float("nan"))


def _is_policy(curve, spec):
    return ((curve.intra_min_share == spec.intra_min_share) & (curve.inter_min_agents == spec.inter_min_agents)
            & (curve.inter_max_spread == spec.inter_max_spread)
            & (curve.inter_min_agreement == spec.inter_min_agreement))


def _row_of(curve, spec):
    rows = curve[_is_policy(curve, spec)]
    return None if rows.empty else rows.iloc[0].to_dict()


def _thresholds(spec) -> dict:
    return {k: getattr(spec, k) for k in THRESHOLDS}


def _thresholds_of(row: dict) -> dict:
    return {"intra_min_share": float(row["intra_min_share"]), "inter_min_agents": int(row["inter_min_agents"]),
            "inter_max_spread": int(row["inter_max_spread"]), "inter_min_agreement": float(row["inter_min_agreement"])}


def _measured(row: dict) -> dict:
    def num(x):
        return None if x is None or x != x else round(float(x), 4)

    out = {"escalation": round(float(row["escalation"]), 4), "accepted": int(row["accepted"]),
           "accuracy": num(row.get("accuracy")), "accuracy_bound": round(float(row["bound"]), 4)}
    if "labelled_accuracy" in row:       # the same thresholds on the labelled pairs themselves
        out["labelled"] = {"escalation": num(row["labelled_escalation"]), "accuracy": num(row["labelled_accuracy"])}
    return out


def _describe(spec) -> str:
    return (f"intra_min_share {spec.intra_min_share}, inter_min_agents {spec.inter_min_agents}, "
            f"inter_max_spread {spec.inter_max_spread}, inter_min_agreement {spec.inter_min_agreement}")
