import pandas as pd

from serm.annotation.agreement import level1, level2
from serm.annotation.base import votes_frame
from serm.policy import AgreementSpec


def votes(rows):
    return votes_frame([(q, d, a, s, g, "", 0.0, 0, 0.0) for q, d, a, s, g in rows])


def test_level1_agent_must_agree_with_itself():
    v = votes([("q", "d", "lex", 0, 3), ("q", "d", "lex", 1, 3), ("q", "d", "lex", 2, 2),   # 2/3 agree
               ("q", "d", "emb", 0, 0), ("q", "d", "emb", 1, 3), ("q", "d", "emb", 2, 1),   # all differ
               ("q", "d", "clk", 0, None)])                                                 # abstains
    out = level1(v, intra_min_share=0.66).set_index("agent")
    assert out.loc["lex", "grade"] == 3 and out.loc["lex", "intra_share"] == round(2 / 3, 4)
    assert pd.isna(out.loc["emb", "grade"])
    assert pd.isna(out.loc["clk", "grade"])


def test_level2_accepts_agreement_and_escalates_the_rest():
    per_agent = pd.DataFrame([
        ("q1", "d1", "a", 3, 1.0), ("q1", "d1", "b", 2, 1.0), ("q1", "d1", "c", 3, 1.0),     # accepted: 3
        ("q2", "d2", "a", 0, 1.0), ("q2", "d2", "b", 3, 1.0),                                # spread 3
        ("q3", "d3", "a", 1, 1.0), ("q3", "d3", "b", None, 0.3),                             # too few agents
        ("q4", "d4", "a", 1, 1.0), ("q4", "d4", "b", 2, 1.0)],                               # tie → lower
        columns=["query_id", "doc_id", "agent", "grade", "intra_share"])
    per_agent["grade"] = per_agent["grade"].astype("Int8")
    spec = AgreementSpec(intra_min_share=0.67, inter_min_agents=2, inter_max_spread=1)
    out = level2(per_agent, spec, "escalate", round_no=1, policy_hash="h").set_index("query_id")
    assert out.loc["q1", "status"] == "accepted" and out.loc["q1", "grade"] == 3
    assert out.loc["q1", "agreement"] == round(2 / 3, 4)
    assert out.loc["q2", "status"] == "escalated" and "spread" in out.loc["q2", "why"]
    assert out.loc["q3", "status"] == "escalated" and "only 1" in out.loc["q3", "why"]
    assert out.loc["q4", "grade"] == 1
    dropped = level2(per_agent, spec, "drop", 1, "h")
    assert set(dropped.status) == {"accepted", "rejected"}
