"""The drift report of one batch (`run_drift`), kept in the local Evidently workspace.

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
- `embedding` (the query text, embedded offline by `monitoring.embedding`: multilingual USE by
  default): a classifier two-sample test. A logistic regression tells current from reference
  embeddings with 2-fold cross-fitting, so every query gets an out-of-fold score (its
  projection on the direction that separates the batches, learned without it); Evidently's
  K-S test then compares the scores of current and reference queries: the p-value, drifted
  when < `threshold` (default 0.05). On no drift the scores are exchangeable and the p-value
  is calibrated. Measured on XQuAD questions (USE-m3, 512-d): English vs other English
  questions fired in 2 of 20 splits at 0.1; English vs es/tr/zh gave p < 1e-50; a reference
  of en+es vs a German batch p ~ 1e-13; vs a further Spanish batch p = 0.07 (no new
  language). About 0.5 s for 350 queries on 2 cores.
  Why not Evidently's `EmbeddingsDrift`: it always fits a t-SNE of up to 5,000 rows for its
  picture, 4-40 s per report on 2 shared cores (measured). Why not an unsupervised projection
  (10 PCA components of the reference, K-S each): the share of drifted components was 0.4-0.7
  for a new language and 0.1-0.7 on no-drift splits, no separation.

Why K-S and not normed Wasserstein for numeric columns: batches are ~200 queries. Two
samples of 200 from the SAME normal distribution have a median normed Wasserstein distance
of ~0.12, so Evidently's default 0.1 threshold fires ~65% of the time on no drift at all
(it is Evidently's default only above 1000 reference rows). The K-S p-value is calibrated at
any size: with alpha 0.1 it fires ~10% of the time on no drift, and it still catches a
1/3-sigma shift of the score ~80% of the time. Jensen-Shannon on the locale column is quiet
(~1% false alarms at 0.1 with 200 rows). Change `METHODS` to switch a detector's method; the
comparison direction follows (`P_VALUE_METHODS`).

A plugin detector type (`serm.plugins.DriftDetector`, from an installed package) adds its own
per-query columns (`add_columns`) to the same report with its own stattest, judged like the
built-ins (one column: its score; several: the share drifted), or computes its value itself
(`measure`), outside Evidently.

The per-column verdicts are Evidently's own test results (`FAIL` = drifted) and metric values,
read from `snapshot.dict()`; nothing is recomputed here.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from monitoring.descriptors import embedding_scores
from serm import schema
from serm.files import atomic_write, atomic_write_text
from serm.policy_schema import DETECTORS, detector_columns

CATEGORICAL_COLUMNS = {"locale"}
MULTI_COLUMN = {"query_descriptors", "engagement"}
EMBEDDING = {"embedding"}  # a text column embedded, then projected to one numeric score per query
# Evidently stattest name per detector type (see the module docstring for why).
METHODS = {"query_descriptors": "ks", "locale_mix": "jensenshannon", "score": "ks", "engagement": "ks",
           "embedding": "ks"}
# Evidently stattests whose score is a p-value (drift when score < threshold); the others are
# distances (drift when score >= threshold).
P_VALUE_METHODS = {"ks", "chisquare", "z", "anderson", "cramer_von_mises", "mannw", "t_test", "es",
                   "fisher_exact", "g_test", "TVD"}
METHOD_NAMES = {"ks": "Kolmogorov-Smirnov p-value", "jensenshannon": "Jensen-Shannon distance",
                "wasserstein": "Wasserstein distance (normed)", "psi": "PSI", "chisquare": "chi-square p-value"}
SHORT_NAMES = {"jensenshannon": "JS", "wasserstein": "WD", "psi": "PSI"}
PROJECT = "SERM stream drift"


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
    """(detector spec, columns, method) per detector; a plugin detector's method is its own."""
    return [(det, list(det.columns or detector_columns(det.type)),
             METHODS.get(det.type) or DETECTORS[det.type].method) for det in spec.detectors]


def _plugin(det):
    """The `serm.plugins.DriftDetector` subclass of a plugin detector type, or None (built-in)."""
    return DETECTORS[det.type] if DETECTORS.is_plugin(det.type) else None


