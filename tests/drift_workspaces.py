"""Workspaces for the monitoring, report and UI tests, built from the files a round commits
(no ML pipeline): two committed rounds whose drift results are real Evidently reports of real
XQuAD questions (English reference; batch 1 Spanish, batch 2 German), v0 and v1 in
versions.json, v1 production."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from serm import schema
from serm.schema import Metrics, RoundManifest, RoundMetrics, StageEntry
from serm.workspace import Workspace

DETECTORS = [{"type": "query_descriptors"}, {"type": "locale_mix"}, {"type": "score"},
             {"type": "engagement"}, {"type": "embedding"}]


def questions(locale: str, start: int, n: int, shuffled: bool = True) -> pd.DataFrame:
    """Questions `start`..`start+n` of `locale` in a fixed random order of question ids (the
    same order in every locale, so translations line up). Unshuffled, the ids (SQuAD's,
    time-prefixed) keep each article's questions together: a slice is a few topics."""
    from serm.data import xquad

    q = xquad.load_questions()
    q = q[q.locale == locale].sort_values("question_id")
    if shuffled:
        q = q.iloc[np.random.default_rng(0).permutation(len(q))]
    q = q.iloc[start:start + n]
    return q[["query_id", "query", "locale"]].reset_index(drop=True)


def stream_frame(locale: str, start: int, n: int, score_mean: float, seed: int) -> pd.DataFrame:
    """A per-query frame as serm.stages.query_frame builds it (scores and clicks drawn)."""
    rng = np.random.default_rng(seed)
    f = questions(locale, start, n)
    pos = rng.integers(1, 5, n).astype(float)
    pos[rng.random(n) < 0.3] = np.nan
    return f.assign(score=rng.normal(score_mean, 0.4, n), impressions=10, clicks=rng.integers(0, 4, n),
                    ctr=rng.beta(2, 8, n), mean_click_position=pos)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str))


def metrics(static_ndcg, evolving_ndcg, locale, acc=0.8):
    return {"static": {"ndcg@4": static_ndcg, "ndcg@10": static_ndcg + 0.02, "accuracy": acc, "macro_f1": acc - 0.2,
                       "locale": "en"},
            "evolving": {"ndcg@4": evolving_ndcg, "ndcg@10": evolving_ndcg + 0.02, "accuracy": acc - 0.05,
                         "macro_f1": acc - 0.3, "locale": locale}}


def two_round_workspace(root: Path, now: datetime | None = None) -> Workspace:
    """Round 1 (batch 1, es) promoted v1; round 2 (batch 2, de) kept v1. Drift stage results
    come from `monitoring.drift.batch_drift` against the seed frame, so they are the real
    thing, and each batch's drift snapshot lands in the Evidently project."""
    from monitoring.dashboard import evidently_path, project_name
    from monitoring.drift import batch_drift
    from serm import history
    from serm.policy import DriftSpec

    now = now or datetime.now(timezone.utc)
    t0, t1, t2 = now - timedelta(hours=3), now - timedelta(hours=2), now - timedelta(hours=1)
    ws = Workspace.at(root)
    (ws.data / "seed").mkdir(parents=True, exist_ok=True)
    stream_frame("en", 0, 150, 2.0, seed=1).to_parquet(ws.data / "seed" / "query_frame.parquet", index=False)
    _write(ws.state_path, {"rounds_done": 0, "next_batch": 1, "production": 0, "production_round": 0})
    v0 = {"version": 0, "tag": "serm-model@v0.0.0", "round": 0, "parent": None,
          "metrics": metrics(0.72, 0.61, "es", 0.78), "created": _iso(t0)}
    _write(ws.versions_path, {"production": 0, "versions": [v0], "events": [{"event": "promoted", "version": 0}]})

    class Policy:  # the two sections batch_drift reads
        drift = DriftSpec(detectors=DETECTORS, trigger={"min_new_pairs": 100})

    rounds = [(1, "es", 150, 1.6, t1, True), (2, "de", 350, 1.7, t2, False)]
    for r, locale, start, score, finished, promoted in rounds:
        rdir = ws.round_dir(r)
        cur = stream_frame(locale, start, 200, score, seed=10 + r)
        _, record = batch_drift(history.reference_frame(ws), history.round_history(ws), Policy, cur, 1000, rdir,
                                evidently_workspace=evidently_path(ws), project=project_name(ws),
                                batch_name=f"round {r}", metadata={"round": str(r), "batch": str(r), "locale": locale},
                                now=finished - timedelta(minutes=20))
        stage = lambda result=None: StageEntry("done", _iso(finished), 1.0, result)  # noqa: E731
        cand = metrics(0.73, 0.70, locale, 0.82) if promoted else metrics(0.71, 0.62, locale, 0.8)
        prod = metrics(0.72, 0.61, locale, 0.78) if promoted else metrics(0.73, 0.63, locale, 0.82)
        reason = ("evolving ndcg@4 +0.0900 (>= 0.002), static change +0.0100" if promoted
                  else "evolving ndcg@4 gain -0.0100 < min_gain 0.002")
        RoundManifest(
            round=r, batch=r, started=_iso(finished - timedelta(minutes=30)),
            stages={"ingest": stage({"batch": r, "locale": locale, "valid": 1200, "quarantined": 0,
                                     "pairs": 1000, "queries": 200}),
                    "drift": stage(record), "mine": stage(), "annotate": stage(), "check": stage(),
                    "train": stage(), "evaluate": stage(), "promote": stage({"promote": promoted})},
            decision={"run_pipeline": True, "forced_by_cli": False, "reason": record["reason"]},
            promoted=promoted, reason=reason, tag="serm-model@v1.0.0" if promoted else None,
            finished=_iso(finished)).save(ws.layout.round(r).committed_manifest)
        _write(rdir / schema.MINING_REPORT.name, {"stream_pairs": 1000, "scored_pairs": 1000, "budget": 160,
                                             "selected": 150 + 5 * r, "per_agent": {"user_feedback": 90, "uncertainty": 60},
                                             "selected_per_agent": {"user_feedback": 80, "uncertainty": 55}})
        _write(rdir / schema.ANNOTATION_REPORT.name, {"candidates": 150 + 5 * r, "votes": 1200, "accepted": 100 + 10 * r,
                                                 "human_resolved": 20, "escalated_open": 10 + r, "rejected": 5,
                                                 "escalated_total": 30 + r, "mean_agreement_accepted": 0.9,
                                                 "grade_distribution": {"0": 90, "3": 40},
                                                 "accepted_rate": 0.71, "escalation_rate": 0.2,
                                                 "level1_abstention": {"lexical": 0.0, "click_evidence": 0.4},
                                                 "simulation_agent_accuracy": {
                                                     "lexical": {"graded": 150, "accuracy": 0.8733},
                                                     "click_evidence": {"graded": 90, "accuracy": 0.9556}}})
        _write(rdir / schema.METRICS.name, RoundMetrics(Metrics(cand), Metrics(prod)).to_dict())
        reg = json.loads(ws.versions_path.read_text())
        if promoted:
            reg["versions"].append({"version": 1, "tag": "serm-model@v1.0.0", "round": r, "parent": 0,
                                    "metrics": cand, "created": _iso(finished)})
            reg["production"] = 1
            reg["events"].append({"event": "promoted", "version": 1, "round": r})
        _write(ws.versions_path, reg)
        _write(ws.state_path, {"rounds_done": r, "next_batch": r + 1, "production": reg["production"],
                               "production_round": 1})
    return ws
