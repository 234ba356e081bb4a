"""The round's contracts: the promotion decision (every branch), the trigger decision, the typed
manifest written by the runner, and one real round with the promotion gate closed."""

from __future__ import annotations

import json

import pytest

from serm import schema, stages
from serm.policy import PromotionSpec
from serm.round import RoundRunner, trigger_decision
from serm.schema import Metrics, RoundManifest, RoundMetrics

from tests.reliability_workspaces import git, initialised_copy, policies, write_policy


def _metrics(cand_evolving, prod_evolving, cand_static, prod_static, evolving_queries=40) -> RoundMetrics:
    def sets(evolving, static):
        return {"static": {"ndcg@4": static, "locale": "en", "queries": 50},
                "evolving": {"ndcg@4": evolving, "locale": "es", "queries": evolving_queries}}

    return RoundMetrics(Metrics(sets(cand_evolving, cand_static)), Metrics(sets(prod_evolving, prod_static)))


GATE = PromotionSpec(metric="ndcg@4", min_gain=0.01, max_static_regression=0.02, min_test_queries=20)


def test_decide_promotes_a_gain_that_keeps_the_static_test():
    d = stages.decide(_metrics(0.70, 0.65, 0.80, 0.81), GATE)
    assert d.promote is True
    assert d.reason == "evolving ndcg@4 +0.0500 (>= 0.01), static change -0.0100, no paired test in the metrics"


def test_decide_refuses_a_gain_below_min_gain():
    d = stages.decide(_metrics(0.655, 0.65, 0.90, 0.80), GATE)
    assert d.promote is False
    assert d.reason == "evolving ndcg@4 gain +0.0050 < min_gain 0.01"


def test_decide_refuses_a_static_regression_beyond_the_limit():
    d = stages.decide(_metrics(0.80, 0.65, 0.75, 0.80), GATE)
    assert d.promote is False
    assert d.reason == "static ndcg@4 fell 0.0500 > max_static_regression 0.02"


def test_decide_refuses_a_test_set_below_the_minimum_size():
    """A big gain measured on 12 queries is noise: the reason names the set, its size and the bound."""
    d = stages.decide(_metrics(0.90, 0.50, 0.80, 0.80, evolving_queries=12), GATE)
    assert d.promote is False
    assert d.reason == ("the evolving test (es) has 12 queries with a relevant document < min_test_queries 20: "
                        "not promoting on noise")
    empty = RoundMetrics(Metrics({"static": {"ndcg@4": 0.8, "queries": 50}, "evolving": {"pairs": 0, "queries": 0}}),
                         Metrics({"static": {"ndcg@4": 0.8, "queries": 50}, "evolving": {"pairs": 0, "queries": 0}}))
    assert stages.decide(empty, GATE).reason.startswith("the evolving test has 0 queries")


def test_decide_reads_the_policy_metric():
    """The gate reads the metric the policy names, not the primary one of the Metrics objects."""
    m = RoundMetrics(Metrics({"static": {"ndcg@4": 0.5, "accuracy": 0.9, "queries": 30},
                              "evolving": {"ndcg@4": 0.9, "accuracy": 0.5, "queries": 30}}),
                     Metrics({"static": {"ndcg@4": 0.5, "accuracy": 0.9, "queries": 30},
                              "evolving": {"ndcg@4": 0.1, "accuracy": 0.6, "queries": 30}}))
    d = stages.decide(m, PromotionSpec(metric="accuracy", min_gain=0.0, max_static_regression=0.0))
    assert (d.promote, d.reason) == (False, "evolving accuracy gain -0.1000 < min_gain 0.0")


def _graded(cand: dict, prod: dict) -> RoundMetrics:
    def sets(grades):
        return {"static": {"ndcg@4": 0.80, "queries": 50, "locale": "en", **grades.get("static", {})},
                "evolving": {"ndcg@4": 0.70, "queries": 50, "locale": "de", **grades.get("evolving", {})}}

    out = RoundMetrics(Metrics(sets(cand)), Metrics(sets(prod)))
    out.candidate.sets["evolving"]["ndcg@4"] = 0.75   # the ranking gains: only the grades can refuse
    return out


