"""The miner: run every agent on one shared scoring pass, then combine their picks.

Combination: union (or a vote needing `min_votes` agents), per-agent quotas (share of the
budget), a per-locale minimum, at most `max_per_query` pairs per query, dedupe against pairs
already labelled, and the total budget. Every candidate keeps which agents picked it, their
priorities and their reasons.
"""

from __future__ import annotations

import json

from serm.agents import build
from serm.mining.base import MiningContext

CANDIDATE_COLUMNS = ["query_id", "doc_id", "round", "agents", "reasons", "agent_scores", "priority"]


def mine(ctx: MiningContext, spec, round_no: int, labelled: set[tuple[str, str]] | None = None):
    """Returns (candidates DataFrame, report dict)."""
    import numpy as np
    import pandas as pd

    from serm.mining import REGISTRY

    pairs = ctx.pairs.reset_index(drop=True)
    picks: dict[str, object] = {}
    rows = []
    for agent_spec in spec.agents:
        agent = build(REGISTRY, agent_spec)
        p = agent.select(ctx)
        picks[agent.name] = p
        # Rank-normalise priorities so agents with different scales combine fairly.
        ranks = np.empty(len(p.index))
        ranks[np.argsort(-np.asarray(p.priority), kind="stable")] = np.arange(len(p.index))
        norm = 1.0 - ranks / max(1, len(p.index))
        for i, pr, nr, why in zip(p.index, p.priority, norm, p.reasons):
            rows.append((int(i), agent.name, float(pr), float(nr), why))
    report = {"stream_pairs": int(len(pairs)), "per_agent": {a: int(len(p.index)) for a, p in picks.items()}}
    if not rows:
        report.update(selected=0, overlaps={}, per_locale={}, top_reasons=[], deduped=0)
        return pd.DataFrame(columns=CANDIDATE_COLUMNS), report

    votes = pd.DataFrame(rows, columns=["row", "agent", "raw", "norm", "reason"])
    grouped = votes.groupby("row").agg(
        agents=("agent", lambda s: ",".join(sorted(s))), n_agents=("agent", "size"),
        priority=("norm", "sum"), reasons=("reason", lambda s: "; ".join(s)),
        agent_scores=("agent", lambda s: None))
    raw = votes.groupby("row").apply(lambda g: json.dumps({a: round(v, 4) for a, v in zip(g.agent, g.raw)}),
                                     include_groups=False)
    grouped["agent_scores"] = raw
    if spec.combine.method == "vote":
        grouped = grouped[grouped.n_agents >= spec.combine.min_votes]
    cand = pairs.loc[grouped.index, ["query_id", "doc_id", "locale"]].join(grouped)
    before = len(cand)
    if labelled:
        keys = list(zip(cand.query_id, cand.doc_id))
        cand = cand[[k not in labelled for k in keys]]
    deduped = before - len(cand)

    cand = cand.sort_values("priority", ascending=False, kind="stable")
    cand = cand[cand.groupby("query_id").cumcount() < spec.max_per_query]
    contrast = spec.combine.contrast_per_query
    main_budget = spec.budget // (1 + contrast) if contrast else spec.budget
    chosen = _budgeted(cand, spec, main_budget)
    if contrast and len(chosen):
        chosen = pd.concat([chosen, _contrast(pairs, ctx.score, chosen, contrast, labelled)])
    chosen = chosen.assign(round=round_no).sort_values("priority", ascending=False, kind="stable")
    chosen["priority"] = chosen["priority"].round(4)

    overlaps = {}
    names = list(picks)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            sa, sb = set(picks[names[a]].index.tolist()), set(picks[names[b]].index.tolist())
            overlaps[f"{names[a]}&{names[b]}"] = len(sa & sb)
    selected_agents = chosen["agents"].str.split(",").explode().value_counts().to_dict() if len(chosen) else {}
    report.update(
        selected=int(len(chosen)), deduped=int(deduped), overlaps=overlaps,
        selected_per_agent={k: int(v) for k, v in selected_agents.items()},
        per_locale={k: int(v) for k, v in chosen["locale"].value_counts().items()},
        top_reasons=chosen["reasons"].head(5).tolist(),
    )
    return chosen[CANDIDATE_COLUMNS + ["locale"]].reset_index(drop=True), report


def _contrast(pairs, score, chosen, k: int, labelled):
    """For each picked query, its `k` lowest-scored other candidates: the labels of a query
    should not all be of one grade, or the model learns that a new language is relevant."""
    import pandas as pd

    taken = set(zip(chosen.query_id, chosen.doc_id)) | set(labelled or ())
    frame = pairs[["query_id", "doc_id", "locale"]].assign(score=score)
    frame = frame[frame.query_id.isin(set(chosen.query_id))]
    frame = frame[[k_ not in taken for k_ in zip(frame.query_id, frame.doc_id)]]
    low = frame.sort_values("score", kind="stable").groupby("query_id", sort=False).head(k)
    return pd.DataFrame({
        "query_id": low.query_id, "doc_id": low.doc_id, "locale": low.locale, "agents": "contrast",
        "n_agents": 1, "priority": 0.0, "agent_scores": [f'{{"contrast": {s:.4f}}}' for s in low.score],
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
