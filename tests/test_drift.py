"""Drift detectors (one Evidently report) and the trigger decision."""

import json

import numpy as np
import pandas as pd
import pytest

from monitoring.drift import (
    DETECTOR_COLUMNS,
    PROJECT,
    DetectorVerdict,
    DriftResult,
    decide_trigger,
    format_verdicts,
    query_frame,
    run_drift,
    vocabulary,
)
from serm.errors import DataError
from serm.policy import DetectorSpec, DriftSpec, TriggerSpec

WORDS = [f"w{i}" for i in range(300)]
MIX = {"en": 0.6, "es": 0.25, "de": 0.15}


def frame(rng, n, locale_mix, word_pool, length, score_mean):
    """Per-query stream frame: queries of `length`..`length+3` tokens, locales, the production
    model's top score, engagement (mean_click_position NaN for ~30% of queries: no click)."""
    queries = [" ".join(rng.choice(word_pool, rng.integers(length, length + 4))) for _ in range(n)]
    pos = rng.integers(1, 4, n).astype(float)
    pos[rng.random(n) < 0.3] = np.nan
    return pd.DataFrame({"query_id": [f"q{i}" for i in range(n)], "query": queries,
                         "locale": rng.choice(list(locale_mix), n, p=list(locale_mix.values())),
                         "score": rng.normal(score_mean, 0.3, n), "ctr": rng.beta(2, 8, n),
                         "mean_click_position": pos})


def spec(**trigger):
    return DriftSpec(detectors=[{"type": t} for t in DETECTOR_COLUMNS], trigger=trigger or {"min_new_pairs": 0})


def prepared(ref, cur):
    vocab = vocabulary(ref["query"])
    return query_frame(ref, vocab, leave_one_out=True), query_frame(cur, vocab)


def same(seed, n=200):
    rng = np.random.default_rng(seed)
    return prepared(frame(rng, n, MIX, WORDS[:60], 4, 2.0), frame(rng, n, MIX, WORDS[:60], 4, 2.0))


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    """Longer queries from mostly unseen words with a non-ASCII word, a new locale (tr), lower
    scores; engagement unchanged. Run once with an Evidently workspace."""
    tmp = tmp_path_factory.mktemp("shifted")
    rng = np.random.default_rng(2)
    ref = frame(rng, 200, MIX, WORDS[:60], 4, 2.0)
    cur = frame(rng, 200, {"tr": 0.7, "en": 0.3}, WORDS[100:300], 9, 1.6)
    cur["query"] = cur["query"] + " ağaç"
    ref, cur = prepared(ref, cur)
    res = run_drift(ref, cur, spec(), tmp / "out", evidently_workspace=tmp / "evidently", batch_name="round 1")
    return res, tmp, ref, cur


# --------------------------------------------------------------------------- descriptors
def test_query_frame_descriptors():
    vocab = vocabulary(["Hello world", "hello there"])
    assert vocab == {"hello": 2, "world": 1, "there": 1}
    q = pd.DataFrame({"query_id": ["a", "b", "c"], "query": ["Hello HELLO wörld", "", "there world"],
                      "locale": ["en"] * 3})
    out = query_frame(q, vocab)
    assert out["query_chars"].tolist() == [17.0, 0.0, 11.0]
    assert out["query_tokens"].tolist() == [3.0, 0.0, 2.0]
    assert out["unseen_token_share"].tolist() == pytest.approx([1 / 3, 0.0, 0.0])
    assert out["non_ascii_share"].tolist() == pytest.approx([1 / 17, 0.0, 0.0])
    assert list(out.columns[:3]) == ["query_id", "query", "locale"]
    # a plain set works too; leave-one-out: "world"/"there" occur in only one reference query
    assert query_frame(q, {"hello"})["unseen_token_share"].tolist() == pytest.approx([1 / 3, 0.0, 1.0])
    ref = query_frame(pd.DataFrame({"query": ["Hello world", "hello there"]}), vocab, leave_one_out=True)
    assert ref["unseen_token_share"].tolist() == [0.5, 0.5]
    with pytest.raises(TypeError):
        query_frame(q, {"hello"}, leave_one_out=True)


def test_detector_columns_drive_policy_validation():
    assert DetectorSpec(type="engagement", columns=["ctr"]).columns == ["ctr"]
    with pytest.raises(ValueError, match="valid: ctr, mean_click_position"):
        DetectorSpec(type="engagement", columns=["clicks"])


# --------------------------------------------------------------------------- (1) same distribution
def test_same_distribution_does_not_trigger(tmp_path):
    ref, cur = same(seed=1)
    res = run_drift(ref, cur, spec(), tmp_path)
    assert [d.type for d in res.detectors] == list(DETECTOR_COLUMNS)
    assert not res.drifted_any, format_verdicts(res)
    trig, reason = decide_trigger(res, TriggerSpec(min_new_pairs=0), new_pairs=1000)
    assert trig is False and reason.startswith("no detector drifted")
    for name in DETECTOR_COLUMNS:
        assert name in reason


def test_false_alarm_rate_is_low_on_200_rows(tmp_path):
    """Guards the method choice: normed Wasserstein at 0.1 fires on ~2/3 of no-drift 200-row
    batches for the score alone; the K-S / Jensen-Shannon detectors stay quiet."""
    fired = [run_drift(*same(seed), spec(), tmp_path / str(seed)).drifted_any for seed in range(10, 16)]
    assert sum(fired) <= 2, fired


