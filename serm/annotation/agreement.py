"""Two-level agreement.

Level 1 (intra-agent): an agent's samples for a pair must agree — the modal grade's share of
its samples (abstentions count against it) must reach `intra_min_share`; otherwise the agent
abstains on that pair.
Level 2 (inter-agent): at least `inter_min_agents` agents must still vote, and the spread of
their grades (max − min) must be ≤ `inter_max_spread`. The label is the majority grade (ties go
to the lower grade); its agreement is the share of voting agents that gave that grade.
Pairs failing either level are escalated (or rejected when the policy says `drop`) and never
reach training unless a human resolves them.
"""

from __future__ import annotations

LABEL_COLUMNS = ["query_id", "doc_id", "grade", "agreement", "status", "agents", "round", "policy_hash"]


def level1(votes, intra_min_share: float):
    """Per (pair, agent): grade (or null) and the modal share of its samples."""
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
        rows.append((q, d, agent, mode if share >= intra_min_share else None, round(share, 4)))
    out = pd.DataFrame(rows, columns=["query_id", "doc_id", "agent", "grade", "intra_share"])
    out["grade"] = out["grade"].astype("Int8")
    return out


def level2(agent_grades, spec, on_disagreement: str, round_no: int, policy_hash: str):
    """Per pair: the label and its status."""
    import pandas as pd

    rows = []
    fail_status = "escalated" if on_disagreement == "escalate" else "rejected"
    for (q, d), g in agent_grades.groupby(["query_id", "doc_id"], sort=False):
        voting = g.dropna(subset=["grade"])
        grades = voting["grade"].astype(int)
        agents = ",".join(f"{a}={int(x)}" for a, x in zip(voting.agent, grades))
        if len(voting) < spec.inter_min_agents:
            rows.append((q, d, None, 0.0, fail_status, agents, f"only {len(voting)} agent(s) agreed with themselves"))
            continue
        spread = int(grades.max() - grades.min())
        counts = grades.value_counts()
        top = counts.max()
        grade = int(min(counts[counts == top].index))
        agreement = round(top / len(grades), 4)
        if spread > spec.inter_max_spread:
            rows.append((q, d, None, agreement, fail_status, agents, f"grades spread {spread} > {spec.inter_max_spread}"))
        else:
            rows.append((q, d, grade, agreement, "accepted", agents, ""))
    out = pd.DataFrame(rows, columns=["query_id", "doc_id", "grade", "agreement", "status", "agents", "why"])
    out["grade"] = out["grade"].astype("Int8")
    out["round"] = round_no
    out["policy_hash"] = policy_hash
    return out
