"""Drift of one stream batch and the evolution trigger, composed from three modules:

- `monitoring.descriptors`: the numeric per-query descriptors (`query_frame`, `vocabulary`,
  `tokens`) and the embedding scores the detectors compare;
- `monitoring.drift_report`: every detector of the policy in one Evidently report (`run_drift`),
  its verdicts (`DriftResult`) and the local Evidently workspace (`add_to_workspace`);
- `monitoring.trigger`: whether the round runs (`decide_trigger`, with the cooldown and the
  rounds-per-period cap over `round_history`).

The detectors' vocabulary (types, columns, default thresholds) and `duration` belong to the
policy (`serm.policy_schema`); they are re-exported here for existing callers. Installed packages
add detector types (`serm.plugins.DriftDetector`, entry point group `serm.drift_detectors`): their
per-query columns go through the same Evidently report, or they compute their own value.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from monitoring.descriptors import embedding_scores, query_frame, tokens, vocabulary
from monitoring.drift_report import (
    CATEGORICAL_COLUMNS,
    EMBEDDING,
    METHOD_NAMES,
    METHODS,
    MULTI_COLUMN,
    P_VALUE_METHODS,
    PROJECT,
    SHORT_NAMES,
    DetectorVerdict,
    DriftResult,
    add_to_workspace,
    run_drift,
)
from monitoring.trigger import decide_trigger, history_summary, rate_limit, round_history
from serm.policy_schema import DEFAULT_THRESHOLDS, DETECTOR_COLUMNS, duration

__all__ = [
    "CATEGORICAL_COLUMNS", "DEFAULT_THRESHOLDS", "DETECTOR_COLUMNS", "EMBEDDING", "METHOD_NAMES", "METHODS",
    "MULTI_COLUMN", "P_VALUE_METHODS", "PROJECT", "SHORT_NAMES", "DetectorVerdict", "DriftResult",
    "add_to_workspace", "batch_drift", "decide_trigger", "duration", "embedding_scores", "format_verdicts",
    "history_summary", "query_frame", "rate_limit", "round_history", "run_drift", "tokens", "vocabulary",
]


def batch_drift(reference, history: list[dict], policy, current, new_pairs: int, out_dir: Path,
                evidently_workspace: Path | None = None, batch_name: str = "", metadata: dict | None = None,
                now: datetime | None = None, project: str = PROJECT):
    """Drift of one batch (`current`: the per-query frame of `serm.stages.query_frame`) against
    `reference` (the frames production was trained on: `serm.history.reference_frame`), and the
    trigger decision over the committed rounds' `history` (`serm.history.round_history`).
    Returns (DriftResult, the dict a round records as its drift stage result)."""
    now = now or datetime.now(timezone.utc)
    vocab = vocabulary(reference["query"].tolist())
    ref = query_frame(reference, vocab, leave_one_out=True)
    cur = query_frame(current, vocab)
    result = run_drift(ref, cur, policy.drift, out_dir, evidently_workspace=evidently_workspace,
                       batch_name=batch_name, project=project, metadata=metadata)
    trigger, reason = decide_trigger(result, policy.drift.trigger, new_pairs, history, now)
    record = {"trigger": trigger, "reason": reason, "new_pairs": int(new_pairs),
              "trigger_policy": policy.drift.trigger.model_dump(mode="json"),
              "history": history_summary(policy.drift.trigger, history, now), **result.to_dict()}
    return result, record


def _fmt(value: float) -> str:
    """4 decimals, or 2 significant digits for tiny p-values (0.0000 would hide how small)."""
    return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.1e}"


def format_verdicts(result: DriftResult) -> str:
    """A table for the CLI: detector, value, rule, threshold, drifted, what the value is; one
    row per column under the multi-column detectors."""
    lines = [f"  {'detector':<22} {'value':>8}  {'rule':<4} {'threshold':<9}  {'drifted':<7}  value is"]
    for d in result.detectors:
        value = "n/a" if d.value != d.value else _fmt(d.value)
        what = d.details.get("skipped") or d.details.get("value_is", "")
        multi = "columns_judged" in d.details   # judged by its share of drifted columns
        if not multi and "skipped" not in d.details:
            what += f" ({d.details.get('method_name', '')})"
        lines.append(f"  {d.type:<22} {value:>8}  {d.comparison:<4} {d.threshold:<9g}  "
                     f"{'YES' if d.drifted else 'no':<7}  {what}")
        if multi:
            op = "<" if d.details.get("method") in P_VALUE_METHODS else ">="
            for col, info in d.details.get("columns", {}).items():
                if "skipped" in info:
                    lines.append(f"    {col:<20} {'n/a':>8}  {'':<4} {'':<9}  {'-':<7}  skipped: {info['skipped']}")
                    continue
                lines.append(f"    {col:<20} {_fmt(info['drift_score']):>8}  {op:<4} {info['column_threshold']:<9g}  "
                             f"{'yes' if info['drifted'] else 'no':<7}  {d.details.get('method_name', '')}")
    return "\n".join(lines)