def test_decide_refuses_a_candidate_whose_grades_regress_on_any_test_set():
    """Ranking can improve while the grades collapse: accuracy and macro-F1 are guarded on every
    set, and the reason names the metric, the set, its locale and the limit."""
    gate = PromotionSpec(min_gain=0.01, max_accuracy_regression=0.02, max_macro_f1_regression=0.05)
    held = {"static": {"accuracy": 0.90, "macro_f1": 0.80}, "evolving": {"accuracy": 0.85, "macro_f1": 0.70}}
    assert stages.decide(_graded(held, held), gate).promote is True
    worse_static_acc = {**held, "static": {"accuracy": 0.87, "macro_f1": 0.80}}
    d = stages.decide(_graded(worse_static_acc, held), gate)
    assert (d.promote, d.reason) == (False, "static (en) accuracy fell 0.0300 (0.9 -> 0.87) > max_accuracy_regression "
                                            "0.02: the candidate's grades regress")
    worse_evolving_f1 = {**held, "evolving": {"accuracy": 0.85, "macro_f1": 0.64}}
    d = stages.decide(_graded(worse_evolving_f1, held), gate)
    assert d.promote is False and d.reason.startswith("evolving (de) macro_f1 fell 0.0600") and \
        "max_macro_f1_regression 0.05" in d.reason
    # within the limit, or a guard switched off, promotes
    assert stages.decide(_graded(worse_evolving_f1, held), gate.model_copy(
        update={"max_macro_f1_regression": None})).promote is True
    slight = {**held, "static": {"accuracy": 0.89, "macro_f1": 0.79}}
    assert stages.decide(_graded(slight, held), gate).promote is True


def _paired_metrics(static_shift: float, evolving_shift: float, queries: int = 200) -> RoundMetrics:
    """Production's per-query NDCG drawn at random; the candidate's = production's + shift + noise,
    compared over the queries as the evaluate stage compares them."""
    import numpy as np

    rng = np.random.default_rng(7)
    prod, cand = {}, {}
    for name, shift in (("static", static_shift), ("evolving", evolving_shift)):
        base = rng.uniform(0.3, 0.9, queries)
        prod[name] = {f"q{i}": float(v) for i, v in enumerate(base)}
        cand[name] = {f"q{i}": float(v + shift + rng.normal(0, 0.03)) for i, v in enumerate(base)}
    means = {w: {n: {"ndcg@4": float(np.mean(list(v[n].values()))), "queries": queries,
                     "locale": "en" if n == "static" else "es"} for n in v} for w, v in (("c", cand), ("p", prod))}
    return RoundMetrics(Metrics(means["c"]), Metrics(means["p"]), paired=stages.paired(cand, prod))


def test_decide_keeps_production_when_the_candidate_is_significantly_worse_on_a_set():
    """The evolving gain clears min_gain and the static drop stays inside max_static_regression,
    but the static drop is consistent over 200 queries: the paired test keeps production."""
    gate = PromotionSpec(min_gain=0.01, max_static_regression=0.02)
    m = _paired_metrics(static_shift=-0.01, evolving_shift=+0.03)
    assert m.paired["static"]["p_value"] < 0.001 and m.paired["evolving"]["verdict"] == "better"
    d = stages.decide(m, gate)
    assert d.promote is False and d.reason.startswith("static (en) ndcg@4 is significantly worse than production's: "
                                                      "-0.01") and "promotion.significance: not_worse" in d.reason
    assert stages.decide(m, gate.model_copy(update={"significance": "off"})).promote is True
    # without the consistent static drop it promotes, and says the evolving gain's p
    ok = stages.decide(_paired_metrics(0.0, +0.03), gate)
    assert ok.promote is True and "evolving paired p=" in ok.reason


