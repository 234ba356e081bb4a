"""Two-level agreement.

Level 1 (intra-agent): an agent's samples for a pair must agree — the modal grade's share of
its samples (abstentions count against it) must reach `intra_min_share`; otherwise the agent
abstains on that pair.
Level 2 (inter-agent): at least `inter_min_agents` agents must still vote, the spread of
their grades (max − min) must be ≤ `inter_max_spread`, and the aggregated label's agreement
≥ `inter_min_agreement`. The surviving votes are then aggregated
(`agreement.aggregate`):

- `majority`: the most frequent grade (ties go to the lower grade); agreement = its share.
- `dawid_skene`: Dawid & Skene (1979) EM over the round's votes (crowd-kit's implementation):
  each agent gets a confusion matrix, each pair a posterior over grades; the label is the
  posterior's mode, its agreement the posterior probability.
- `weighted`: a reliability-weighted vote. An agent of accuracy p over K=4 grades votes with
  weight log((K−1)·p / (1−p)) (the optimal weight for independent voters, Nitzan & Paroush
  1982; 0 for a random agent, never negative); agreement = the label's share of the weight.
  Accuracies come from `agreement.reliability`: `dawid_skene` (each agent's estimated
  accuracy, its confusion matrix's diagonal weighted by the grade priors) or `human_audit`
  (how often the agent's level-1 grade matched a human resolution of the same pair, Laplace
  smoothed: (matches + 1) / (audits + 2)).

Pairs failing either level are escalated (or rejected when the policy says `drop`) and never
reach training unless a human resolves them.
"""

from __future__ import annotations

import math

from serm import schema
from serm.schema import LabelStatus

GRADES = len(schema.GRADES)


def level1(votes, intra_min_share: float, exact: bool = False):
    """Per (pair, agent): grade (or null) and the modal share of its samples (rounded to 4
    decimals unless `exact`)."""
    import pandas as pd

    rows = []
    for (q, d, agent), g in votes.groupby(["query_id", "doc_id", "agent"], sort=False):
        grades = g["grade"].dropna().astype(int)
        n = len(g)
        if grades.empty:
            rows.append((q, d, agent, None, 0.0))
            continue
        counts = grades.value_counts()
        top = counts.max()
        mode = int(min(counts[counts == top].index))
        share = top / n
        rows.append((q, d, agent, mode if share >= intra_min_share else None, share if exact else round(share, 4)))
    out = pd.DataFrame(rows, columns=list(schema.LEVEL1_COLUMNS))
    out["grade"] = out["grade"].astype("Int8")
    return out


def vote_weight(accuracy: float) -> float:
    """Log-odds weight of an agent with this accuracy over 4 grades (0 at chance or below)."""
    p = min(max(float(accuracy), 1e-6), 1 - 1e-6)
    return max(0.0, math.log((GRADES - 1) * p / (1 - p)))


def dawid_skene(agent_grades):
    """Fit Dawid–Skene on the non-null level-1 grades. Returns (posteriors: dict pair → {grade:
    prob}, accuracy: dict agent → estimated accuracy)."""
    import pandas as pd
    from crowdkit.aggregation import DawidSkene

    voting = agent_grades.dropna(subset=["grade"])
    if voting.empty:
        return {}, {}
    df = pd.DataFrame({"task": list(zip(voting.query_id, voting.doc_id)), "worker": voting.agent.to_numpy(),
                       "label": voting.grade.astype(int).to_numpy()})
    ds = DawidSkene(n_iter=100, tol=1e-5)
    proba = ds.fit_predict_proba(df)
    posteriors = {task: {int(g): float(p) for g, p in row.items()} for task, row in proba.iterrows()}
    # errors_: index (worker, observed label), columns true label -> P(observed | true)
    errors, priors = ds.errors_, ds.priors_
    accuracy = {}
    for worker in df.worker.unique():
        acc = 0.0
        for true in priors.index:
            try:
                acc += float(priors[true]) * float(errors.loc[(worker, true), true])
            except KeyError:   # the agent never gave that grade: P(observed = true | true) = 0
                pass
        accuracy[str(worker)] = round(acc, 4)
    return posteriors, accuracy