# --------------------------------------------------------------------------- (2) shifted stream
def test_shifted_stream_triggers_and_names_the_detectors(shifted):
    res = shifted[0]
    by = {d.type: d for d in res.detectors}
    assert by["query_descriptors"].drifted and by["query_descriptors"].value >= 0.75, format_verdicts(res)
    assert by["locale_mix"].drifted and by["locale_mix"].details["method"] == "jensenshannon"
    assert by["score"].drifted and by["score"].value < 0.001 and by["score"].details["method"] == "ks"
    assert not by["engagement"].drifted, format_verdicts(res)
    assert res.drifted_any and not res.drifted_all
    trig, reason = decide_trigger(res, TriggerSpec(min_new_pairs=10), new_pairs=500)
    assert trig is True
    for name in ("query_descriptors", "locale_mix", "score"):
        assert name in reason
    assert "engagement" not in reason
    assert "< 0.1" in reason and ">= 0.1" in reason  # values with their thresholds
    table = format_verdicts(res)
    assert "YES" in table and "unseen_token_share" in table


# --------------------------------------------------------------------------- (3) trigger rules
def _result(*drifted):
    return DriftResult([DetectorVerdict(t, d, 0.5 if d else 0.0, 0.1, {"value_label": "x="})
                        for t, d in zip(["query_descriptors", "score"], drifted)])


def test_trigger_rules(shifted):
    res = shifted[0]
    assert decide_trigger(res, TriggerSpec(min_new_pairs=5000), 100) == (False, "only 100 new pairs < min_new_pairs 5000")
    assert decide_trigger(_result(False, False), TriggerSpec(force=True), 0) == (True, "forced by policy (drift.trigger.force)")
    trig, why = decide_trigger(res, TriggerSpec(mode="all", min_new_pairs=0), 100)
    assert trig is False and "not drifted: engagement" in why and "locale_mix" in why
    assert decide_trigger(_result(True, True), TriggerSpec(mode="all", min_new_pairs=0), 0)[0] is True
    assert decide_trigger(_result(True, False), TriggerSpec(mode="any", min_new_pairs=0), 0) == (
        True, "drift in query_descriptors x=0.5 >= 0.1")
    assert decide_trigger(_result(False, False), TriggerSpec(min_new_pairs=0), 0)[0] is False


# --------------------------------------------------------------------------- (4) artifacts
def test_html_and_json_artifacts(shifted):
    res, tmp = shifted[0], shifted[1]
    assert res.html_path == str(tmp / "out" / "drift.html")
    assert (tmp / "out" / "drift.html").stat().st_size > 10_000
    js = json.loads((tmp / "out" / "drift.json").read_text())
    assert js["drifted_any"] is True and js["rows"] == {"reference": 200, "current": 200}
    all_cols = [c for cols in DETECTOR_COLUMNS.values() for c in cols]
    assert set(js["columns"]) == set(all_cols)
    ev = {m["config"]["column"]: m["value"] for m in js["evidently"]["metrics"]}
    for col in all_cols:  # the per-column values are Evidently's own
        assert js["columns"][col]["drift_score"] == pytest.approx(ev[col], abs=1e-6)
        assert isinstance(js["columns"][col]["drifted"], bool)
    assert js["columns"]["unseen_token_share"]["drifted"] is True
    assert js["columns"]["locale"]["method"] == "jensenshannon"
    statuses = {t["metric_config"]["params"]["column"]: t["status"] for t in js["evidently"]["tests"]}
    assert statuses["score"] == "FAIL" and statuses["ctr"] == "SUCCESS"
    assert res.to_dict()["detectors"][0]["details"]["columns"]["query_chars"]["drifted"] is True


# --------------------------------------------------------------------------- (5) Evidently workspace
def test_evidently_workspace_holds_the_project_and_runs(shifted):
    from evidently.ui.workspace import Workspace

    res, tmp, ref, cur = shifted
    ws_dir = tmp / "evidently"
    ws = Workspace(str(ws_dir))
    (project,) = ws.search_project(PROJECT)
    runs = ws.list_runs(project.id)
    assert len(runs) == 1
    assert ws.get_run(project.id, runs[0]).name == "round 1"
    run_drift(ref, cur, spec(), tmp / "out2", evidently_workspace=ws_dir, batch_name="round 2")
    ws = Workspace(str(ws_dir))
    (project,) = ws.search_project(PROJECT)  # found, not created twice
    assert len(ws.list_runs(project.id)) == 2


# --------------------------------------------------------------------------- inputs
def test_column_subset_missing_column_and_empty_column(tmp_path):
    ref, cur = same(seed=5, n=80)
    sub = DriftSpec(detectors=[{"type": "engagement", "columns": ["ctr"]}, {"type": "score", "threshold": 0.05}])
    res = run_drift(ref, cur, sub, tmp_path / "a")
    assert list(res.detectors[0].details["columns"]) == ["ctr"]
    with pytest.raises(DataError, match="lacks column"):
        run_drift(ref, cur.drop(columns=["score"]), sub, tmp_path / "b")
    cur = cur.assign(mean_click_position=np.nan)  # nobody clicked: skipped, said so
    res = run_drift(ref, cur, spec(), tmp_path / "c")
    eng = {d.type: d for d in res.detectors}["engagement"]
    assert eng.details["columns"]["mean_click_position"]["skipped"].startswith("no values in the current")
    assert eng.details["columns_judged"] == 1
    assert "skipped" in format_verdicts(res)
    json.loads((tmp_path / "c" / "drift.json").read_text())
