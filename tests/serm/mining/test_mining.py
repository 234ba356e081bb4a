import numpy as np
import pandas as pd

from serm.mining.base import MiningContext
from serm.mining.combine import mine
from serm.mining.uncertainty import Uncertainty
from serm.mining.user_feedback import UserFeedback
from serm.policy import AgentSpec, MiningSpec


def ctx_of(rows):
    pairs = pd.DataFrame(rows, columns=["query_id", "doc_id", "locale", "clicks", "mean_dwell_s", "p"])
    proba = np.array(pairs.pop("p").tolist(), dtype=np.float32)
    pairs["impressions"] = 2
    pairs["mean_position"] = 1.0
    return MiningContext(pairs=pairs, proba=proba, score=(proba * np.arange(4)).sum(1))


CONFIDENT_LOW = [0.97, 0.01, 0.01, 0.01]
CONFIDENT_HIGH = [0.01, 0.01, 0.01, 0.97]
UNSURE = [0.25, 0.25, 0.25, 0.25]


def test_user_feedback_picks_clicked_but_scored_low():
    ctx = ctx_of([("q1", "d1", "en", 2, 30.0, CONFIDENT_LOW),    # clicked, scored ~0: picked
                  ("q1", "d2", "en", 0, 0.0, CONFIDENT_LOW),     # not engaged
                  ("q2", "d3", "en", 3, 40.0, CONFIDENT_HIGH)])  # engaged and scored high: fine
    picks = UserFeedback(min_clicks=1, max_score=1.5).select(ctx)
    assert picks.index.tolist() == [0]
    assert "clicked 2x" in picks.reasons[0]


def test_uncertainty_picks_the_unsure_not_the_confident():
    ctx = ctx_of([("q1", "d1", "en", 0, 0, CONFIDENT_HIGH), ("q1", "d2", "en", 0, 0, UNSURE),
                  ("q2", "d3", "en", 0, 0, CONFIDENT_LOW), ("q2", "d4", "en", 0, 0, [0.5, 0.5, 0, 0])])
    for measure in ("entropy", "margin", "least_confidence"):
        picks = Uncertainty(measure=measure, top_share=0.25).select(ctx)
        assert picks.index.tolist() == [1], measure


def test_combiner_union_caps_dedupes_and_explains():
    rows = [("q1", f"d{i}", "en", 1, 20.0, UNSURE) for i in range(4)] + [("q2", "d9", "de", 1, 20.0, CONFIDENT_LOW)]
    ctx = ctx_of(rows)
    spec = MiningSpec(budget=10, max_per_query=2,
                      agents=[AgentSpec(name="user_feedback", max_score=2.0), AgentSpec(name="uncertainty", top_share=1.0)])
    cands, report = mine(ctx, spec, round_no=3, labelled={("q1", "d0")})
    keys = set(zip(cands.query_id, cands.doc_id))
    assert ("q1", "d0") not in keys and report["deduped"] >= 1
    assert (cands.groupby("query_id").size() <= 2).all()
    both = cands[cands.doc_id == "d1"].iloc[0]
    assert both.agents == "uncertainty,user_feedback"
    assert "clicked" in both.reasons and "entropy" in both.reasons
    assert report["overlaps"]["user_feedback&uncertainty"] == 5
    assert (cands["round"] == 3).all()


def test_budget_and_per_locale_minimum():
    rows = [(f"q{i}", "d", "en", 0, 0, UNSURE) for i in range(20)] + [("qx", "d", "de", 0, 0, [0.4, 0.3, 0.2, 0.1])]
    spec = MiningSpec(budget=5, agents=[AgentSpec(name="uncertainty", top_share=1.0)],
                      combine={"per_locale_min": 1})
    cands, report = mine(ctx_of(rows), spec, round_no=1)
    assert len(cands) == 5 and "de" in set(cands.locale)
    assert report["per_locale"]["de"] == 1


