"""Drift detectors (one Evidently report) and the trigger decision."""

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

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
from serm.schema import RoundManifest, StageEntry
from serm.policy import DetectorSpec, DriftSpec, TriggerSpec

from tests.conftest import ROOT

TINY = ROOT / "tests" / "policies" / "tiny.yaml"

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
def test_html_report_shares_evidentlys_library_and_renders(shifted, tmp_path):
    """A round's report loads Evidently's 3.5 MB JS library from ../../_evidently/ (data/_evidently:
    one copy for every round) instead of embedding it, and still renders in a browser."""
    import evidently

    from ..serm.test_ui import render

    res, tmp = shifted[0], shifted[1]
    html = Path(res.html_path)
    lib_dir = tmp.parent / "_evidently"
    lib = lib_dir / f"evidently-{evidently.__version__}.js"
    assert lib.stat().st_size > 1_000_000 and (lib_dir / "material-ui-icons.woff2").exists()
    text = html.read_text()
    assert f'<script src="../../_evidently/{lib.name}">' in text and html.stat().st_size < 1_000_000
    dom = render(html.as_uri(), tmp_path / "profile")
    root = dom[dom.index('id="root_metric'):]
    assert "MuiPaper-root" in root[:20000] and "query_chars" in root, "the dashboard was drawn by the shared library"


def test_html_and_json_artifacts(shifted):
    res, tmp = shifted[0], shifted[1]
    assert res.html_path == str(tmp / "out" / "drift.html")
    assert (tmp / "out" / "drift.html").stat().st_size > 10_000
    js = json.loads((tmp / "out" / "drift.json").read_text())
    assert js["drifted_any"] is True and js["rows"] == {"reference": 200, "current": 200}
    all_cols = [c for cols in DETECTOR_COLUMNS.values() for c in cols]
    assert set(js["columns"]) == set(all_cols)
    ev = {m["config"]["column"]: m["value"] for m in js["evidently"]["metrics"]}
    ev["query"] = ev.pop("query_embedding_use_m3")  # the embedding detector's projected column
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


# --------------------------------------------------------------------------- embedding detector
def _embedding_only(**det):
    return DriftSpec(detectors=[{"type": "embedding", **det}], trigger={"min_new_pairs": 0})


def test_embedding_detector_on_real_multilingual_questions(tmp_path):
    """XQuAD questions embedded by the multilingual USE: other English questions (random
    articles) are no drift; their Spanish translations are, and so are English questions of
    other articles; Evidently's K-S test on the out-of-fold scores decides."""
    from tests.drift_workspaces import questions

    ref = questions("en", 0, 150)
    res_same = run_drift(ref, questions("en", 150, 200), _embedding_only(), tmp_path / "same")
    res_new = run_drift(ref, questions("es", 150, 200), _embedding_only(), tmp_path / "new")
    (same_v,), (new_v,) = res_same.detectors, res_new.detectors
    assert same_v.threshold == 0.05 and same_v.details["embedder"] == "use-m3" and same_v.details["dimensions"] == 512
    assert not same_v.drifted and same_v.value >= 0.05, format_verdicts(res_same)
    assert new_v.drifted and new_v.value < 1e-6, format_verdicts(res_new)
    assert 0.35 < same_v.details["out_of_fold_auc"] < 0.65 < 0.9 < new_v.details["out_of_fold_auc"]
    # (embed time is reported in details["embed_seconds"], ~0.7 s for 350 queries; a speed is a
    # benchmark's claim, not a wall-clock bound a loaded machine can miss)
    assert new_v.details["embed_seconds"] is not None
    # same language, other articles (unshuffled ids keep an article's questions together): topic drift
    topics = run_drift(questions("en", 0, 150, shuffled=False), questions("en", 150, 200, shuffled=False),
                       _embedding_only(), tmp_path / "topics")
    assert topics.detectors[0].drifted, format_verdicts(topics)
    js = json.loads((tmp_path / "new" / "drift.json").read_text())
    (test,) = js["evidently"]["tests"]  # the verdict is Evidently's own test result
    assert test["status"] == "FAIL" and test["metric_config"]["params"]["column"] == "query_embedding_use_m3"
    assert "embedding p=" in new_v.describe() and "< 0.05" in new_v.describe()


