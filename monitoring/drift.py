"""Drift detectors over the stream (Evidently) and the trigger decision.

Every detector declared in the policy becomes Evidently `ValueDrift` metrics (one per column,
with Evidently's own drift test) in ONE report of the new batch (`current`) against the
reference (the queries the production model was trained on). Only numeric per-query
descriptors and the locale go in, never raw text (text drift is ~20x slower in Evidently).

- `query_descriptors` (query_chars, query_tokens, unseen_token_share, non_ascii_share) and
  `engagement` (ctr, mean_click_position; NaN = no click, dropped by Evidently): per column the
  K-S p-value with Evidently's default alpha 0.05; the detector's value is the share of drifted
  columns, drifted when >= `share_threshold`.
- `locale_mix` (categorical locale): Jensen-Shannon distance, drifted when >= `threshold`.
- `score` (the production model's top expected grade per query): K-S p-value, drifted when
  < `threshold` (the policy threshold is the test's alpha here).

Why K-S and not normed Wasserstein for numeric columns: batches are ~200 queries. Two
samples of 200 from the SAME normal distribution have a median normed Wasserstein distance
of ~0.12, so Evidently's default 0.1 threshold fires ~65% of the time on no drift at all
(it is Evidently's default only above 1000 reference rows). The K-S p-value is calibrated at
any size: with alpha 0.1 it fires ~10% of the time on no drift, and it still catches a
1/3-sigma shift of the score ~80% of the time. Jensen-Shannon on the locale column is quiet
(~1% false alarms at 0.1 with 200 rows). Change `METHODS` to switch a detector's method; the
comparison direction follows (`P_VALUE_METHODS`).

The per-column verdicts are Evidently's own test results (`FAIL` = drifted) and metric values,
read from `snapshot.dict()`; nothing is recomputed here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

DETECTOR_COLUMNS = {
    "query_descriptors": ["query_chars", "query_tokens", "unseen_token_share", "non_ascii_share"],
    "locale_mix": ["locale"],
    "score": ["score"],
    "engagement": ["ctr", "mean_click_position"],
}
CATEGORICAL_COLUMNS = {"locale"}
MULTI_COLUMN = {"query_descriptors", "engagement"}
# Evidently stattest name per detector type (see the module docstring for why).
METHODS = {"query_descriptors": "ks", "locale_mix": "jensenshannon", "score": "ks", "engagement": "ks"}
# Evidently stattests whose score is a p-value (drift when score < threshold); the others are
# distances (drift when score >= threshold).
P_VALUE_METHODS = {"ks", "chisquare", "z", "anderson", "cramer_von_mises", "mannw", "t_test", "es",
                   "fisher_exact", "g_test", "TVD"}
METHOD_NAMES = {"ks": "Kolmogorov-Smirnov p-value", "jensenshannon": "Jensen-Shannon distance",
                "wasserstein": "Wasserstein distance (normed)", "psi": "PSI", "chisquare": "chi-square p-value"}
SHORT_NAMES = {"jensenshannon": "JS", "wasserstein": "WD", "psi": "PSI"}
PROJECT = "SERM stream drift"
_TOKEN = re.compile(r"\w+", re.UNICODE)


# --------------------------------------------------------------------------- descriptors
def tokens(text) -> list[str]:
    """Lowercase `\\w+` tokens of a text, in order, repeats kept."""
    return _TOKEN.findall(str(text).lower())


def vocabulary(texts: Iterable[str]) -> dict[str, int]:
    """The tokens of `texts` with their document frequency (number of texts containing them).

    It behaves as the set of known tokens (`token in vocab`); the counts let `query_frame`
    compute a leave-one-out unseen share for the reference itself."""
    from collections import Counter

    df: Counter = Counter()
    for t in texts:
        df.update(set(tokens(t)))
    return dict(df)


def query_frame(queries, reference_vocab: Mapping[str, int] | set[str], leave_one_out: bool = False):
    """`queries` (a DataFrame with at least `query`) plus numeric descriptors per query:

    - query_chars: characters in the query;
    - query_tokens: number of lowercase `\\w+` tokens;
    - unseen_token_share: share of those tokens not in `reference_vocab` (0 when no tokens);
    - non_ascii_share: share of non-ASCII characters (0 for an empty query).

    `reference_vocab` is `vocabulary(reference_queries)` (or any set of tokens). Pass
    `leave_one_out=True` when describing the reference queries themselves: a token then counts
    as unseen when no *other* reference query has it, so the reference's unseen share is an
    honest baseline instead of a constant 0 (that needs the counts from `vocabulary`)."""
    if leave_one_out and not isinstance(reference_vocab, Mapping):
        raise TypeError("leave_one_out needs document frequencies: pass vocabulary(texts), not a set")
    if "query" not in queries.columns:
        from serm.errors import DataError

        raise DataError(f"query_frame: the frame has no 'query' column (columns: {', '.join(map(str, queries.columns))})")
    out = queries.copy()
    texts = out["query"].fillna("").astype(str).tolist()
    toks = [tokens(s) for s in texts]
    if isinstance(reference_vocab, Mapping):
        def seen(word: str, own: set[str]) -> bool:
            return reference_vocab.get(word, 0) - (1 if leave_one_out and word in own else 0) > 0
    else:
        def seen(word: str, own: set[str]) -> bool:
            return word in reference_vocab
    unseen = []
    for tk in toks:
        own = set(tk)
        unseen.append(sum(not seen(w, own) for w in tk) / len(tk) if tk else 0.0)
    out["query_chars"] = [float(len(s)) for s in texts]
    out["query_tokens"] = [float(len(tk)) for tk in toks]
    out["unseen_token_share"] = unseen
    out["non_ascii_share"] = [sum(ord(c) > 127 for c in s) / len(s) if s else 0.0 for s in texts]
    return out


# --------------------------------------------------------------------------- results
@dataclass
class DetectorVerdict:
    type: str
    drifted: bool
    value: float
    threshold: float
    details: dict = field(default_factory=dict)

    @property
    def comparison(self) -> str:
        """How `value` was compared with `threshold`: '>=' (distance, share) or '<' (p-value)."""
        return self.details.get("drifted_when", "value >= threshold").split()[1]

    def describe(self) -> str:
        """'score p=0.0001 < 0.1' (drifted) or 'score p=0.41 >= 0.1' (not drifted)."""
        if "skipped" in self.details:
            return f"{self.type} skipped ({self.details['skipped']})"
        op = self.comparison
        if not self.drifted:
            op = {">=": "<", "<": ">="}[op]
        return f"{self.type} {self.details.get('value_label', '')}{self.value:.4g} {op} {self.threshold:g}"


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
        """JSON-safe (a skipped detector's NaN value becomes None)."""
        dets = [{**asdict(d), "value": None if d.value != d.value else d.value} for d in self.detectors]
        return {"detectors": dets, "drifted_any": self.drifted_any,
                "drifted_all": self.drifted_all, "html_path": self.html_path, "json_path": self.json_path}


# --------------------------------------------------------------------------- the report
def _plan(spec) -> list[tuple[object, list[str], str]]:
    """(detector spec, columns, method) per detector."""
    return [(det, list(det.columns or DETECTOR_COLUMNS[det.type]), METHODS[det.type]) for det in spec.detectors]


def _frame(df, numeric: list[str], categorical: list[str], name: str):
    from serm.errors import DataError

    missing = [c for c in numeric + categorical if c not in df.columns]
    if missing:
        raise DataError(f"drift: the {name} frame lacks column(s) {', '.join(missing)} "
                        f"(has {', '.join(map(str, df.columns))}); build it with query_frame() and add "
                        "score, ctr, mean_click_position, locale")
    if len(df) == 0:
        raise DataError(f"drift: the {name} frame is empty")
    out = df[numeric + categorical].reset_index(drop=True).copy()
    for c in numeric:
        out[c] = out[c].astype(float)
    for c in categorical:
        out[c] = out[c].astype(str)
    return out


def run_drift(reference, current, spec, out_dir: Path, evidently_workspace: Path | None = None,
              batch_name: str = "") -> DriftResult:
    """One Evidently report of `current` vs `reference` covering every detector of `spec`
    (a `DriftSpec`). Writes `drift.html` and `drift.json` in `out_dir`; adds the snapshot to
    the local Evidently workspace `evidently_workspace` (project "SERM stream drift") if given.

    A column with no values at all (e.g. mean_click_position when nobody clicked) in either
    frame is skipped and said so in the details (Evidently refuses empty columns)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    from serm.errors import DataError

    plan = _plan(spec)
    wanted = sorted({c for _, cols, _ in plan for c in cols})
    numeric = [c for c in wanted if c not in CATEGORICAL_COLUMNS]
    categorical = [c for c in wanted if c in CATEGORICAL_COLUMNS]
    ref_df = _frame(reference, numeric, categorical, "reference")
    cur_df = _frame(current, numeric, categorical, "current")
    skipped = {}
    for c in numeric:
        empty = [n for n, f in (("reference", ref_df), ("current", cur_df)) if f[c].notna().sum() == 0]
        if empty:
            skipped[c] = f"no values in the {' and '.join(empty)} batch"
    # One metric per (column, method, threshold); two detectors asking the same share it.
    metrics: dict[tuple, object] = {}
    for det, cols, method in plan:
        for col in cols:
            key = _metric_key(det, col, method)
            if col not in skipped and key not in metrics:
                metrics[key] = ValueDrift(column=col, method=method, threshold=key[2])
    if not metrics:
        raise DataError(f"drift: no column has values to compare ({'; '.join(f'{c}: {r}' for c, r in skipped.items())})")
    used = sorted({k[0] for k in metrics})
    numeric = [c for c in numeric if c in used]
    categorical = [c for c in categorical if c in used]
    dd = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    ref = Dataset.from_pandas(ref_df[numeric + categorical], data_definition=dd)
    cur = Dataset.from_pandas(cur_df[numeric + categorical], data_definition=dd)
    report = Report(list(metrics.values()), include_tests=True)
    snapshot = report.run(current_data=cur, reference_data=ref, name=batch_name or None,
                          metadata={"source": "serm monitoring.drift"}, tags=["serm", "drift"])

    evidently = snapshot.dict()
    columns = _read_columns(evidently, metrics)
    verdicts = []
    for det, cols, method in plan:
        p_value = method in P_VALUE_METHODS
        per_col = {}
        for col in cols:
            if col in skipped:
                per_col[col] = {"drift_score": None, "drifted": False, "method": method,
                                "column_threshold": None, "skipped": skipped[col]}
                continue
            got = columns[_metric_key(det, col, method)]
            per_col[col] = {"drift_score": got["value"], "drifted": got["drifted"], "method": method,
                            "column_threshold": got["threshold"], "evidently": got["description"]}
        details = {"method": method, "method_name": METHOD_NAMES.get(method, method), "columns": per_col}
        if det.type in MULTI_COLUMN:
            judged = [v for v in per_col.values() if "skipped" not in v]
            share = sum(v["drifted"] for v in judged) / len(judged) if judged else 0.0
            details.update(value_is="share of drifted columns", value_label="share=", drifted_when="value >= threshold",
                           column_rule=("p-value < column_threshold" if p_value else "score >= column_threshold"),
                           columns_judged=len(judged))
            verdicts.append(DetectorVerdict(det.type, bool(judged) and share >= det.share_threshold,
                                            round(share, 4), det.share_threshold, details))
        else:
            (col,) = cols
            details.update(value_is=("p-value" if p_value else "drift score") + f" of {col}",
                           value_label="p=" if p_value else SHORT_NAMES.get(method, method) + "=",
                           drifted_when="value < threshold" if p_value else "value >= threshold")
            if col in skipped:
                details["skipped"] = skipped[col]
                verdicts.append(DetectorVerdict(det.type, False, float("nan"), det.threshold, details))
            else:
                verdicts.append(DetectorVerdict(det.type, per_col[col]["drifted"], per_col[col]["drift_score"],
                                                det.threshold, details))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, json_path = out_dir / "drift.html", out_dir / "drift.json"
    snapshot.save_html(str(html_path))
    result = DriftResult(verdicts, str(html_path), str(json_path))
    workspace = None
    if evidently_workspace is not None:
        workspace = add_to_workspace(Path(evidently_workspace), snapshot, batch_name)
    payload = {"batch": batch_name, "rows": {"reference": len(reference), "current": len(current)},
               **result.to_dict(),
               "columns": {c: v for d in verdicts for c, v in d.details["columns"].items()},
               "evidently_workspace": workspace, "evidently": evidently}
    json_path.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return result


def _metric_key(det, col: str, method: str) -> tuple:
    """(column, method, threshold) of the ValueDrift metric serving `col` for `det`. Multi-column
    detectors use Evidently's default per-column threshold (None: 0.05 for K-S)."""
    return (col, method, None if det.type in MULTI_COLUMN else float(det.threshold))


def _read_columns(evidently: dict, metrics: dict) -> dict[tuple, dict]:
    """Per asked metric key: Evidently's value, test status (FAIL = drifted), the threshold
    Evidently resolved and its test description, matched by metric id (the fingerprint of the
    metric as asked; the snapshot config shows the resolved threshold instead of None)."""
    by_id = {m["id"]: m for m in evidently["metrics"]}
    tests = {t["metric_config"]["metric_id"]: t for t in evidently["tests"]}
    out = {}
    for key, metric in metrics.items():
        m, test = by_id.get(metric.metric_id), tests.get(metric.metric_id)
        status = getattr(test and test["status"], "value", test and test["status"])  # TestStatus is a str Enum
        if m is None or test is None or status not in ("FAIL", "SUCCESS"):
            raise RuntimeError(f"Evidently gave no drift result for column {key[0]!r} "
                               f"(status {test and test['status']}): {test and test.get('description')}")
        out[key] = {"value": float(m["value"]), "drifted": status == "FAIL",
                    "threshold": m["config"].get("threshold"), "description": test.get("description", "")}
    return out


def add_to_workspace(path: Path, snapshot, name: str = "") -> dict:
    """Add the snapshot to the local Evidently workspace at `path` (created if needed), in the
    project "SERM stream drift" (created if missing). `evidently ui --workspace PATH` shows it."""
    from evidently.ui.workspace import Workspace

    path.mkdir(parents=True, exist_ok=True)
    ws = Workspace.create(str(path))
    found = ws.search_project(PROJECT)
    project = found[0] if found else ws.create_project(PROJECT, description="SERM query stream vs the production reference")
    ref = ws.add_run(project.id, snapshot, name=name or None)
    return {"path": str(path), "project_id": str(project.id), "snapshot_id": str(ref.id)}


# --------------------------------------------------------------------------- trigger
def decide_trigger(result: DriftResult, trigger, new_pairs: int) -> tuple[bool, str]:
    """(run the round?, why) from the drift verdicts and the policy's `TriggerSpec`."""
    if trigger.force:
        return True, "forced by policy (drift.trigger.force)"
    if new_pairs < trigger.min_new_pairs:
        return False, f"only {new_pairs} new pairs < min_new_pairs {trigger.min_new_pairs}"
    drifted = [d for d in result.detectors if d.drifted]
    calm = [d for d in result.detectors if not d.drifted]
    if trigger.mode == "all":
        if result.drifted_all:
            return True, "all detectors drifted: " + ", ".join(d.describe() for d in drifted)
        why = "mode 'all' but not drifted: " + ", ".join(d.describe() for d in calm)
        if drifted:
            why += "; drifted: " + ", ".join(d.describe() for d in drifted)
        return False, why
    if drifted:
        return True, "drift in " + ", ".join(d.describe() for d in drifted)
    return False, "no detector drifted (" + ", ".join(d.describe() for d in calm) + ")"


def format_verdicts(result: DriftResult) -> str:
    """A table for the CLI: detector, value, rule, threshold, drifted, what the value is; one
    row per column under the multi-column detectors."""
    lines = [f"  {'detector':<22} {'value':>8}  {'rule':<4} {'threshold':<9}  {'drifted':<7}  value is"]
    for d in result.detectors:
        value = "n/a" if d.value != d.value else f"{d.value:.4f}"
        what = d.details.get("skipped") or d.details.get("value_is", "")
        if d.type not in MULTI_COLUMN and "skipped" not in d.details:
            what += f" ({d.details.get('method_name', '')})"
        lines.append(f"  {d.type:<22} {value:>8}  {d.comparison:<4} {d.threshold:<9g}  "
                     f"{'YES' if d.drifted else 'no':<7}  {what}")
        if d.type in MULTI_COLUMN:
            op = "<" if d.details.get("method") in P_VALUE_METHODS else ">="
            for col, info in d.details.get("columns", {}).items():
                if "skipped" in info:
                    lines.append(f"    {col:<20} {'n/a':>8}  {'':<4} {'':<9}  {'-':<7}  skipped: {info['skipped']}")
                    continue
                lines.append(f"    {col:<20} {info['drift_score']:>8.4f}  {op:<4} {info['column_threshold']:<9g}  "
                             f"{'yes' if info['drifted'] else 'no':<7}  {d.details.get('method_name', '')}")
    return "\n".join(lines)
