"""The miner: one shared scoring pass, every agent on it, then one combination of their picks.

Scoring: the production model scores each stream pair at most once per round, and every agent
reads that pass from the context. With `mining.prefilter`, the model-free agents' flags (plus a
random `explore_share` of the rest) choose which pairs are scored at all. The `disagreement`
committee's extra members necessarily score again; those passes are counted separately.

Combination: union (or a vote needing a weighted count of `min_votes` agents), per-agent quotas
(share of the budget), a per-locale minimum, at most `max_per_query` pairs per query, dedupe
against pairs already labelled, and the total budget. Every candidate keeps which agents picked
it, each agent's raw score and each agent's reason.
"""

from __future__ import annotations

import json
import time

from serm import schema
from serm.agents import build
from serm.data import without_pairs
from serm.mining.base import MiningContext

CANDIDATE_COLUMNS = list(schema.CANDIDATE_COLUMNS)
TOP_REASONS = 10


def score_once(ctx: MiningContext, spec, agents, round_no: int) -> dict:
    """Fill `ctx.proba`/`ctx.score` with the production model's one pass over the pairs the
    prefilter keeps (all of them without one). Returns what was scored and how fast."""
    import numpy as np

    from serm.model.cross_encoder import GRADES, RelevanceModel

    n = len(ctx.pairs)
    info: dict = {"prefilter": None}
    if ctx.proba is not None:  # scored by the caller (tests, benchmarks comparing passes)
        ctx.score = RelevanceModel.expected_grade(ctx.proba) if ctx.score is None else ctx.score
        info.update(scored_pairs=int((~np.isnan(ctx.score)).sum()), scoring_seconds=0.0)
        return info
    mask = np.ones(n, dtype=bool)
    if spec.prefilter is not None:
        by_name = {a.name: a for a in agents}
        mask[:] = False
        flagged = {}
        for name in spec.prefilter.agents:
            f = by_name[name].flag(ctx)
            flagged[name] = int(f.sum())
            mask |= f
        rest = np.flatnonzero(~mask)
        explore = np.random.default_rng([round_no, n]).choice(
            rest, int(round(len(rest) * spec.prefilter.explore_share)), replace=False)
        mask[explore] = True
        info["prefilter"] = {"flagged": flagged, "flagged_any": int(n - len(rest)), "explored": int(len(explore)),
                             "scored_share": round(float(mask.mean()), 4) if n else 0.0}
    rows = np.flatnonzero(mask)
    ctx.proba = np.full((n, GRADES), np.nan, dtype=np.float32)
    ctx.score = np.full(n, np.nan, dtype=np.float32)
    t0 = time.perf_counter()
    if len(rows):
        sub = ctx.models.load(ctx.models.production).score_frame(ctx.pairs.iloc[rows])
        ctx.proba[rows] = sub
        ctx.score[rows] = RelevanceModel.expected_grade(sub)
    secs = time.perf_counter() - t0
    info.update(scored_pairs=int(len(rows)), scoring_seconds=round(secs, 2),
                scored_pairs_per_second=round(len(rows) / secs, 1) if secs > 0 else None)
    return info