def test_decide_better_needs_a_significant_evolving_gain():
    gate = PromotionSpec(min_gain=0.0, significance="better")
    assert stages.decide(_paired_metrics(0.0, +0.03), gate).promote is True
    d = stages.decide(_paired_metrics(0.0, +0.0005), gate.model_copy(update={"alpha": 0.001}))
    assert d.promote is False and d.reason.startswith("the evolving (es) ndcg@4 gain is not significant")
    # metrics from before the test existed carry no paired comparisons: the other rules decide
    assert "no paired test" in stages.decide(_metrics(0.70, 0.65, 0.81, 0.81), gate).reason


def test_per_query_values_average_to_the_set_metrics():
    import numpy as np
    import pandas as pd

    from serm.evaluation import evaluate

    rows = [(f"q{q}", f"d{d}", g, "en") for q in range(6) for d, g in enumerate((3, 0, 1, 0))]
    j = pd.DataFrame(rows, columns=["query_id", "doc_id", "grade", "locale"])
    proba = np.random.default_rng(8).dirichlet(np.ones(4), len(j)).astype(np.float32)
    overall = evaluate(None, j, (4,), proba=proba)["overall"]
    for metric in ("ndcg@4", "accuracy"):
        values = stages.per_query(j, proba, metric)
        assert len(values) == 6 and np.mean(list(values.values())) == pytest.approx(overall[metric], abs=5e-5)
    with pytest.raises(ValueError, match="macro_f1"):
        stages.per_query(j, proba, "macro_f1")


def test_round_metrics_carry_the_baselines_beside_the_models():
    raw = {"candidate": {"static": {"ndcg@4": 0.7}}, "production": {"static": {"ndcg@4": 0.6}},
           "baselines": {"bm25": {"static": {"ndcg@4": 0.9, "locale": "en"}}, "bi_encoder": {"static": {"ndcg@4": 0.5}}}}
    rm = RoundMetrics.from_dict(raw)
    assert rm.baselines["bm25"].get("static", "ndcg@4") == 0.9
    assert rm.to_dict() == raw
    assert "baselines" not in RoundMetrics.from_dict({"candidate": {}, "production": {}}).to_dict()


def test_round_metrics_round_trip_the_metrics_file_format():
    raw = {"candidate": {"static": {"ndcg@4": 0.7, "accuracy": 0.8, "locale": "en"}, "evolving": {"ndcg@4": 0.6}},
           "production": {"static": {"ndcg@4": 0.6}, "evolving": {"ndcg@4": 0.5, "locale": "es"}}}
    rm = RoundMetrics.from_dict(raw)
    assert rm.to_dict() == raw
    assert rm.candidate.primary("static") == 0.7 and rm.production.locale("evolving") == "es"
    assert rm.candidate.get("evolving", "accuracy") is None


def test_trigger_decision_records_a_forced_round():
    fired = {"trigger": True, "reason": "drift: locale_mix"}
    quiet = {"trigger": False, "reason": "no detector drifted"}
    assert trigger_decision(fired, force=False) == {"run_pipeline": True, "forced_by_cli": False,
                                                    "reason": "drift: locale_mix"}
    assert trigger_decision(quiet, force=False) == {"run_pipeline": False, "forced_by_cli": False,
                                                    "reason": "no detector drifted"}
    assert trigger_decision(quiet, force=True) == {"run_pipeline": True, "forced_by_cli": True,
                                                   "reason": "forced; the trigger said: no detector drifted"}
    assert trigger_decision(fired, force=True)["forced_by_cli"] is False