def test_contrast_pairs_share_the_budget():
    rows = [(f"q{i}", f"d{j}", "en", 1 if j == 0 else 0, 20.0 if j == 0 else 0.0,
             [0.6, 0.3, 0.05, 0.05] if j == 0 else [0.9 - 0.1 * j, 0.1 + 0.1 * j, 0, 0]) for i in range(6) for j in range(3)]
    spec = MiningSpec(budget=6, agents=[AgentSpec(name="user_feedback", max_score=2.0)],
                      combine={"contrast_per_query": 1})
    cands, _ = mine(ctx_of(rows), spec, round_no=1)
    assert len(cands) == 6
    main, contrast = cands[cands.agents != "contrast"], cands[cands.agents == "contrast"]
    assert len(main) == 3 and set(contrast.query_id) == set(main.query_id)
    assert (contrast.doc_id == "d1").all(), "the lowest-scored other candidate of each picked query"


# --------------------------------------------------------------------------- registry
def policy_errors(**mining):
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as exc:
        MiningSpec(**mining)
    return str(exc.value)


def test_every_registered_agent_builds_from_defaults():
    from serm.mining import REGISTRY

    assert sorted(REGISTRY) == ["click_model", "disagreement", "novelty", "uncertainty", "user_feedback"]
    spec = MiningSpec(agents=[AgentSpec(name=n) for n in REGISTRY])
    assert [a.name for a in spec.agents] == list(REGISTRY)
    for name, cls in REGISTRY.items():
        assert str(cls()).startswith(f"{name}(")


def test_unknown_agent_or_parameter_lists_the_valid_ones():
    msg = policy_errors(agents=[AgentSpec(name="oracle")])
    assert "unknown mining agent 'oracle'" in msg and "click_model, disagreement, novelty" in msg
    msg = policy_errors(agents=[AgentSpec(name="click_model", tau=0.5)])
    assert "[0].tau: unknown parameter" in msg and "min_attractiveness" in msg and "prior_strength" in msg
    msg = policy_errors(agents=[AgentSpec(name="novelty", quantile=1.5)])
    assert "[0].quantile" in msg
    msg = policy_errors(agents=[AgentSpec(name="disagreement", committee=["production", "yesterday"])])
    assert "yesterday" in msg and "production, previous or vN" in msg


def test_prefilter_and_combine_name_listed_agents():
    agents = [AgentSpec(name="user_feedback"), AgentSpec(name="uncertainty")]
    msg = policy_errors(agents=agents, prefilter={"agents": ["uncertainty"]})
    assert "'uncertainty' needs the model's scores" in msg and "click_model, novelty, user_feedback" in msg
    msg = policy_errors(agents=agents, prefilter={"agents": ["novelty"]})
    assert "prefilter.agents: 'novelty' is not a listed mining agent" in msg
    msg = policy_errors(agents=agents, combine={"per_agent_quota": {"novelty": 0.3}})
    assert "combine.per_agent_quota: 'novelty' is not a listed mining agent; listed: user_feedback, uncertainty" in msg


def test_a_round_where_no_agent_picks_anything_mines_nothing_cleanly():
    """Nothing engaged, nothing uncertain enough, pairs already labelled: an empty candidate
    frame with its columns, not a crash (a boolean *list* over an empty frame selects columns)."""
    ctx = ctx_of([("q1", "d1", "en", 0, 0.0, CONFIDENT_HIGH), ("q1", "d2", "en", 0, 0.0, CONFIDENT_LOW)])
    spec = MiningSpec(budget=5, agents=[AgentSpec(name="user_feedback"), AgentSpec(name="uncertainty", min_value=5.0)],
                      combine={"contrast_per_query": 1})
    cands, report = mine(ctx, spec, round_no=2, labelled={("q9", "d9")})
    assert len(cands) == 0 and {"query_id", "doc_id", "agents", "reasons"} <= set(cands.columns)
    assert report["selected"] == 0