def _multi(det) -> bool:
    """Judged by the share of its drifted columns: the built-in multi-column types, and plugins
    declaring more than one column."""
    plugin = _plugin(det)
    return det.type in MULTI_COLUMN or (plugin is not None and len(plugin.columns) > 1)


def _measured(det) -> bool:
    """A plugin detector that computes its own value (`DriftDetector.measure`), outside Evidently."""
    plugin = _plugin(det)
    return plugin is not None and plugin.measures()


def _frame(df, numeric: list[str], categorical: list[str], text: list[str], name: str):
    from serm.errors import DataError

    missing = [c for c in numeric + categorical + text if c not in df.columns]
    if missing:
        raise DataError(f"drift: the {name} frame lacks column(s) {', '.join(missing)} "
                        f"(has {', '.join(map(str, df.columns))}); build it with query_frame() and add "
                        "score, ctr, mean_click_position, locale")
    if len(df) == 0:
        raise DataError(f"drift: the {name} frame is empty")
    out = df[numeric + categorical + text].reset_index(drop=True).copy()
    for c in numeric:
        out[c] = out[c].astype(float)
    for c in categorical + text:
        out[c] = out[c].fillna("").astype(str)
    return out


def _embedding_columns(ref_df, cur_df, plan) -> dict:
    """Add one numeric column per (text column, embedder) of the embedding detectors to both
    frames: the out-of-fold classifier score of each query (`embedding_scores`). Returns
    {(column, embedder asked): {"column": the score column, embedder, dimensions, auc, seconds}}."""
    from monitoring.embedding import embed_queries

    out = {}
    for det, cols, _ in plan:
        if det.type not in EMBEDDING:
            continue
        for col in cols:
            key = (col, det.embedder)
            if key in out:
                continue
            t0 = time.perf_counter()
            ref_vec, used = embed_queries(ref_df[col].tolist(), det.embedder)
            cur_vec, _ = embed_queries(cur_df[col].tolist(), det.embedder)
            ref_s, cur_s, auc = embedding_scores(ref_vec, cur_vec)
            name = f"{col}_embedding_{used.replace('-', '_')}"
            ref_df[name], cur_df[name] = ref_s, cur_s
            out[key] = {"column": name, "embedder": used, "dimensions": int(ref_vec.shape[1]),
                        "out_of_fold_auc": round(auc, 4), "embed_seconds": round(time.perf_counter() - t0, 3)}
    return out


