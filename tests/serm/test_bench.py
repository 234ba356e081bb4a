"""`serm bench` end to end at toy size: every strategy runs from one seed model on the same
stream, the JSON and the plot are written, label quality is measured against the hidden grades."""

import json

from serm.bench import bench

TOY = {"xquad": dict(seed=24, batch=10, test=8, teacher=24, budget=8)}


def test_bench_runs_every_strategy_and_writes_results(tmp_path):
    lines = []
    result = bench(("xquad",), quick=True, rounds=1, sizes=TOY, out_dir=tmp_path, log=lines.append, resamples=500)
    written = sorted(tmp_path.glob("evolution-*.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["summary"] == json.loads(json.dumps(result["summary"]))
    assert (tmp_path / f"{written[0].stem}-xquad.png").stat().st_size > 10_000
    recs = {(r["strategy"], r["round"]): r for r in result["records"]}
    strategies = ("serm", "self_training", "random", "uncertainty_only", "gold", "no_new_labels")
    assert {s for s, _ in recs} == set(strategies) | {"bm25", "bi_encoder"}
    seed = recs[("serm", 0)]
    assert all(recs[(s, 0)]["static"] == seed["static"] for s in strategies), "one seed model for all"
    for s in ("serm", "random", "uncertainty_only"):
        r = recs[(s, 1)]
        assert 0.0 <= r["escalation_rate"] <= 1.0 and r["candidates"] <= TOY["xquad"]["budget"]
        assert r["accepted"] == 0 or 0.0 <= r["accepted_label_accuracy"] <= 1.0
    assert recs[("gold", 1)]["new_labels"] > 0 and recs[("no_new_labels", 1)]["new_labels"] == 0
    assert recs[("self_training", 1)]["new_labels"] == TOY["xquad"]["budget"]
    assert result["sizes"]["xquad"]["budget"] == 8 and result["policies"]["xquad"]["hash"]
    assert any("| serm | 1 |" in line for line in lines), "the table is printed"
    # fixed test sets: each language's own test and the union seen so far, scored every round
    assert {"static", "evolving", "es", "seen"} <= set(recs[("serm", 1)])
    assert recs[("serm", 1)]["es"] == recs[("serm", 1)]["evolving"] == recs[("serm", 1)]["seen"]
    assert recs[("serm", 0)]["es"]["queries"] == recs[("serm", 1)]["es"]["queries"] > 0
    # reference rankers on the same tests, and serm tested against every other row, paired over queries
    base = {r["strategy"]: r for r in result["records"] if r["strategy"] in ("bm25", "bi_encoder")}
    assert set(base) == {"bm25", "bi_encoder"} and base["bm25"]["es"]["ndcg@4"] > 0.5
    sig = result["significance"]["xquad"]["1"]
    assert set(sig) >= {"static", "es", "seen"}
    for other in ("self_training", "random", "uncertainty_only", "gold", "no_new_labels", "bm25", "bi_encoder"):
        c = sig["es"][other]
        assert c["queries"] == recs[("serm", 1)]["es"]["queries"] and 0 < c["p_value"] <= 1
        assert c["ci_low"] <= c["delta"] <= c["ci_high"] and c["verdict"] in ("better", "worse", "tie")
        if other not in ("bm25", "bi_encoder"):   # one seed: its own run's Δ is the pooled one
            assert list(c["delta_per_seed"]) == ["13"] and abs(c["delta_per_seed"]["13"] - c["delta"]) < 1e-4
    # Holm over the round's family: never below the raw p, and a tie stays a tie
    family = [c for cmp in sig.values() for c in cmp.values()]
    assert all(c["p_value"] <= c["p_holm"] <= 1 for c in family)
    assert all(c["verdict_holm"] == "tie" for c in family if c["verdict"] == "tie")
    assert max(c["p_holm"] for c in family) >= min(1.0, len(family) * min(c["p_value"] for c in family)) - 1e-9
    assert any("paired randomization" in line for line in lines), "the significance table is printed"
    assert "_per_query" not in json.loads(written[0].read_text())["records"][0]
    # where the time went: every phase ran, and the phases account for the dataset's wall time
    phases = result["phase_seconds"]["xquad"]
    assert set(phases) == {"baselines", "teacher", "seed models", "stream", "select", "train", "evaluate"}
    assert sum("teacher on" in line for line in lines) == 1, "one teacher per dataset, not one per seed"
    assert all(v >= 0 for v in phases.values()) and phases["evaluate"] > 0
    assert 0.8 * result["wall_seconds"]["xquad"] <= sum(phases.values()) <= result["wall_seconds"]["xquad"] + 1
    assert sum(r["evaluate_seconds"] for r in result["records"] if r.get("round", 0) > 0) <= phases["evaluate"]
    assert any("time by phase" in line for line in lines)


def test_per_seed_delta_shows_a_lead_that_flips_between_seeds():
    """Two seeds, serm ahead of self-training by 0.2 on seed 1 and behind by 0.1 on seed 2: the
    seed-averaged paired test sees +0.05 per query, the per-seed Δ shows the flip."""
    from serm.bench import per_seed_delta, significance

    queries = [f"q{i}" for i in range(40)]

    def rec(strategy, seed, value):
        return {"dataset": "toy", "strategy": strategy, "seed": seed, "round": 1,
                "static": {"ndcg@4": value, "queries": len(queries)},
                "_per_query": {"static": {q: value for q in queries}}}

    rows = [rec("serm", 1, 0.8), rec("self_training", 1, 0.6), rec("serm", 2, 0.5), rec("self_training", 2, 0.6)]
    assert per_seed_delta(rows, "self_training", 1, "static") == {"1": 0.2, "2": -0.1}
    c = significance(rows, resamples=200)["toy"]["1"]["static"]["self_training"]
    assert abs(c["delta"] - 0.05) < 1e-9 and c["delta_per_seed"] == {"1": 0.2, "2": -0.1}