def mine(ctx: MiningContext, spec, round_no: int, labelled: set[tuple[str, str]] | None = None):
    """Returns (candidates DataFrame, report dict). Scores `ctx` first when it has no `proba`."""
    import numpy as np
    import pandas as pd

    from serm.mining import REGISTRY

    t_start = time.perf_counter()
    ctx.pairs = ctx.pairs.reset_index(drop=True)
    pairs = ctx.pairs
    agents = [build(REGISTRY, a) for a in spec.agents]
    scoring = score_once(ctx, spec, agents, round_no)
    weights = spec.combine.weights
    picks: dict[str, object] = {}
    seconds: dict[str, float] = {}
    votes: dict[int, list] = {}
    for agent in agents:
        t0 = time.perf_counter()
        p = agent.select(ctx)
        seconds[agent.name] = round(time.perf_counter() - t0, 2)
        picks[agent.name] = p
        # Rank-normalise priorities so agents with different scales combine fairly.
        k = len(p.index)
        ranks = np.empty(k)
        ranks[np.argsort(-np.asarray(p.priority, dtype=float), kind="stable")] = np.arange(k)
        norm = 1.0 - ranks / max(1, k)
        for i, raw, nr, why in zip(p.index, p.priority, norm, p.reasons):
            votes.setdefault(int(i), []).append((agent.name, float(raw), float(nr), why))

    extra = sum(int(p.stats.get("extra_forward_passes", 0)) for p in picks.values())
    report = {
        "stream_pairs": int(len(pairs)), "scored_pairs": scoring["scored_pairs"], "prefilter": scoring["prefilter"],
        "forward_passes": {"production": scoring["scored_pairs"], "committee": extra},
        "scoring_seconds": scoring["scoring_seconds"], "agent_seconds": seconds,
        "per_agent": {a: int(len(p.index)) for a, p in picks.items()},
        "per_agent_locale": {a: _counts(pairs["locale"].to_numpy()[np.asarray(p.index, dtype=int)])
                             for a, p in picks.items()},
        "overlaps": _overlaps(picks),
        "agent_stats": {a: p.stats for a, p in picks.items() if p.stats},
        "budget": spec.budget,
    }
    if scoring.get("scored_pairs_per_second"):
        report["pairs_per_second"] = scoring["scored_pairs_per_second"]

    rows = sorted(votes)
    grouped = pd.DataFrame({
        "agents": [",".join(sorted(v[0] for v in votes[r])) for r in rows],
        "n_votes": [sum(weights.get(v[0], 1.0) for v in votes[r]) for r in rows],
        "priority": [sum(weights.get(v[0], 1.0) * v[2] for v in votes[r]) for r in rows],
        "reasons": ["; ".join(f"{v[0]}: {v[3]}" for v in sorted(votes[r])) for r in rows],
        "agent_scores": [json.dumps({v[0]: round(v[1], 4) for v in sorted(votes[r])}) for r in rows],
    }, index=pd.Index(rows, dtype="int64"))
    if spec.combine.method == "vote":
        grouped = grouped[grouped.n_votes >= spec.combine.min_votes]
    cand = pairs.loc[grouped.index, ["query_id", "doc_id", "locale"]].join(grouped)
    before = len(cand)
    if labelled:
        cand = without_pairs(cand, labelled)
    deduped = before - len(cand)

    cand = cand.sort_values("priority", ascending=False, kind="stable")
    cand = cand[cand.groupby("query_id").cumcount() < spec.max_per_query]
    contrast = spec.combine.contrast_per_query
    main_budget = spec.budget // (1 + contrast) if contrast else spec.budget
    chosen = _budgeted(cand, spec, main_budget)
    n_main = len(chosen)
    if contrast and len(chosen):
        chosen = pd.concat([chosen, _contrast(pairs, ctx.score, chosen, contrast, labelled)])
    chosen = chosen.assign(round=round_no).sort_values("priority", ascending=False, kind="stable")
    chosen["priority"] = chosen["priority"].astype(float).round(4)

    selected_agents = chosen["agents"].str.split(",").explode().value_counts().to_dict() if len(chosen) else {}
    report.update(
        selected=int(len(chosen)), contrast=int(len(chosen) - n_main), deduped=int(deduped),
        selected_per_agent={k: int(v) for k, v in selected_agents.items()},
        per_locale=_counts(chosen["locale"].to_numpy()),
        top_reasons=[{"query_id": r.query_id, "doc_id": r.doc_id, "locale": r.locale, "agents": r.agents,
                      "priority": float(r.priority), "reasons": r.reasons}
                     for r in chosen.head(TOP_REASONS).itertuples(index=False)],
        mining_seconds=round(time.perf_counter() - t_start, 2),
    )
    if not len(chosen):
        return pd.DataFrame(columns=CANDIDATE_COLUMNS + ["locale"]), report
    return chosen[CANDIDATE_COLUMNS + ["locale"]].reset_index(drop=True), report


def _counts(values) -> dict[str, int]:
    import pandas as pd

    return {str(k): int(v) for k, v in pd.Series(values, dtype=object).value_counts().items()}


def _overlaps(picks) -> dict[str, int]:
    """Pairs picked by both agents, for every pair of agents."""
    names = list(picks)
    sets = {n: set(picks[n].index.tolist()) for n in names}
    return {f"{a}&{b}": len(sets[a] & sets[b]) for i, a in enumerate(names) for b in names[i + 1:]}


def _contrast(pairs, score, chosen, k: int, labelled):
    """For each picked query, its `k` lowest-scored other candidates: the labels of a query
    should not all be of one grade, or the model learns that a new language is relevant."""
    import pandas as pd

    taken = set(zip(chosen.query_id, chosen.doc_id)) | set(labelled or ())
    frame = pairs[["query_id", "doc_id", "locale"]].assign(score=score)
    frame = frame[frame.query_id.isin(set(chosen.query_id)) & frame.score.notna()]
    frame = without_pairs(frame, taken)
    low = frame.sort_values("score", kind="stable").groupby("query_id", sort=False).head(k)
    return pd.DataFrame({
        "query_id": low.query_id, "doc_id": low.doc_id, "locale": low.locale, "agents": "contrast",
        "n_votes": 0.0, "priority": 0.0, "agent_scores": [json.dumps({"contrast": round(float(s), 4)}) for s in low.score],
        "reasons": [f"contrast: lowest-scored candidate of a picked query (score {s:.2f})" for s in low.score]})


def _budgeted(cand, spec, budget: int):
    """Fill the budget: per-locale minimums first, then per-agent quotas, then by priority."""
    import pandas as pd

    taken: list = []
    taken_set: set = set()

    def take(frame, limit):
        for idx in frame.index:
            if len(taken) >= budget or limit <= 0:
                return
            if idx not in taken_set:
                taken.append(idx)
                taken_set.add(idx)
                limit -= 1

    if spec.combine.per_locale_min:
        for _, g in cand.groupby("locale", sort=True):
            take(g, spec.combine.per_locale_min)
    for agent, share in spec.combine.per_agent_quota.items():
        mine_ = cand[cand["agents"].str.split(",").map(lambda a: agent in a)]
        take(mine_, int(round(share * budget)))
    take(cand, budget)
    return cand.loc[taken] if taken else pd.DataFrame(columns=cand.columns)
