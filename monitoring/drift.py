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

The per-column verdicts are Evidently's own test results (`FAIL` = drifted) and metric values,
read from `snapshot.dict()`; nothing is recomputed here.

Trigger (`decide_trigger`): `force` runs the round; else too few new pairs stop it; else the
detectors decide (`mode: any | all`); a round the detectors want still waits while the last
evolution round is within `cooldown`, or while `max_rounds_per_period` evolution rounds already
finished within `period` (an evolution round = one that ran the pipeline; `round_history`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

DETECTOR_COLUMNS = {
    "query_descriptors": ["query_chars", "query_tokens", "unseen_token_share", "non_ascii_share"],
    "locale_mix": ["locale"],
    "score": ["score"],
    "engagement": ["ctr", "mean_click_position"],
    "embedding": ["query"],
}
CATEGORICAL_COLUMNS = {"locale"}
MULTI_COLUMN = {"query_descriptors", "engagement"}
EMBEDDING = {"embedding"}  # a text column embedded, then projected to one numeric score per query
# Policy thresholds that differ from DetectorSpec's 0.1.
DEFAULT_THRESHOLDS = {"embedding": 0.05}
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


def embedding_scores(ref_vec, cur_vec, seed: int = 0):
    """Out-of-fold scores of a logistic regression telling current (1) from reference (0)
    rows, with 2-fold cross-fitting on standardised embeddings: (reference scores, current
    scores, their ROC AUC). No row is scored by a model that saw it."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    X = StandardScaler().fit_transform(np.vstack([ref_vec, cur_vec]).astype(np.float64))
    y = np.r_[np.zeros(len(ref_vec)), np.ones(len(cur_vec))]
    fold = np.random.default_rng(seed).permutation(len(X)) % 2
    scores = np.zeros(len(X))
    for f in (0, 1):
        train, test = fold != f, fold == f
        if len(set(y[train])) < 2:  # a tiny batch all in one fold: nothing to learn from
            continue
        clf = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced").fit(X[train], y[train])
        scores[test] = clf.decision_function(X[test])
    return scores[: len(ref_vec)], scores[len(ref_vec):], float(roc_auc_score(y, scores))


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
    wanted = sorted({c for det, cols, _ in plan if det.type not in EMBEDDING for c in cols})
    text = sorted({c for det, cols, _ in plan if det.type in EMBEDDING for c in cols})
    numeric = [c for c in wanted if c not in CATEGORICAL_COLUMNS]
    categorical = [c for c in wanted if c in CATEGORICAL_COLUMNS]
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
    for det, cols, method in plan:
        for col in cols:
            key = _metric_key(det, col, method)
            if col in skipped or key in metrics:
                continue
            metrics[key] = ValueDrift(column=key[0], method=method, threshold=key[2])
    if not metrics:
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
            continue
        (col,) = cols
        if det.type in EMBEDDING:
            emb = embeddings[(col, det.embedder)]
            details.update(value_is=f"p-value of {col} embeddings ({emb['embedder']}, {emb['dimensions']}-d, "
                                    f"out-of-fold classifier scores)",
                           value_label="p=", drifted_when="value < threshold", **emb)
        else:
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
        workspace = add_to_workspace(Path(evidently_workspace), snapshot, batch_name, project or PROJECT,
                                     key=(metadata or {}).get("round"))
    payload = {"batch": batch_name, "rows": {"reference": len(reference), "current": len(current)},
               **result.to_dict(),
               "columns": {c: v for d in verdicts for c, v in d.details["columns"].items()},
               "evidently_workspace": workspace, "evidently": evidently}
    json_path.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return result


def _metric_key(det, col: str, method: str) -> tuple:
    """(column, method, threshold) of the Evidently metric serving `col` for `det`. Multi-column
    detectors use Evidently's default per-column threshold (None: 0.05 for K-S); an embedding
    detector's column is its score column (`_embedding_columns`)."""
    if det.type in EMBEDDING:
        from monitoring.embedding import resolve

        return (f"{col}_embedding_{resolve(det.embedder).replace('-', '_')}", method, float(det.threshold))
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


def add_to_workspace(path: Path, snapshot, name: str = "", project: str = PROJECT, key: str | None = None) -> dict:
    """Add the snapshot to the local Evidently workspace at `path` (created if needed), in the
    project named `project` (created if missing). `evidently ui --workspace PATH` shows it.
    With `key` (the round), an earlier drift snapshot of the same key is replaced (a restarted
    round measures its batch again)."""
    from monitoring.dashboard import record_snapshot

    return record_snapshot(Path(path), project, snapshot, name or None, kind="drift", key=key)


# --------------------------------------------------------------------------- trigger
def round_history(ws) -> list[dict]:
    """Committed rounds of workspace `ws`, oldest first: {round, finished (ISO time or None),
    evolved (the pipeline ran: mining onward), promoted}. Read from data/rounds/*/manifest.json."""
    out = []
    for f in sorted((Path(ws.data) / "rounds").glob("r*/manifest.json")):
        man = json.loads(f.read_text())
        stages = man.get("stages", {})
        out.append({"round": man.get("round"), "finished": man.get("finished") or stages.get("promote", {}).get("at"),
                    "evolved": "mine" in stages, "promoted": bool(man.get("promoted"))})
    return out


def _when(iso: str) -> datetime:
    t = datetime.fromisoformat(iso)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def duration(seconds: float) -> str:
    """90 -> '1m30s', 86400 -> '1d', 0 -> '0s'."""
    seconds = int(round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts[:2])


def rate_limit(trigger, history: list[dict], now: datetime | None = None) -> str | None:
    """Why the cooldown or the rounds-per-period cap holds a round back now, or None."""
    now = now or datetime.now(timezone.utc)
    evolved = sorted((_when(h["finished"]), h["round"]) for h in history if h.get("evolved") and h.get("finished"))
    if trigger.cooldown and evolved:
        last, r = evolved[-1]
        waited = (now - last).total_seconds()
        if waited < trigger.cooldown:
            ready = (last + timedelta(seconds=trigger.cooldown)).isoformat(timespec="seconds")
            return (f"cooldown: evolution round {r} finished {duration(waited)} ago < cooldown "
                    f"{duration(trigger.cooldown)} (drift.trigger.cooldown; next round from {ready})")
    if trigger.max_rounds_per_period:
        recent = [r for t, r in evolved if t > now - timedelta(seconds=trigger.period)]
        if len(recent) >= trigger.max_rounds_per_period:
            return (f"max_rounds_per_period: {len(recent)} evolution round(s) in the last {duration(trigger.period)} "
                    f"(round {', '.join(map(str, recent))}) >= {trigger.max_rounds_per_period}")
    return None


def decide_trigger(result: DriftResult, trigger, new_pairs: int, history: list[dict] = (),
                   now: datetime | None = None) -> tuple[bool, str]:
    """(run the round?, why) from the drift verdicts, the policy's `TriggerSpec` and the
    workspace's `round_history` (for cooldown and max_rounds_per_period)."""
    if trigger.force:
        return True, "forced by policy (drift.trigger.force)"
    if new_pairs < trigger.min_new_pairs:
        return False, f"only {new_pairs} new pairs < min_new_pairs {trigger.min_new_pairs}"
    fire, why = _drift_decision(result, trigger)
    if not fire:
        return False, why
    held = rate_limit(trigger, list(history), now)
    if held:
        return False, f"{held}; the detectors alone would trigger: {why}"
    return True, why


def _drift_decision(result: DriftResult, trigger) -> tuple[bool, str]:
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


def history_summary(trigger, history: list[dict], now: datetime | None = None) -> dict:
    """What the rate limits looked at, for the round manifest."""
    now = now or datetime.now(timezone.utc)
    evolved = [h for h in history if h.get("evolved") and h.get("finished")]
    last = max(evolved, key=lambda h: _when(h["finished"]), default=None)
    window = now - timedelta(seconds=trigger.period)
    return {"committed_rounds": len(history), "evolution_rounds": len(evolved),
            "last_evolution_round": last and last["round"], "last_evolution_finished": last and last["finished"],
            "evolution_rounds_in_period": sum(_when(h["finished"]) > window for h in evolved),
            "decided_at": now.isoformat(timespec="seconds")}


def batch_drift(ws, policy, current, new_pairs: int, out_dir: Path, evidently_workspace: Path | None = None,
                batch_name: str = "", metadata: dict | None = None, now: datetime | None = None):
    """Drift of one batch (`current`: the per-query frame of `serm.stages.score_frame_stats`)
    against what the production model of workspace `ws` was trained on, and the trigger
    decision. Returns (DriftResult, the dict a round records as its drift stage result)."""
    from monitoring.dashboard import project_name
    from serm.stages import reference_frame

    now = now or datetime.now(timezone.utc)
    ref = reference_frame(ws)
    vocab = vocabulary(ref["query"].tolist())
    ref = query_frame(ref, vocab, leave_one_out=True)
    cur = query_frame(current, vocab)
    result = run_drift(ref, cur, policy.drift, out_dir, evidently_workspace=evidently_workspace,
                       batch_name=batch_name, project=project_name(ws), metadata=metadata)
    history = round_history(ws)
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
                lines.append(f"    {col:<20} {_fmt(info['drift_score']):>8}  {op:<4} {info['column_threshold']:<9g}  "
                             f"{'yes' if info['drifted'] else 'no':<7}  {d.details.get('method_name', '')}")
    return "\n".join(lines)