def human_audit_accuracy(audits) -> dict[str, float]:
    """`audits`: agent, grade (its level-1 grade), human_grade. Laplace-smoothed accuracy."""
    if audits is None or not len(audits):
        return {}
    a = audits.dropna(subset=["grade", "human_grade"])
    hits = (a["grade"].astype(int) == a["human_grade"].astype(int)).groupby(a["agent"]).agg(["sum", "size"])
    return {str(agent): round((int(r["sum"]) + 1) / (int(r["size"]) + 2), 4) for agent, r in hits.iterrows()}


def reliabilities(agent_grades, spec, audits=None) -> dict[str, float]:
    """Accuracy per agent for the `weighted` vote (agents without an estimate: 0.5)."""
    if spec.reliability == "human_audit":
        acc = human_audit_accuracy(audits)
    else:
        acc = dawid_skene(agent_grades)[1]
    return {str(a): acc.get(str(a), 0.5) for a in agent_grades["agent"].unique()}


def level2(agent_grades, spec, on_disagreement: str, round_no: int, policy_hash: str, audits=None):
    """Per pair: the label and its status (see the module docstring). `audits` feeds
    `reliability: human_audit`."""
    import pandas as pd

    posteriors, weights = {}, {}
    if spec.aggregate == "dawid_skene":
        posteriors = dawid_skene(agent_grades)[0]
    elif spec.aggregate == "weighted":
        weights = {a: vote_weight(p) for a, p in reliabilities(agent_grades, spec, audits).items()}

    rows = []
    fail_status = LabelStatus.ESCALATED.value if on_disagreement == "escalate" else LabelStatus.REJECTED.value
    for (q, d), g in agent_grades.groupby(["query_id", "doc_id"], sort=False):
        voting = g.dropna(subset=["grade"])
        grades = voting["grade"].astype(int)
        agents = ",".join(f"{a}={int(x)}" for a, x in zip(voting.agent, grades))
        if len(voting) < spec.inter_min_agents:
            rows.append((q, d, None, 0.0, fail_status, agents, f"only {len(voting)} agent(s) agreed with themselves"))
            continue
        spread = int(grades.max() - grades.min())
        if spec.aggregate == "dawid_skene":
            post = posteriors.get((q, d), {})
            grade, agreement = _mode(post)
        elif spec.aggregate == "weighted":
            tally: dict[int, float] = {}
            for a, x in zip(voting.agent, grades):
                tally[int(x)] = tally.get(int(x), 0.0) + weights.get(a, 0.0)
            total = sum(tally.values())
            grade, top = _mode(tally)
            agreement = top / total if total > 0 else 0.0
            if total <= 0:   # every voter has weight 0: no evidence either way
                rows.append((q, d, None, 0.0, fail_status, agents, "every voting agent has reliability weight 0"))
                continue
        else:
            counts = grades.value_counts()
            grade, top = _mode(counts.to_dict())
            agreement = top / len(grades)
        agreement = round(float(agreement), 4)
        if spread > spec.inter_max_spread:
            rows.append((q, d, None, agreement, fail_status, agents, f"grades spread {spread} > {spec.inter_max_spread}"))
        elif agreement < spec.inter_min_agreement:
            rows.append((q, d, None, agreement, fail_status, agents,
                         f"agreement {agreement} < inter_min_agreement {spec.inter_min_agreement}"))
        else:
            rows.append((q, d, grade, agreement, LabelStatus.ACCEPTED.value, agents, ""))
    decided = [c for c in schema.LABEL_COLUMNS if c not in ("round", "policy_hash")]
    out = pd.DataFrame(rows, columns=decided)
    out["grade"] = out["grade"].astype("Int8")
    out["round"] = round_no
    out["policy_hash"] = policy_hash
    return out[list(schema.LABEL_COLUMNS)]


def _mode(tally: dict) -> tuple[int, float]:
    """(grade with the largest tally, ties to the lower grade; its tally)."""
    top = max(tally.values())
    return int(min(g for g, v in tally.items() if v == top)), float(top)
