"""Drift detectors over the stream (Evidently) and the trigger decision.

Each detector declared in the policy becomes Evidently `ValueDrift` metrics with tests in ONE
report of the new batch against the reference (the queries the production model was trained
on), over numeric per-query descriptors, never raw text:

- `query_descriptors`: query_chars, query_tokens, unseen_token_share, non_ascii_share —
  normed Wasserstein distance per column; drifted when the share of drifted columns reaches
  `share_threshold`.
- `locale_mix`: the locale column, Jensen-Shannon distance vs `threshold`.
- `score`: the production model's top expected grade per query, normed Wasserstein vs `threshold`.
- `engagement`: ctr, mean_click_position, like query_descriptors.

The verdicts are Evidently's own test results, read from the snapshot.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

DETECTOR_COLUMNS = {
    "query_descriptors": ["query_chars", "query_tokens", "unseen_token_share", "non_ascii_share"],
    "locale_mix": ["locale"],
    "score": ["score"],
    "engagement": ["ctr", "mean_click_position"],
}
METHODS = {"locale_mix": "jensenshannon"}  # every other column: normed Wasserstein distance
PROJECT = "SERM stream drift"
_TOKEN = re.compile(r"\w+", re.UNICODE)


def _tokens(text: str) -> set[str]:
    return set(_TOKEN.findall(str(text).lower()))


def vocabulary(texts) -> dict[str, int]:
    """Document frequency of each token over `texts`."""
    from collections import Counter

    df: Counter = Counter()
    for t in texts:
        df.update(_tokens(t))
    return dict(df)


def query_frame(queries, reference_vocab: dict[str, int], leave_one_out: bool = False):
    """Add numeric descriptors per query. With `leave_one_out` (for the reference itself) a
    token counts as unseen when no *other* reference query has it, so the reference's own
    unseen share is an honest baseline rather than zero."""
    out = queries.copy()
    q = out["query"].astype(str)
    toks = [_tokens(s) for s in q]
    out["query_chars"] = q.str.len().astype(float)
    out["query_tokens"] = [float(len(t)) for t in toks]
    own = 1 if leave_one_out else 0
    out["unseen_token_share"] = [sum(reference_vocab.get(w, 0) - own <= 0 for w in t) / len(t) if t else 0.0
                                 for t in toks]
    out["non_ascii_share"] = [sum(ord(c) > 127 for c in s) / max(1, len(s)) for s in q]
    return out


@dataclass
class DetectorVerdict:
    type: str
    drifted: bool
    value: float
    threshold: float
    details: dict = field(default_factory=dict)


@dataclass
class DriftResult:
    detectors: list[DetectorVerdict]
    html_path: str | None = None
    json_path: str | None = None

    @property
    def drifted_any(self) -> bool:
        return any(d.drifted for d in self.detectors)

    @property
    def drifted_all(self) -> bool:
        return bool(self.detectors) and all(d.drifted for d in self.detectors)

    def to_dict(self) -> dict:
        return {"detectors": [asdict(d) for d in self.detectors], "drifted_any": self.drifted_any,
                "drifted_all": self.drifted_all, "html_path": self.html_path, "json_path": self.json_path}


def run_drift(reference, current, spec, out_dir: Path, evidently_workspace: Path | None = None,
              batch_name: str = "") -> DriftResult:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    metrics, plan = [], []
    for det in spec.detectors:
        cols = det.columns or DETECTOR_COLUMNS[det.type]
        method = METHODS.get(det.type, "wasserstein")
        for col in cols:
            metrics.append(ValueDrift(column=col, method=method, threshold=det.threshold))
            plan.append((det, col, method))
    numeric = sorted({c for _, c, _ in plan if c != "locale"})
    categorical = ["locale"] if any(c == "locale" for _, c, _ in plan) else []
    dd = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    cols = numeric + categorical
    ref = Dataset.from_pandas(reference[cols].reset_index(drop=True), data_definition=dd)
    cur = Dataset.from_pandas(current[cols].reset_index(drop=True), data_definition=dd)
    snapshot = Report(metrics, include_tests=True).run(current_data=cur, reference_data=ref, name=batch_name or None)

    d = snapshot.dict()
    values = {m["config"]["column"]: m["value"] for m in d["metrics"] if m["config"].get("type", "").endswith("ValueDrift")}
    failed = {t["metric_config"]["params"]["column"]: t["status"] == "FAIL" for t in d["tests"]
              if t["metric_config"]["params"].get("type", "").endswith("ValueDrift")}

    verdicts = []
    for det in spec.detectors:
        cols_ = det.columns or DETECTOR_COLUMNS[det.type]
        per_col = {c: {"drift_score": round(float(values[c]), 4), "drifted": bool(failed[c]),
                       "method": METHODS.get(det.type, "wasserstein"), "column_threshold": det.threshold}
                   for c in cols_}
        if len(cols_) == 1:
            (c,) = cols_
            verdicts.append(DetectorVerdict(det.type, per_col[c]["drifted"], per_col[c]["drift_score"],
                                            det.threshold, {"columns": per_col}))
        else:
            share = sum(v["drifted"] for v in per_col.values()) / len(cols_)
            verdicts.append(DetectorVerdict(det.type, share >= det.share_threshold, round(share, 4),
                                            det.share_threshold, {"columns": per_col, "value_is": "share of drifted columns"}))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, json_path = out_dir / "drift.html", out_dir / "drift.json"
    snapshot.save_html(str(html_path))
    result = DriftResult(verdicts, str(html_path), str(json_path))
    json_path.write_text(json.dumps({"verdicts": result.to_dict(), "evidently": d,
                                     "rows": {"reference": len(reference), "current": len(current)}},
                                    indent=2, default=str))
    if evidently_workspace is not None:
        add_to_workspace(Path(evidently_workspace), snapshot, batch_name)
    return result


def add_to_workspace(path: Path, snapshot, name: str = "") -> None:
    """Keep the snapshot in a local Evidently workspace (`evidently ui --workspace PATH`)."""
    from evidently.ui.workspace import Workspace

    ws = Workspace.create(str(path))
    projects = [p for p in ws.list_projects() if p.name == PROJECT]
    project = projects[0] if projects else ws.create_project(PROJECT, description="SERM query stream vs reference")
    ws.add_run(project.id, snapshot, name=name or None)


def decide_trigger(result: DriftResult, trigger, new_pairs: int) -> tuple[bool, str]:
    if trigger.force:
        return True, "forced by policy (drift.trigger.force)"
    if new_pairs < trigger.min_new_pairs:
        return False, f"only {new_pairs} new pairs < min_new_pairs {trigger.min_new_pairs}"
    drifted = [d for d in result.detectors if d.drifted]
    desc = ", ".join(f"{d.type} {d.value:.3f} >= {d.threshold}" for d in drifted)
    if trigger.mode == "all":
        if result.drifted_all:
            return True, f"all detectors drifted: {desc}"
        calm = ", ".join(f"{d.type} {d.value:.3f} < {d.threshold}" for d in result.detectors if not d.drifted)
        return False, f"mode 'all' but not drifted: {calm}"
    if drifted:
        return True, f"drift in {desc}"
    return False, "no detector drifted (" + ", ".join(f"{d.type} {d.value:.3f} < {d.threshold}"
                                                     for d in result.detectors) + ")"


def format_verdicts(result: DriftResult) -> str:
    lines = [f"  {'detector':<18} {'value':>8} {'threshold':>10}  drifted"]
    for d in result.detectors:
        lines.append(f"  {d.type:<18} {d.value:>8.3f} {d.threshold:>10}  {'YES' if d.drifted else 'no'}")
        for col, info in d.details.get("columns", {}).items():
            if len(d.details["columns"]) > 1:
                lines.append(f"    {col:<24} {info['drift_score']:>8.3f} ({info['method']}){'  drifted' if info['drifted'] else ''}")
    return "\n".join(lines)