def run_drift(reference, current, spec, out_dir: Path, evidently_workspace: Path | None = None,
              batch_name: str = "", project: str | None = None, metadata: dict | None = None) -> DriftResult:
    """One Evidently report of `current` vs `reference` covering every detector of `spec`
    (a `DriftSpec`). Writes `drift.html` and `drift.json` in `out_dir`; adds the snapshot to
    the local Evidently workspace `evidently_workspace` if given, in the project `project`
    (default "SERM stream drift"), with `metadata` (str values) on the snapshot.

    A column with no values at all (e.g. mean_click_position when nobody clicked) in either
    frame is skipped and said so in the details (Evidently refuses empty columns)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    from serm.errors import DataError

    plan = _plan(spec)
    plugins = {det.type: _plugin(det)() for det, _, _ in plan if _plugin(det) is not None}
    for detector in plugins.values():   # plugin detectors' own per-query columns
        reference, current = detector.add_columns(reference, current)
    compared = [(det, cols, method) for det, cols, method in plan if not _measured(det)]   # by Evidently
    wanted = sorted({c for det, cols, _ in compared if det.type not in EMBEDDING for c in cols})
    text = sorted({c for det, cols, _ in compared if det.type in EMBEDDING for c in cols})
    categories = CATEGORICAL_COLUMNS | {c for det, cols, _ in compared if det.type in plugins
                                        and plugins[det.type].categorical for c in cols}
    numeric = [c for c in wanted if c not in categories]
    categorical = [c for c in wanted if c in categories]
    ref_df = _frame(reference, numeric, categorical, text, "reference")
    cur_df = _frame(current, numeric, categorical, text, "current")
    skipped = {}
    for c in numeric:
        empty = [n for n, f in (("reference", ref_df), ("current", cur_df)) if f[c].notna().sum() == 0]
        if empty:
            skipped[c] = f"no values in the {' and '.join(empty)} batch"
    embeddings = _embedding_columns(ref_df, cur_df, plan)
    numeric += [e["column"] for e in embeddings.values()]
    # One metric per (column, method, threshold); two detectors asking the same share it.
    metrics: dict[tuple, object] = {}
    for det, cols, method in compared:
        for col in cols:
            key = _metric_key(det, col, method)
            if col in skipped or key in metrics:
                continue
            metrics[key] = ValueDrift(column=key[0], method=method, threshold=key[2])
    if not metrics and len(compared) == len(plan):
        raise DataError(f"drift: no column has values to compare ({'; '.join(f'{c}: {r}' for c, r in skipped.items())})")
    used = {k[0] for k in metrics}
    numeric = [c for c in numeric if c in used]
    categorical = [c for c in categorical if c in used]
    dd = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    ref = Dataset.from_pandas(ref_df[numeric + categorical], data_definition=dd)
    cur = Dataset.from_pandas(cur_df[numeric + categorical], data_definition=dd)
    report = Report(list(metrics.values()), include_tests=True)
    snapshot = report.run(current_data=cur, reference_data=ref, name=batch_name or None,
                          metadata={"source": "serm monitoring.drift", **(metadata or {})}, tags=["serm", "drift"])

    evidently = snapshot.dict()
    columns = _read_columns(evidently, metrics)
    verdicts = []
    for det, cols, method in plan:
        if _measured(det):
            verdicts.append(_measure(plugins[det.type], det, reference, current))
            continue
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
        if _multi(det):
            judged = [v for v in per_col.values() if "skipped" not in v]
            share = sum(v["drifted"] for v in judged) / len(judged) if judged else 0.0
            details.update(value_is="share of drifted columns", value_label="share=", drifted_when="value >= threshold",
                           column_rule=("p-value < column_threshold" if p_value else "score >= column_threshold"),
                           columns_judged=len(judged))
            verdicts.append(DetectorVerdict(det.type, bool(judged) and share >= det.share_threshold,
                                            round(share, 4), det.share_threshold, details))
            continue
        (col,) = cols
        if det.type in EMBEDDING:
            emb = embeddings[(col, det.embedder)]
            details.update(value_is=f"p-value of {col} embeddings ({emb['embedder']}, {emb['dimensions']}-d, "
                                    f"out-of-fold classifier scores)",
                           value_label="p=", drifted_when="value < threshold", **emb)
        else:
            plugin_says = getattr(plugins.get(det.type), "value_is", "")
            details.update(value_is=plugin_says or ("p-value" if p_value else "drift score") + f" of {col}",
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
    html_path, json_path = out_dir / schema.DRIFT_HTML.name, out_dir / schema.DRIFT_JSON.name
    save_report_html(snapshot, html_path)
    result = DriftResult(verdicts, str(html_path), str(json_path))
    workspace = None
    if evidently_workspace is not None:
        workspace = add_to_workspace(Path(evidently_workspace), snapshot, batch_name, project or PROJECT,
                                     key=(metadata or {}).get("round"))
    payload = {"batch": batch_name, "rows": {"reference": len(reference), "current": len(current)},
               **result.to_dict(),
               "columns": {c: v for d in verdicts for c, v in d.details["columns"].items()},
               "evidently_workspace": workspace, "evidently": evidently}
    atomic_write_text(json_path, json.dumps(payload, indent=2, default=str))
    return result


def _metric_key(det, col: str, method: str) -> tuple:
    """(column, method, threshold) of the Evidently metric serving `col` for `det`. Multi-column
    detectors use Evidently's default per-column threshold (None: 0.05 for K-S); an embedding
    detector's column is its score column (`_embedding_columns`)."""
    if det.type in EMBEDDING:
        from monitoring.embedding import resolve

        return (f"{col}_embedding_{resolve(det.embedder).replace('-', '_')}", method, float(det.threshold))
    return (col, method, None if _multi(det) else float(det.threshold))


