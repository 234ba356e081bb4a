"""Casting the jury's votes: every agent on the context's pairs, through the vote cache."""

from __future__ import annotations

import dataclasses

from serm.agents import build
from serm.annotation.base import AnnotationContext, is_transient, votes_frame


def cast_votes(ctx: AnnotationContext, agents, cache=None, log=print):
    """(votes, ledger) of `agents` (agent specs) on `ctx.pairs`, through the vote cache when
    given; the ledger says what each jury member did and cost."""
    import time

    import pandas as pd

    from serm.annotation import REGISTRY
    from serm.annotation.cache import agent_key

    all_votes, ledger = [], {}
    for agent_spec in agents:
        agent = build(REGISTRY, agent_spec)
        t0 = time.perf_counter()
        cached, todo = None, ctx.pairs
        use_cache = cache is not None and agent.cacheable and len(ctx.pairs) > 0
        if use_cache:
            key = agent_key(agent, agent.cache_token(ctx))
            cached, hit = cache.lookup(key, ctx.pairs)
            todo = ctx.pairs[~hit]
        fresh = agent.vote(dataclasses.replace(ctx, pairs=todo)) if len(todo) else None
        if use_cache and fresh is not None:
            cache.store(key, todo, fresh)
        parts = [f.assign(cached=c) for f, c in ((cached, True), (fresh, False)) if f is not None and len(f)]
        if not parts:
            continue
        v = pd.concat(parts, ignore_index=True)
        seconds = round(time.perf_counter() - t0, 2)
        for member, g in v.groupby("agent", sort=False):
            ledger[member] = _ledger_entry(g, seconds)
        log(f"  {agent}: {len(v)} votes ({int(v.cached.sum())} cached), "
            f"{int(v['grade'].isna().sum())} abstentions ({seconds}s)")
        all_votes.append(v)
    votes = pd.concat(all_votes, ignore_index=True) if all_votes else votes_frame([]).assign(cached=False)
    votes["cached"] = votes["cached"].astype(bool)
    return votes, ledger


def _ledger_entry(g, seconds: float) -> dict:
    """What one jury member did and cost this round; cached votes cost nothing again."""
    fresh = g[~g.cached]
    return {"votes": int(len(g)), "pairs": int(g[["query_id", "doc_id"]].drop_duplicates().shape[0]),
            "cached_votes": int(g.cached.sum()), "abstentions": int(g["grade"].isna().sum()),
            "transport_errors": int(sum(is_transient(r) for r in fresh["rationale"])),
            "tokens": int(fresh["tokens"].sum()), "cost": round(float(fresh["cost"].sum()), 6),
            "mean_latency_ms": round(float(fresh["latency_ms"].mean()), 2) if len(fresh) else 0.0,
            "seconds": seconds}
