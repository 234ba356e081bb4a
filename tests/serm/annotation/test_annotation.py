"""Annotator agents, aggregation, the vote cache and the annotate stage on constructed cases
where the right answer is known."""

import numpy as np
import pandas as pd
import pytest

from serm.annotation.agreement import dawid_skene, human_audit_accuracy, level2, vote_weight
from serm.annotation.annotate import agent_accuracy, annotate
from serm.annotation.base import TRANSIENT, AnnotationContext, votes_frame
from serm.annotation.cache import VoteCache, agent_key
from serm.annotation.click_evidence import ClickEvidence
from serm.annotation.human import HumanJudge
from serm.policy import AgreementSpec, AnnotationSpec


def pairs_frame(rows):
    """rows: (query_id, doc_id, query, doc_text, impressions, clicks, mean_position)."""
    df = pd.DataFrame(rows, columns=["query_id", "doc_id", "query", "doc_text", "impressions", "clicks", "mean_position"])
    return df.assign(locale="en", doc_title="", mean_dwell_s=0.0)


DOCS = pd.DataFrame({"doc_id": ["d1", "d2", "d3"], "locale": "en", "title": ["Paris", "Rome", "Oslo"],
                     "text": ["Paris is the capital of France.", "Rome is the capital of Italy.",
                              "Oslo is the capital of Norway."]})
PAIRS = pairs_frame([
    ("q1", "d1", "capital of France", "Paris is the capital of France.", 4, 3, 1.0),
    ("q1", "d2", "capital of France", "Rome is the capital of Italy.", 4, 0, 2.0),
    ("q2", "d3", "capital of Norway", "Oslo is the capital of Norway.", 4, 2, 1.0),
])


def per_agent(rows):
    df = pd.DataFrame(rows, columns=["query_id", "doc_id", "agent", "grade"]).assign(intra_share=1.0)
    df["grade"] = df["grade"].astype("Int8")
    return df


# ----------------------------------------------------------------------------- aggregation
def test_dawid_skene_trusts_the_agent_that_agrees_with_the_consensus():
    # a, b, c agree on 30 pairs; on 10 more, `noisy` contradicts them. DS must learn that
    # `noisy` is the unreliable one and give it a lower accuracy.
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        truth = int(rng.integers(0, 4))
        for agent in ("a", "b", "c"):
            rows.append((f"q{i}", "d", agent, truth))
        rows.append((f"q{i}", "d", "noisy", truth if i < 30 else (truth + 2) % 4))
    post, acc = dawid_skene(per_agent(rows))
    assert acc["noisy"] < 0.85 < min(acc["a"], acc["b"], acc["c"])
    assert max(post[("q35", "d")], key=post[("q35", "d")].get) == rows[35 * 4][3]


def test_weighted_vote_follows_audited_reliability_over_a_head_count():
    # Two agents audited as poor outvote one audited as excellent: the weighted vote sides with
    # the excellent one, the majority with the head count.
    audits = pd.DataFrame([("good", 3, 3)] * 20 + [("bad1", 0, 3)] * 15 + [("bad1", 3, 3)] * 5
                          + [("bad2", 0, 3)] * 15 + [("bad2", 3, 3)] * 5, columns=["agent", "grade", "human_grade"])
    acc = human_audit_accuracy(audits)
    assert acc == {"bad1": round(6 / 22, 4), "bad2": round(6 / 22, 4), "good": round(21 / 22, 4)}
    assert vote_weight(0.25) == 0.0 and vote_weight(acc["good"]) > 2 * vote_weight(acc["bad1"])
    grades = per_agent([("q", "d", "good", 2), ("q", "d", "bad1", 1), ("q", "d", "bad2", 1)])
    weighted = AgreementSpec(inter_min_agents=2, inter_max_spread=1, aggregate="weighted", reliability="human_audit")
    out = level2(grades, weighted, "escalate", 1, "h", audits).iloc[0]
    assert out.status == "accepted" and out.grade == 2 and out.agreement > 0.5
    majority = level2(grades, AgreementSpec(inter_min_agents=2, inter_max_spread=1), "escalate", 1, "h").iloc[0]
    assert majority.grade == 1


