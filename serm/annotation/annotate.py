"""The annotation stage: every agent votes (through the vote cache), two-level agreement
decides, escalations go to human review; only accepted and human-resolved labels are trainable.

The `human` agent is not one voter among others: where a reviewer graded a pair, that grade is
the label (status `human`); it takes no part in the agreement of the other agents.
"""

from __future__ import annotations

from serm.data import without_pairs
from serm.annotation.agreement import level1, level2, reliabilities
from serm.annotation.base import HUMAN, AnnotationContext
from serm.annotation.voting import cast_votes
from serm.schema import LabelStatus

REVIEWED = "resolved by a reviewer"   # the `why` of a label a reviewer's imported grade decided


def annotate(ctx: AnnotationContext, spec, round_no: int, policy_hash: str, human=None, log=print,
             cache=None, audits=None, tuning_memo=None):
    """Returns (votes, labels, open_escalations, report).

    `human`: a `SimulatedHuman` (or None) resolving escalations up to its budget; `cache`: a
    `VoteCache` (or None); `audits`: earlier level-1 grades beside human grades (agent, grade,
    human_grade) for `reliability: human_audit`. With `agreement.tune` the thresholds are
    chosen once the candidates' votes are in (`serm.annotation.tuning`; `tuning_memo`: a dict
    keeping the votes on the labelled pairs for a rerun on the same inputs) and the report's
    `agreement_tuning` says how.
    """
    import pandas as pd

    votes, ledger = cast_votes(ctx, spec.agents, cache, log)
    # a reviewer's grade decides its pair (one sample: it passes level 1 at any share)
    graded = votes[(votes.agent == HUMAN) & votes["grade"].notna()]
    decided = set(zip(graded.query_id, graded.doc_id))
    tuned = None
    if spec.agreement.tune is not None:
        from serm.annotation.tuning import tune_agreement

        tuned = tune_agreement(ctx, spec, without_pairs(votes[votes.agent != HUMAN], decided), cache, audits, log,
                               tuning_memo)
        spec = spec.model_copy(update={"agreement": tuned.spec})

    per_agent = level1(votes, spec.agreement.intra_min_share)
    by_human = per_agent[(per_agent.agent == HUMAN) & per_agent.grade.notna()]
    machine = without_pairs(per_agent[per_agent.agent != HUMAN], decided)
    labels = level2(machine, spec.agreement, spec.on_disagreement, round_no, policy_hash, audits)
    if len(by_human):
        labels = pd.concat([labels, human_labels(by_human, round_no, policy_hash)], ignore_index=True)

    escalated = labels[labels.status == LabelStatus.ESCALATED]
    if human is not None and len(escalated):
        resolved, escalated = human.resolve(escalated)
        labels = pd.concat([labels[labels.status != LabelStatus.ESCALATED], resolved, escalated], ignore_index=True)

    abstain = per_agent.groupby("agent")["grade"].apply(lambda s: round(float(s.isna().mean()), 4)).to_dict()
    report = {
        "candidates": int(len(ctx.pairs)),
        "votes": int(len(votes)),
        "accepted": int((labels.status == LabelStatus.ACCEPTED).sum()),
        "human_resolved": int((labels.status == LabelStatus.HUMAN).sum()),
        "escalated_open": int((labels.status == LabelStatus.ESCALATED).sum()),
        "rejected": int((labels.status == LabelStatus.REJECTED).sum()),
        # escalated this round: still open, or resolved by the simulated reviewer (a reviewer's
        # imported grade for a re-mined pair decided it without an escalation)
        "escalated_total": int((labels.status == LabelStatus.ESCALATED).sum()
                               + ((labels.status == LabelStatus.HUMAN) & (labels.why != REVIEWED)).sum()),
        "level1_abstention": abstain,
        "aggregate": spec.agreement.aggregate,
        "ledger": ledger,
        "cost": round(sum(e["cost"] for e in ledger.values()), 6),
        "tokens": int(sum(e["tokens"] for e in ledger.values())),
        "cached_votes": int(votes.cached.sum()),
        "agent_seconds": {k: e["seconds"] for k, e in ledger.items()},
        "mean_agreement_accepted": round(float(labels.loc[labels.status == LabelStatus.ACCEPTED, "agreement"].mean()), 4)
        if (labels.status == LabelStatus.ACCEPTED).any() else None,
        "grade_distribution": {int(k): int(v) for k, v in labels["grade"].dropna().astype(int).value_counts().items()},
    }
    # shares of the round's candidates: passed both levels / went to people
    n = len(ctx.pairs)
    report["accepted_rate"] = round(report["accepted"] / n, 4) if n else None
    report["escalation_rate"] = round(report["escalated_total"] / n, 4) if n else None
    if spec.agreement.aggregate == "weighted" and len(machine):
        report["reliability"] = reliabilities(machine, spec.agreement, audits)
    if tuned is not None:
        from serm.annotation.tuning import THRESHOLDS

        report["agreement_tuning"] = tuned.report
        report["agreement_used"] = {k: getattr(spec.agreement, k) for k in THRESHOLDS}
    return votes, labels, labels[labels.status == LabelStatus.ESCALATED].copy(), report


def human_labels(graded, round_no: int, policy_hash: str):
    """Label rows (status `human`) for pairs a reviewer graded: `graded` has query_id, doc_id,
    grade. The one place a human label row is built."""
    import pandas as pd

    return pd.DataFrame({
        "query_id": graded.query_id.to_numpy(), "doc_id": graded.doc_id.to_numpy(),
        "grade": graded.grade.astype("Int8").to_numpy(), "agreement": 1.0, "status": LabelStatus.HUMAN.value,
        "agents": [f"human={int(g)}" for g in graded.grade], "why": REVIEWED, "round": round_no,
        "policy_hash": policy_hash})


def agent_accuracy(votes, intra_min_share: float, truth) -> dict:
    """Simulation-only diagnostic: each agent's level-1 grade against the hidden grade
    `truth(query_id, doc_id)`, over the pairs it did not abstain on. Never read by the pipeline."""
    per_agent = level1(votes, intra_min_share)
    out = {}
    for agent, g in per_agent.groupby("agent", sort=True):
        graded = g[g.grade.notna()]
        right = sum(int(gr) == truth(q, d) for q, d, gr in zip(graded.query_id, graded.doc_id, graded.grade))
        out[agent] = {"graded": int(len(graded)), "accuracy": round(right / len(graded), 4) if len(graded) else None}
    return out