def _measure(detector, det, reference, current) -> DetectorVerdict:
    """The verdict of a plugin detector that computes its own value (`DriftDetector.measure`)."""
    import math

    t0 = time.perf_counter()
    try:
        value = float(detector.measure(reference, current))
    except Exception as exc:   # someone else's code: say whose
        from serm.errors import DataError

        raise DataError(f"drift: the plugin detector {det.type!r} failed: {type(exc).__name__}: {exc} "
                        f"[{DETECTORS.origin(det.type)}]") from exc
    op = "<" if detector.p_value else ">="
    details = {"method": "plugin", "method_name": f"{type(detector).__name__} (plugin)", "columns": {},
               "value_is": detector.value_is or f"the value of the plugin detector {det.type}",
               "value_label": "p=" if detector.p_value else "value=", "drifted_when": f"value {op} threshold",
               "plugin": DETECTORS.origin(det.type), "seconds": round(time.perf_counter() - t0, 3)}
    if math.isnan(value):
        details["skipped"] = "the plugin gave no value (NaN)"
        return DetectorVerdict(det.type, False, value, det.threshold, details)
    drifted = value < det.threshold if detector.p_value else value >= det.threshold
    return DetectorVerdict(det.type, bool(drifted), value, det.threshold, details)


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


def add_to_workspace(path: Path, snapshot, name: str = "", project: str = PROJECT, key: str | None = None) -> dict:
    """Add the snapshot to the local Evidently workspace at `path` (created if needed), in the
    project named `project` (created if missing). `evidently ui --workspace PATH` shows it.
    With `key` (the round), an earlier drift snapshot of the same key is replaced (a restarted
    round measures its batch again)."""
    from monitoring.dashboard import record_snapshot

    return record_snapshot(Path(path), project, snapshot, name or None, kind="drift", key=key)


REPORT_LIB = "_evidently"   # two folders up from a report: data/_evidently, one copy for every round's report


def save_report_html(snapshot, html_path: Path) -> None:
    """The snapshot's HTML report with Evidently's JS library and icon font in
    `../../_evidently/` (written once, shared by every round's report) instead of embedded in each:
    a round's report is ~100 KB, not 3.7 MB, and the versioned data/ grows by that much a round.
    Falls back to Evidently's self-contained file where its renderer has moved."""
    try:
        from evidently.legacy.model.dashboard import DashboardInfo
        from evidently.legacy.model.widget import AdditionalGraphInfo
        from evidently.legacy.renderers.base_renderer import DetailsInfo
        from evidently.legacy.renderers.html_widgets import group_widget
        from evidently.legacy.utils.dashboard import TemplateParams, file_html_template
    except ImportError:
        snapshot.save_html(str(html_path))
        return
    import uuid

    lib_dir = ensure_report_lib(html_path.parent.parent.parent)
    widgets = [group_widget(title="", widgets=snapshot._widgets)] + snapshot._tests_widgets
    graphs = {}
    for widget in widgets:
        for g in widget.get_additional_graphs():
            info = g.params if isinstance(g, AdditionalGraphInfo) else g
            item = DetailsInfo(title="", info=info, id=g.id)
            graphs[f"{item.id}"] = item.info.dict() if hasattr(item.info, "dict") else item.info
    lib, font = _lib_files(lib_dir)
    params = TemplateParams(dashboard_id="metric_" + uuid.uuid4().hex, dashboard_info=DashboardInfo(name="Report",
                            widgets=widgets), additional_graphs=graphs, embed_lib=False, embed_font=False,
                            font_file=f"../../{REPORT_LIB}/{font.name}",
                            include_js_files=[f"../../{REPORT_LIB}/{lib.name}"])
    atomic_write_text(html_path, file_html_template(params))


def _lib_files(lib_dir: Path) -> tuple[Path, Path]:
    import evidently

    return lib_dir / f"evidently-{evidently.__version__}.js", lib_dir / "material-ui-icons.woff2"


def ensure_report_lib(parent: Path) -> Path:
    """`parent/_evidently` holding Evidently's JS library and font (copied once per version of
    Evidently); the reports in `parent/*/*/` load them from there."""
    import shutil

    from evidently.legacy.utils.dashboard import STATIC_PATH

    lib_dir = Path(parent) / REPORT_LIB
    lib, font = _lib_files(lib_dir)
    for src, dst in ((Path(STATIC_PATH) / "index.js", lib), (Path(STATIC_PATH) / "material-ui-icons.woff2", font)):
        if not dst.exists():
            atomic_write(dst, lambda tmp, src=src: shutil.copyfile(src, tmp))
    return lib_dir