def test_dawid_skene_aggregate_still_applies_the_spread_gate():
    grades = per_agent([("q1", "d", "a", 3), ("q1", "d", "b", 0), ("q2", "d", "a", 2), ("q2", "d", "b", 2)])
    out = level2(grades, AgreementSpec(inter_max_spread=1, aggregate="dawid_skene"), "escalate", 1, "h").set_index("query_id")
    assert out.loc["q1", "status"] == "escalated" and "spread 3" in out.loc["q1", "why"]
    assert out.loc["q2", "status"] == "accepted" and out.loc["q2", "grade"] == 2


# ----------------------------------------------------------------------------- agents
def test_click_evidence_debiases_position():
    # Same CTR, different ranks: the pair clicked at rank 4 (rarely examined) is more attractive.
    pairs = pairs_frame([("q1", "top", "x", "", 10, 3, 1.0), ("q1", "deep", "x", "", 10, 3, 4.0),
                         ("q2", "never", "x", "", 1, 0, 8.0)])
    events = pd.DataFrame(
        [("q1", "top", 1, i < 3) for i in range(10)] + [("q1", "deep", 4, i < 3) for i in range(10)]
        + [("q2", "never", 8, False)], columns=["query_id", "doc_id", "position", "clicked"])
    for model in ("pbm", "ctr"):
        v = ClickEvidence(model=model).vote(AnnotationContext(pairs=pairs, documents=DOCS, seed=0, events=events))
        g = dict(zip(v.doc_id, v.grade))
        assert g["deep"] > g["top"], (model, g)
        assert pd.isna(g["never"]), "an unclicked pair at a rarely examined rank says nothing"


def test_human_agent_votes_only_resolved_pairs_and_decides_them():
    resolved = pd.DataFrame({"query_id": ["q1"], "doc_id": ["d2"], "grade": [2], "reviewer": ["ana"]})
    ctx = AnnotationContext(pairs=PAIRS, documents=DOCS, seed=0, resolved=resolved)
    v = HumanJudge().vote(ctx).set_index("doc_id")
    assert v.loc["d2", "grade"] == 2 and "ana" in v.loc["d2", "rationale"]
    assert v.loc["d1", "grade"] is pd.NA and v.loc["d3", "grade"] is pd.NA

    spec = AnnotationSpec(agents=[{"name": "lexical", "samples": 1}, {"name": "click_evidence", "model": "ctr"},
                                  {"name": "human"}], agreement={"inter_min_agents": 2})
    _, labels, _, report = annotate(ctx, spec, 1, "h", log=lambda *_: None)
    got = labels.set_index("doc_id")
    assert got.loc["d2", "status"] == "human" and got.loc["d2", "grade"] == 2
    assert got.loc["d1", "status"] == "accepted"   # lexical and clicks agree on the answer
    assert report["human_resolved"] == 1


def test_teacher_grades_with_the_most_probable_grade_and_abstains_when_unsure():
    from serm.annotation.teacher import Teacher
    from serm.model.cross_encoder import RelevanceModel
    from serm.model.training import set_seed
    from serm.policy import ModelSpec

    set_seed(3)
    model = RelevanceModel.load("builtin:minilm-l6", ModelSpec(max_length=48), device="cpu")
    asked = []

    def models(ref):
        asked.append(ref)
        return model

    ctx = AnnotationContext(pairs=PAIRS, documents=DOCS, seed=0, models=models)
    v = Teacher(model="v7", samples=2, perturbation=0.5).vote(ctx)
    assert asked == ["v7"] and len(v) == 2 * len(PAIRS) and sorted(set(v["sample"])) == [0, 1]
    first = v[v["sample"] == 0]
    proba = model.predict_proba(PAIRS["query"], PAIRS["doc_title"], PAIRS["doc_text"])
    assert first["grade"].astype(int).tolist() == proba.argmax(axis=1).tolist()
    unsure = Teacher(model="v7", min_confidence=0.999).vote(ctx)
    assert unsure["grade"].isna().all() and unsure["rationale"].str.contains("min_confidence").all()


