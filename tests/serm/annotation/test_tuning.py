"""Agreement thresholds chosen from the measured escalation/accuracy trade-off: the choice on a
constructed jury with a known answer, the Wilson bound against its closed form, and the real
lexical agent and a simulated judge tuned on labelled XQuAD pairs, cross-fitted, in the stage."""

import math

import numpy as np
import pandas as pd
import pytest

from serm.annotation.base import AnnotationContext
from serm.annotation.tuning import choose, held_out_pairs, pareto_front, trade_off, tune_agreement, wilson_lower
from serm.policy import AgreementSpec, AnnotationSpec
from tests.serm.annotation.xquad_pairs import english_splits


def _jury(n=200, disagree=None, prefix="q"):
    """Two consistent agents over binary grades: `good` votes the truth, `bad` the truth on the
    first n - `disagree` pairs (default half) and the opposite grade on the rest. Agreeing pairs
    are all right."""
    from serm.annotation.base import votes_frame

    disagree = n // 2 if disagree is None else disagree
    truth = {(f"{prefix}{i // 4}", f"d{i}"): (3 if i % 2 else 0) for i in range(n)}
    rows = []
    for i, ((q, d), g) in enumerate(truth.items()):
        for s in range(3):
            rows.append((q, d, "good", s, g, "", 0.0, 0, 0.0))
            rows.append((q, d, "bad", s, g if i < n - disagree else 3 - g, "", 0.0, 0, 0.0))
    return votes_frame(rows), truth


