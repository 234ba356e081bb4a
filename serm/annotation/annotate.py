"""The annotation stage: every agent votes, two-level agreement decides, escalations go to
human review; only accepted and human-resolved labels are trainable."""

from __future__ import annotations

from serm.agents import build
from serm.annotation.agreement import level1, level2
from serm.annotation.base import AnnotationContext


def annotate(ctx: AnnotationContext, spec, round_no: int, policy_hash: str, human=None, log=print):
    """Returns (votes, labels, open_escalations, report)."""
    import time

    import pandas as pd

    from serm.annotation import REGISTRY

    all_votes, timings = [], {}
    for agent_spec in spec.agents:
        agent = build(REGISTRY, agent_spec)
        t0 = time.perf_counter()
        v = agent.vote(ctx)
        timings[agent.name] = round(time.perf_counter() - t0, 2)
        log(f"  {agent}: {len(v)} votes, {int(v['grade'].isna().sum())} abstentions ({timings[agent.name]}s)")
        all_votes.append(v)
    votes = pd.concat(all_votes, ignore_index=True)
    per_agent = level1(votes, spec.agreement.intra_min_share)
    labels = level2(per_agent, spec.agreement, spec.on_disagreement, round_no, policy_hash)

    escalated = labels[labels.status == "escalated"]
    resolved = labels.iloc[0:0]
    if human is not None and len(escalated):
        resolved, escalated = human.resolve(escalated)
        labels = pd.concat([labels[labels.status != "escalated"], resolved, escalated], ignore_index=True)

    abstain = per_agent.groupby("agent")["grade"].apply(lambda s: round(float(s.isna().mean()), 4)).to_dict()
    report = {
        "candidates": int(len(ctx.pairs)),
        "votes": int(len(votes)),
        "accepted": int((labels.status == "accepted").sum()),
        "human_resolved": int((labels.status == "human").sum()),
        "escalated_open": int((labels.status == "escalated").sum()),
        "rejected": int((labels.status == "rejected").sum()),
        "escalated_total": int((labels.status == "escalated").sum() + (labels.status == "human").sum()),
        "level1_abstention": abstain,
        "agent_seconds": timings,
        "mean_agreement_accepted": round(float(labels.loc[labels.status == "accepted", "agreement"].mean()), 4)
        if (labels.status == "accepted").any() else None,
        "grade_distribution": {int(k): int(v) for k, v in labels["grade"].dropna().astype(int).value_counts().items()},
    }
    return votes, labels, labels[labels.status == "escalated"].copy(), report