def test_embedding_scores_are_out_of_fold():
    """512-d noise, 200 vs 200 rows: an in-sample classifier separates them perfectly (p > n);
    out-of-fold scores must not."""
    from monitoring.drift import embedding_scores

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 512)), rng.normal(size=(200, 512))
    ra, rb, auc = embedding_scores(a, b)
    assert len(ra) == 200 and len(rb) == 200 and 0.4 < auc < 0.6
    _, _, shifted = embedding_scores(a, b + 0.3)
    assert shifted > 0.9


def test_minilm_embedder_fallback(tmp_path):
    from tests.drift_workspaces import questions

    res = run_drift(questions("en", 0, 40), questions("zh", 40, 40), _embedding_only(embedder="minilm"), tmp_path)
    (v,) = res.detectors
    assert v.details["embedder"] == "minilm" and v.details["dimensions"] == 384
    assert v.drifted, format_verdicts(res)


# --------------------------------------------------------------------------- policy: trigger + embedding
def test_trigger_policy_fields_and_durations():
    t = TriggerSpec(cooldown="6h", max_rounds_per_period=2, period="1d")
    assert (t.cooldown, t.period, t.max_rounds_per_period) == (21600.0, 86400.0, 2)
    assert TriggerSpec(cooldown=90).cooldown == 90.0 and TriggerSpec(cooldown="1.5m").cooldown == 90.0
    assert TriggerSpec().cooldown == 0.0 and TriggerSpec().max_rounds_per_period is None
    assert DetectorSpec(type="embedding").threshold == 0.05 and DetectorSpec(type="score").threshold == 0.1
    assert DetectorSpec(type="embedding", threshold=0.01).threshold == 0.01


def test_bad_trigger_values_name_the_field_and_the_fix(tmp_path, default_policy_raw):
    import yaml

    from serm.errors import PolicyError
    from serm.policy import load_policy

    raw = default_policy_raw
    raw["drift"]["trigger"].update(cooldown="soon", max_rounds_per_period=0)
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(raw))
    with pytest.raises(PolicyError) as err:
        load_policy(f)
    msg = str(err.value)
    assert "drift.trigger.cooldown" in msg and "90s, 30m, 6h, 1d or 1w" in msg
    assert "drift.trigger.max_rounds_per_period" in msg


# --------------------------------------------------------------------------- cooldown + rounds per period
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def _hist(*minutes_ago, evolved=True):
    return [{"round": i + 1, "finished": (NOW - timedelta(minutes=m)).isoformat(), "evolved": evolved}
            for i, m in enumerate(minutes_ago)]


def test_cooldown_holds_a_drifted_round_back():
    drifted = _result(True, False)
    spec = TriggerSpec(min_new_pairs=0, cooldown="1h")
    trig, why = decide_trigger(drifted, spec, 10, _hist(300, 20), NOW)
    assert trig is False
    assert why.startswith("cooldown: evolution round 2 finished 20m ago < cooldown 1h")
    assert "next round from 2026-06-01T12:40:00+00:00" in why
    assert "the detectors alone would trigger: drift in query_descriptors" in why
    assert decide_trigger(drifted, spec, 10, _hist(300, 61), NOW)[0] is True
    # rounds that did not run the pipeline do not count; no drift stays the reason when calm
    assert decide_trigger(drifted, spec, 10, _hist(5, evolved=False), NOW)[0] is True
    assert decide_trigger(_result(False, False), spec, 10, _hist(5), NOW)[1].startswith("no detector drifted")
    assert decide_trigger(drifted, TriggerSpec(min_new_pairs=0, cooldown="1h", force=True), 10, _hist(5), NOW)[0]


def test_max_rounds_per_period():
    drifted = _result(True, True)
    spec = TriggerSpec(min_new_pairs=0, max_rounds_per_period=2, period="1d")
    trig, why = decide_trigger(drifted, spec, 10, _hist(2000, 600, 30), NOW)
    assert trig is False
    assert why.startswith("max_rounds_per_period: 2 evolution round(s) in the last 1d (round 2, 3) >= 2")
    assert decide_trigger(drifted, spec, 10, _hist(3000, 2000, 30), NOW)[0] is True