# ----------------------------------------------------------------------------- cache + ledger
def test_vote_cache_answers_a_repeated_configuration_and_not_a_changed_one(tmp_path):
    from serm.annotation.lexical import LexicalJudge

    spec = AnnotationSpec(agents=[{"name": "lexical", "samples": 2}, {"name": "click_evidence", "model": "ctr"}])
    ctx = AnnotationContext(pairs=PAIRS, documents=DOCS, seed=0)
    with VoteCache(tmp_path / "votes.sqlite") as cache:
        v1, l1, _, r1 = annotate(ctx, spec, 1, "h", log=lambda *_: None, cache=cache)
        v2, l2, _, r2 = annotate(ctx, spec, 2, "h", log=lambda *_: None, cache=cache)
    # every lexical vote comes back from the cache; click evidence follows the batch's clicks,
    # which the cache key does not see, so it is never cached
    assert r1["cached_votes"] == 0 and len(v2) == len(v1)
    assert r2["cached_votes"] == (v2.agent == "lexical").sum() == 2 * len(PAIRS)
    assert not v2[v2.agent == "click_evidence"].cached.any()
    cols = ["query_id", "doc_id", "agent", "sample", "grade", "rationale"]
    pd.testing.assert_frame_equal(v1[cols].sort_values(cols[:4]).reset_index(drop=True),
                                  v2[cols].sort_values(cols[:4]).reset_index(drop=True))
    assert r2["ledger"]["lexical"]["cached_votes"] == 2 * len(PAIRS)
    # Another threshold is another judge; an edited document is another pair.
    assert agent_key(LexicalJudge(samples=2)) != agent_key(LexicalJudge(samples=2, thresholds=(0.2, 0.5, 0.8)))
    edited = PAIRS.assign(doc_text=PAIRS.doc_text + " (updated)")
    with VoteCache(tmp_path / "votes.sqlite") as cache:
        _, hit = cache.lookup(agent_key(LexicalJudge(samples=2)), edited)
    assert not hit.any()


def test_transient_failures_are_not_cached(tmp_path):
    votes = votes_frame([("q1", "d1", "llm", 0, None, TRANSIENT + "timed out", 0.0, 0, 0.0),
                         ("q1", "d2", "llm", 0, 2, "Grade: 2", 5.0, 120, 0.001)])
    with VoteCache(tmp_path / "v.sqlite") as cache:
        assert cache.store("llm:x", PAIRS.iloc[:2], votes) == 1
        cached, hit = cache.lookup("llm:x", PAIRS.iloc[:2])
    assert hit.tolist() == [False, True] and cached["tokens"].tolist() == [120]


def test_policy_rejects_inter_min_agents_that_only_the_human_could_reach():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="besides `human`"):
        AnnotationSpec(agents=[{"name": "lexical"}, {"name": "human"}], agreement={"inter_min_agents": 2})


def test_noisy_judge_keeps_the_hidden_grade_at_its_accuracy_and_refuses_real_streams():
    from serm.annotation.noisy_judge import NoisyJudge
    from serm.errors import DataError

    many = pairs_frame([(f"q{i}", "d", "x", "", 1, 0, 1.0) for i in range(2000)])
    truth = {f"q{i}": i % 4 for i in range(2000)}
    ctx = AnnotationContext(pairs=many, documents=DOCS, seed=5, truth=lambda q, d: truth[q])
    v = NoisyJudge(accuracy=0.7, max_error=1).vote(ctx)
    right = (v["grade"].astype(int).to_numpy() == np.array([truth[q] for q in v.query_id]))
    assert abs(right.mean() - 0.7) < 0.03
    wrong = v[~right]
    assert (abs(wrong["grade"].astype(int).to_numpy() - np.array([truth[q] for q in wrong.query_id])) == 1).all()
    assert v["rationale"].str.startswith("simulated judge").all()
    with pytest.raises(DataError, match="simulation agent"):
        NoisyJudge().vote(AnnotationContext(pairs=many.head(3), documents=DOCS, seed=5))