def test_wilson_bound_matches_its_closed_form():
    k, n, conf = 95, 100, 0.95
    z, p = 1.6448536269514722, 0.95
    expected = (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
    assert wilson_lower([k], [n], conf)[0] == pytest.approx(expected, abs=1e-9)
    assert wilson_lower([5], [5], 0.5)[0] == pytest.approx(1.0)           # 0.5: the point estimate
    assert wilson_lower([0], [0], 0.9)[0] == 0.0
    # more evidence, tighter bound
    assert wilson_lower([950], [1000], 0.9)[0] > wilson_lower([95], [100], 0.9)[0]


def test_the_choice_escalates_least_at_the_target_accuracy():
    votes, truth = _jury()
    spec = AgreementSpec(intra_min_share=0.66, inter_min_agents=1, inter_max_spread=3)
    curve = trade_off(votes, spec, truth, voters=2)
    everything = curve[(curve.inter_min_agents == 1) & (curve.inter_max_spread == 3) & (curve.inter_min_agreement == 0)]
    # accepting every pair: the disagreeing half ties 1-1 and goes to the lower grade (right half the time)
    assert (everything.escalation == 0).all() and everything.accuracy.iloc[0] == pytest.approx(0.75)
    curve["bound"] = wilson_lower(curve["correct"], curve["accepted"], 0.9)
    row, met = choose(curve, spec, target=0.95)
    assert met and row["escalation"] == pytest.approx(0.5) and row["accuracy"] == 1.0 and row["accepted"] == 100
    # the cheapest way there: both agents agree (2 agents, or spread 0, or agreement 1)
    assert row["inter_min_agents"] == 2 or row["inter_max_spread"] == 0 or row["inter_min_agreement"] == 1.0
    front = pareto_front(curve)
    assert [(f["escalation"], f["accuracy"]) for f in front] == [(0.0, 0.75), (0.5, 1.0)]
    # an unreachable target: the most accurate thresholds, flagged
    row, met = choose(curve, spec, target=1.0)
    assert not met and row["accuracy"] == 1.0 and row["escalation"] == pytest.approx(0.5)
    # a loose target: nothing escalates
    row, met = choose(curve, spec, target=0.6)
    assert met and row["escalation"] == 0.0


def test_candidates_harder_than_the_labelled_pairs_are_estimated_by_their_vote_patterns():
    """The labelled pairs are easy (the agents disagree on 10 of 200), the candidates hard (on
    half of them): measured on the labelled pairs alone, accepting everything looks accurate
    enough; counted per vote pattern on the candidates it is not, and the agreeing half is what
    may be accepted."""
    lab_votes, truth = _jury(200, disagree=10)
    cand_votes, _ = _jury(100, disagree=50, prefix="c")
    spec = AgreementSpec(inter_min_agents=1, inter_max_spread=3)
    alone = trade_off(lab_votes, spec, truth, voters=2)
    alone["bound"] = wilson_lower(alone["correct"], alone["accepted"], 0.9)
    row, met = choose(alone, spec, target=0.95)
    assert met and row["escalation"] == 0.0 and row["accuracy"] == pytest.approx(0.975)

    curve = trade_off(lab_votes, spec, truth, voters=2, candidates=cand_votes)
    assert (curve.cand_pairs == 100).all()
    every = curve[(curve.inter_min_agents == 1) & (curve.inter_max_spread == 3) & (curve.inter_min_agreement == 0)
                  & (curve.intra_min_share == spec.intra_min_share)].iloc[0]
    # half the candidates in the agreeing patterns (grade 0 or 3: 95 of 95 labelled pairs right
    # each, 96/97 smoothed), half in the disagreeing one, whose ties go to grade 0 (right on 5
    # of its 10 labelled pairs: 6/12)
    assert every.cand_accepted == 100 and every.est_accuracy == pytest.approx((96 / 97 + 6 / 12) / 2)
    agreeing = curve[(curve.inter_max_spread == 0) & (curve.intra_min_share == spec.intra_min_share)
                     & (curve.inter_min_agents == 1) & (curve.inter_min_agreement == 0)].iloc[0]
    assert agreeing.cand_accepted == 50 and agreeing.est_accuracy == pytest.approx(96 / 97)
    curve = curve.assign(escalation=curve.cand_escalation, accuracy=curve.est_accuracy, accepted=curve.cand_accepted)
    curve["bound"] = curve.est_accuracy - 1.2816 * curve.rate_var ** 0.5
    row, met = choose(curve, spec, target=0.95)
    assert met and row["escalation"] == pytest.approx(0.5)


def test_weighted_aggregation_moves_the_trade_off():
    """With reliability weights from human audits the good agent wins the ties: every pair
    accepted and all right."""
    votes, truth = _jury()
    audits = pd.DataFrame({"agent": ["good"] * 20 + ["bad"] * 20, "grade": [3] * 40,
                           "human_grade": [3] * 20 + [0] * 20})
    spec = AgreementSpec(inter_min_agents=1, inter_max_spread=3, aggregate="weighted", reliability="human_audit")
    curve = trade_off(votes, spec, truth, voters=2, audits=audits)
    curve["bound"] = wilson_lower(curve["correct"], curve["accepted"], 0.9)
    row, met = choose(curve, spec, target=0.95)
    assert met and row["escalation"] == 0.0 and row["accuracy"] == 1.0


@pytest.fixture(scope="module")
def xq():
    return english_splits(60, 15)          # labelled pairs, a stream, the documents


def _spec(**tune):
    """A strict hand-set policy (both agents, unanimous samples, the same grade) over an accurate
    lexical agent and a weak simulated judge."""
    return AnnotationSpec.model_validate({
        "agents": [{"name": "lexical", "samples": 3, "perturbation": 0.15, "calibration": "learned"},
                   {"name": "noisy_judge", "accuracy": 0.6, "samples": 3},
                   {"name": "human"}],
        "agreement": {"intra_min_share": 1.0, "inter_min_agents": 2, "inter_max_spread": 0,
                      "tune": {"target_accuracy": 0.95, "max_pairs": 200, **tune}}})


def test_held_out_pairs_are_whole_queries_within_the_cap(xq):
    labelled, _, _ = xq
    pairs = held_out_pairs(labelled, 100, seed=3)
    sizes = labelled.groupby("query_id").size()
    assert 0 < len(pairs) <= 100
    got = pairs.groupby("query_id").size()
    assert got.to_dict() == sizes[got.index].to_dict()       # whole queries only
    assert held_out_pairs(labelled, 100, seed=3).equals(pairs)
    assert not held_out_pairs(labelled, 100, seed=4).equals(pairs)


def test_real_agents_are_tuned_cross_fitted_and_the_stage_uses_the_choice(xq):
    from serm import stages

    labelled, stream, docs = xq
    truth = dict(zip(zip(labelled.query_id, labelled.doc_id), labelled.grade))
    truth.update(zip(zip(stream.query_id, stream.doc_id), stream.grade))
    ctx = AnnotationContext(pairs=stream.drop(columns="grade"), documents=docs, seed=5, labelled=labelled,
                            truth=lambda q, d: int(truth.get((q, d), 0)))
    spec = _spec()
    logs = []
    tuned = tune_agreement(ctx, spec, log=logs.append)        # no candidate votes: the labelled pairs alone
    rep = tuned.report
    assert rep["tuned"] and rep["pairs"] <= 200 and rep["folds"] == 2 and rep["locales"] == {"en": rep["pairs"]}
    assert rep["estimate"] == "labelled pairs"
    # the strict policy measured on the same pairs escalates most of them (the weak judge rarely
    # agrees with itself and with the lexical agent); the tuned thresholds reach the target and
    # escalate fewer, because the lexical agent alone is accurate enough on English
    m, pol = rep["measured"], rep["policy"]
    assert rep["met"] and m["accuracy_bound"] >= 0.95 and m["accuracy"] >= 0.95
    assert pol["escalation"] > 0.4 and m["escalation"] < pol["escalation"] - 0.2, (pol, m)
    assert tuned.spec.tune is None and tuned.spec.aggregate == "majority"
    assert rep["front"][0]["escalation"] <= m["escalation"] <= rep["front"][-1]["escalation"]
    assert logs and "agreement tuned on" in logs[0]

    # the stage tunes on the candidates' votes, applies the choice and reports both
    memo = {}
    _, labels, _, report = stages.annotate(ctx, spec, 1, "h", log=lambda *_: None, tuning_memo=memo)
    staged = report["agreement_tuning"]
    assert staged["estimate"].startswith("candidates") and staged["candidates"] == len(stream)
    assert report["agreement_used"] == staged["chosen"] and "labelled" in staged["measured"]
    assert staged["measured"]["escalation"] == pytest.approx(report["escalation_rate"], abs=1e-4)
    assert len(memo["votes"]) and memo["votes"].query_id.isin(set(labelled.query_id)).all()
    again = stages.annotate(ctx, spec, 1, "h", log=lambda *_: None, tuning_memo=memo)[3]
    assert again["agreement_tuning"]["chosen"] == staged["chosen"]          # the memo's votes, the same choice
    untuned = spec.model_copy(update={"agreement": spec.agreement.model_copy(update={"tune": None})})
    _, plain, _, plain_report = stages.annotate(ctx, untuned, 1, "h", log=lambda *_: None)
    assert "agreement_tuning" not in plain_report
    assert report["escalation_rate"] < plain_report["escalation_rate"]
    assert report["accepted"] > plain_report["accepted"]


def test_cross_fitting_never_fits_a_learned_cut_on_the_pairs_it_grades(xq):
    """Each fold's lexical votes say how many labelled pairs their cut was learned on: all but
    that fold's own."""
    import re

    labelled, stream, docs = xq
    tuned = tune_agreement(AnnotationContext(pairs=stream, documents=docs, seed=5, labelled=labelled,
                                             truth=lambda q, d: 0), _spec(folds=3))
    lex = tuned.votes[tuned.votes.agent == "lexical"]
    size = labelled.groupby("query_id").size()
    pairs = held_out_pairs(labelled, 200, seed=5)
    queries = sorted(pairs.query_id.unique())
    for f in range(3):
        fold = set(queries[f::3])
        fitted = {int(m) for r in lex[lex.query_id.isin(fold)].rationale
                  for m in re.findall(r"learned on (\d+) labelled pairs", r)}
        assert fitted == {len(labelled) - int(size[list(fold)].sum())}, (f, fitted)
    assert set(lex.query_id) == set(queries)


def test_too_few_labelled_pairs_keep_the_policy_thresholds(xq):
    labelled, stream, docs = xq
    ctx = AnnotationContext(pairs=stream, documents=docs, seed=5, labelled=labelled.head(10))
    tuned = tune_agreement(ctx, _spec(min_pairs=40))
    assert not tuned.report["tuned"] and "10 labelled pair(s) drawn (of 10) < tune.min_pairs 40" in tuned.report["why"]
    assert (tuned.spec.intra_min_share, tuned.spec.inter_min_agents, tuned.spec.inter_max_spread) == (1.0, 2, 0)
    assert tuned.spec.tune is None


def test_a_bad_tuning_field_names_itself():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="tune.target_accuracy"):
        _spec(target_accuracy=1.5)
    with pytest.raises(ValidationError, match="tune.bogus"):
        _spec(bogus=1)