def test_label_status_and_the_one_trainable_rule():
    import pandas as pd

    labels = pd.DataFrame({"query_id": list("abcd"), "doc_id": list("wxyz"),
                           "status": [s.value for s in schema.LabelStatus]})
    assert schema.LabelStatus.ACCEPTED == "accepted" and str(schema.LabelStatus.HUMAN) == "human"
    assert list(schema.trainable(labels).status) == ["accepted", "human"]


class _Policy:
    def hash(self):
        return "p1"


def test_the_runner_writes_the_manifest_it_resumes_from(tmp_path):
    """Stage status, results, failures and round fields go through the runner's writers and
    read back through the typed manifest; a done stage is not run again."""
    from serm.workspace import Workspace

    ws = Workspace.at(tmp_path)
    lines: list[str] = []
    r = RoundRunner(ws, _Policy(), 3, log=lines.append)
    calls = []
    assert r.run("ingest", lambda: calls.append(1) or {"batch": 4, "locale": "de"}) == {"batch": 4, "locale": "de"}
    assert r.run("ingest", lambda: calls.append(2) or {}) == {"batch": 4, "locale": "de"}
    assert calls == [1] and "[ingest] already done in this round, reusing its outputs" in lines
    with pytest.raises(ValueError, match="boom"):
        r.run("drift", lambda: (_ for _ in ()).throw(ValueError("boom")))
    r.record(batch=4, decision={"run_pipeline": True})
    man = RoundManifest.load(r.layout.manifest)
    assert man.round == 3 and man.batch == 4 and man.locale == "de" and man.decision == {"run_pipeline": True}
    assert man.done("ingest") and not man.done("drift")
    assert man.entry("drift").status == "failed" and man.entry("drift").error == "boom"
    raw = json.loads(r.layout.manifest.read_text())
    assert raw["stages"]["ingest"]["result"] == {"batch": 4, "locale": "de"}
    assert set(raw["stages"]["ingest"]) == {"status", "at", "seconds", "result"}
    assert RoundManifest.from_dict(raw).to_dict() == raw   # nothing lost in the round trip
    assert r.begin(4, "policy.yaml", "abc") is True        # resumed: stages are recorded
    assert RoundRunner(ws, _Policy(), 3).manifest.base == "abc"


def test_a_round_with_the_gate_closed_keeps_production(tmp_path_factory):
    """A real round (in this process, no kfp) whose candidate cannot pass `min_gain`: production
    is unchanged byte for byte, the round is committed as kept, its labels are kept for later."""
    from serm.evolve import evolve
    from serm.versioning import tree_checksum
    from serm.workspace import Workspace

    ws = initialised_copy(tmp_path_factory, "gate-closed")
    policies(tmp_path_factory)
    closed = write_policy(tmp_path_factory.mktemp("gate") / "closed.yaml",
                          promotion={"metric": "ndcg@4", "min_gain": 1.0, "max_static_regression": 1.0})
    w = Workspace.at(ws)
    model_before = tree_checksum(w.model_dir)
    lines: list[str] = []
    evolve(ws, closed, log=lines.append)
    text = "\n".join(lines)
    assert "running mine → annotate → check → train → evaluate → promote in this process" in text
    assert "[promote] keep production: evolving ndcg@4 gain" in text and "< min_gain 1.0" in text
    assert w.state()["production"] == 0 and w.state()["rounds_done"] == 1
    assert tree_checksum(w.model_dir) == model_before
    man = RoundManifest.load(w.layout.round(1).committed_manifest)
    assert man.promoted is False and man.tag is None and "min_gain 1.0" in man.reason
    assert man.done("train") and man.done("evaluate") and man.result("promote")["promote"] is False
    assert git(ws, "log", "-1", "--format=%s").startswith("serm: round 1 kept v0 (evolving ndcg@4 gain")
    assert "serm-model@v1.0.0" not in git(ws, "tag")
    assert [v["version"] for v in w.versions()["versions"]] == [0]
    assert w.layout.round_labels(1).exists(), "the round's labels are kept for the next round"
    assert not w.layout.round(1).staging.exists()