def test_min_agreement_gate_escalates_a_split_jury_that_the_spread_gate_lets_through():
    grades = per_agent([("q", "d", "a", 3), ("q", "d", "b", 3), ("q", "d", "c", 0), ("q", "d", "e", 0), ("q", "d", "f", 3)])
    loose = AgreementSpec(inter_min_agents=3, inter_max_spread=3)
    assert level2(grades, loose, "escalate", 1, "h").iloc[0].status == "accepted"
    strict = AgreementSpec(inter_min_agents=3, inter_max_spread=3, inter_min_agreement=0.75)
    out = level2(grades, strict, "escalate", 1, "h").iloc[0]
    assert out.status == "escalated" and "agreement 0.6 < inter_min_agreement 0.75" in out.why


def test_a_reviewer_grade_imported_after_a_cached_abstention_still_decides_the_pair(tmp_path):
    """The `human` agent is never served from the vote cache: round 1 it abstains on a pair, a
    reviewer grades the pair, round 2 (same pair mined again) the reviewer's grade is the label."""
    spec = AnnotationSpec(agents=[{"name": "lexical", "samples": 1}, {"name": "click_evidence", "model": "ctr"},
                                  {"name": "human"}], agreement={"inter_min_agents": 2})
    with VoteCache(tmp_path / "votes.sqlite") as cache:
        ctx = AnnotationContext(pairs=PAIRS, documents=DOCS, seed=0)
        _, first, _, _ = annotate(ctx, spec, 1, "h", log=lambda *_: None, cache=cache)
        assert first.set_index("doc_id").loc["d1", "status"] == "accepted"
        resolved = pd.DataFrame({"query_id": ["q1"], "doc_id": ["d1"], "grade": [1], "reviewer": ["ana"]})
        ctx = AnnotationContext(pairs=PAIRS, documents=DOCS, seed=0, resolved=resolved)
        votes, second, _, report = annotate(ctx, spec, 2, "h", log=lambda *_: None, cache=cache)
    row = second.set_index("doc_id").loc["d1"]
    assert row.status == "human" and row.grade == 1
    assert not votes[votes.agent == "human"].cached.any() and votes[votes.agent == "lexical"].cached.all()
    assert report["escalated_total"] == 0, "a reviewer's decision is not an escalation"


def test_no_candidates_means_no_votes_and_no_labels():
    spec = AnnotationSpec(agents=[{"name": "lexical"}, {"name": "click_evidence"}])
    votes, labels, open_esc, report = annotate(AnnotationContext(pairs=PAIRS.iloc[0:0], documents=DOCS, seed=0),
                                               spec, 1, "h", log=lambda *_: None)
    assert len(votes) == len(labels) == len(open_esc) == 0 and report["candidates"] == 0 and report["accepted"] == 0


def test_agent_accuracy_scores_each_agents_level1_grade_against_the_hidden_one():
    rows = [("q1", "d1", "lexical", s, 3, "", 0.0, 0, 0.0) for s in range(3)]          # right
    rows += [("q1", "d2", "lexical", s, 3, "", 0.0, 0, 0.0) for s in range(3)]         # wrong
    rows += [("q1", "d1", "embedding", s, g, "", 0.0, 0, 0.0) for s, g in enumerate([3, 0, 1])]  # abstains
    rows += [("q1", "d2", "embedding", s, 0, "", 0.0, 0, 0.0) for s in range(3)]       # right
    votes = votes_frame(rows)
    truth = {("q1", "d1"): 3, ("q1", "d2"): 0}
    acc = agent_accuracy(votes, 0.67, lambda q, d: truth[(q, d)])
    assert acc == {"embedding": {"graded": 1, "accuracy": 1.0}, "lexical": {"graded": 2, "accuracy": 0.5}}
    assert agent_accuracy(votes_frame([("q1", "d1", "human", 0, None, "", 0.0, 0, 0.0)]), 0.67,
                          lambda q, d: 3) == {"human": {"graded": 0, "accuracy": None}}