def test_a_chosen_intra_share_keeps_what_the_trade_off_counted():
    """Two of three samples agreeing is a share of 2/3, reported as 0.6667: the cut the tuning
    picks must keep those agents when level 1 applies it."""
    from serm.annotation.agreement import level1
    from serm.annotation.base import votes_frame

    rows = [("q", "d", "a", s, g, "", 0.0, 0, 0.0) for s, g in enumerate([3, 3, 0])]
    votes = votes_frame(rows)
    curve = trade_off(votes, AgreementSpec(inter_min_agents=1), {("q", "d"): 3}, voters=1)
    kept = curve[(curve.accepted == 1) & (curve.inter_min_agreement == 0) & (curve.inter_max_spread == 3)]
    top = float(kept.intra_min_share.max())
    assert 0.66 < top < 0.6667
    assert level1(votes, top).grade.tolist() == [3]


def test_click_agents_are_not_run_on_labelled_pairs_and_a_round_without_candidates_keeps_the_policy(xq):
    labelled, stream, docs = xq
    spec = _spec()
    spec = spec.model_copy(update={"agents": [*spec.agents, type(spec.agents[0]).model_validate(
        {"name": "click_evidence", "model": "ctr", "min_sessions": 1})]})
    ctx = AnnotationContext(pairs=stream, documents=docs, seed=5, labelled=labelled, truth=lambda q, d: 0)
    tuned = tune_agreement(ctx, spec)
    assert set(tuned.votes.agent) == {"lexical", "noisy_judge"}          # labelled pairs were never shown
    kept = tune_agreement(ctx, spec, candidate_votes=tuned.votes.iloc[0:0])
    assert not kept.report["tuned"] and "no candidates this round" in kept.report["why"]


def test_a_bound_on_the_round_is_more_cautious_than_one_on_the_rate(xq):
    """`bound: round` adds the binomial spread of the round's few accepted labels: it never
    escalates fewer candidates than `bound: rate` on the same votes."""
    from serm import stages

    labelled, stream, docs = xq
    truth = dict(zip(zip(stream.query_id, stream.doc_id), stream.grade))
    ctx = AnnotationContext(pairs=stream.drop(columns="grade"), documents=docs, seed=5, labelled=labelled,
                            truth=lambda q, d: int(truth.get((q, d), 0)))
    reports = {}
    memo = {}
    for bound in ("round", "rate"):
        spec = _spec(bound=bound, target_accuracy=0.97)
        reports[bound] = stages.annotate(ctx, spec, 1, "h", log=lambda *_: None, tuning_memo=memo)[3]
    r, q = reports["round"]["agreement_tuning"], reports["rate"]["agreement_tuning"]
    assert r["bound"] == "round" and q["bound"] == "rate"
    assert q["measured"]["escalation"] <= r["measured"]["escalation"]
    assert q["measured"]["accuracy_bound"] >= r["measured"]["accuracy_bound"] or \
        q["measured"]["escalation"] < r["measured"]["escalation"]