def test_round_history_reads_committed_manifests(tmp_path):
    from monitoring.drift import round_history
    from serm.schema import RoundManifest, StageEntry
    from serm.workspace import Workspace

    ws = Workspace.at(tmp_path)
    for r, stages, promoted in ((1, ("ingest", "drift", "mine"), True), (2, ("ingest", "drift"), False)):
        RoundManifest(round=r, stages={s: StageEntry("done") for s in stages}, promoted=promoted,
                      finished=f"2026-06-01T1{r}:00:00+00:00").save(ws.layout.round(r).committed_manifest)
    assert round_history(ws) == [
        {"round": 1, "finished": "2026-06-01T11:00:00+00:00", "evolved": True, "promoted": True},
        {"round": 2, "finished": "2026-06-01T12:00:00+00:00", "evolved": False, "promoted": False}]


# --------------------------------------------------------------------------- `serm drift`
@pytest.fixture(scope="module")
def servable(tmp_path_factory):
    """A workspace that can serve its next batch: an (untrained) production model in
    data/model, the seed reference frame, state.json. No git, DVC or Feast: `serm drift` needs none."""
    from serm.model.cross_encoder import RelevanceModel
    from serm.policy import load_policy
    from serm.workspace import Workspace

    from tests.drift_workspaces import stream_frame

    root = tmp_path_factory.mktemp("servable")
    policy = load_policy(TINY)
    ws = Workspace.at(root)
    model = RelevanceModel.load(policy.model.base_model, policy.model, device="cpu")
    model.save(ws.model_dir, metrics={}, lineage={"version": 0})
    (ws.data / "seed").mkdir(parents=True)
    stream_frame("en", 0, 40, 1.0, seed=3).to_parquet(ws.data / "seed" / "query_frame.parquet", index=False)
    (ws.state_path).write_text(json.dumps({"rounds_done": 0, "next_batch": 1, "production": 0, "production_round": 0}))
    return ws


def _serm_drift(ws, *flags):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "serm.cli", "drift", "--workspace", str(ws.root), "--policy", str(TINY),
                           *flags], capture_output=True, text=True, env=env, timeout=300)


def test_serm_drift_previews_the_next_batch_without_writing(servable):
    from serm.versioning import tree_checksum

    before = tree_checksum(servable.data)
    res = _serm_drift(servable)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "drift of next stream batch 1 (not ingested): locale es, 64 new pairs" in out
    for det in ("query_descriptors", "locale_mix", "score", "engagement"):
        assert det in out
    assert "unseen_token_share" in out and "threshold" in out
    assert "trigger: YES — drift in " in out and "locale_mix JS=" in out  # en reference, es batch
    assert "trigger policy: mode any, min_new_pairs 10, no cooldown" in out
    assert tree_checksum(servable.data) == before
    assert not (servable.dot / "rounds").exists() and not (servable.dot / "evidently").exists()
    assert (servable.dot / "drift-preview" / "r0001" / "drift.html").exists()
    # --json: the same decision as data, stdout holding the JSON alone
    res = _serm_drift(servable, "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout)
    assert got["batch"]["batch"] == 1 and got["batch"]["locale"] == "es" and got["new_pairs"] == 64
    assert got["trigger"] is True and "locale_mix JS=" in got["reason"]
    assert {d["type"] for d in got["detectors"]} >= {"query_descriptors", "locale_mix", "score", "engagement"}
    assert tree_checksum(servable.data) == before


def test_serm_drift_uses_the_round_in_progress(servable):
    """An ingested batch of a round in progress is what the round will measure: here the seed
    frame itself (no drift), so the trigger says no."""
    stage = servable.staging(1)
    (stage / "ingest").mkdir(parents=True)
    shutil.copy2(servable.data / "seed" / "query_frame.parquet", stage / "ingest" / "query_frame.parquet")
    RoundManifest(round=1, stages={"ingest": StageEntry("done", result={"batch": 1, "locale": "en", "pairs": 160})}
                  ).save(servable.layout.round(1).manifest)
    res = _serm_drift(servable)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "drift of round 1 in progress (ingested): locale en, 160 new pairs" in res.stdout
    assert "trigger: no — no detector drifted" in res.stdout, res.stdout
    assert "serving stream batch" not in res.stdout
