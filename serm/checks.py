"""The Great Expectations gate on a round's labels.

`check_labels` runs ONE Great Expectations 1.x suite over the trainable labels of a round
(status accepted or human) plus one computed gate (the share of escalated, unresolved
candidates). A failing gate stops the round before training with a readable reason;
production stays as it is.

Label contract: query_id (str), doc_id (str), grade (int 0-3), agreement (float 0-1),
status (accepted | human | escalated | rejected), round (int), policy_hash (str).

great_expectations takes ~5 s to import: it is imported inside `check_labels` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serm.errors import CheckFailed
from serm.files import atomic_write_json
from serm.schema import GRADES, TRAINABLE  # the one trainable rule

REQUIRED_COLUMNS = ("query_id", "doc_id", "grade", "agreement", "status")
MAX_EXAMPLES = 5


# --------------------------------------------------------------------------- report
@dataclass
class CheckReport:
    """Outcome of the label gate. Each entry of `results` is a dict with keys
    expectation (readable), type, column (str, or list for compound checks), success,
    observed (readable), unexpected_count, unexpected_examples (up to 5) and, where GE
    gives them, unexpected_rows (index labels) and observed_value."""

    success: bool
    results: list[dict] = field(default_factory=list)
    labels: int = 0
    escalated: int = 0
    out_path: str | None = None

    def failures(self) -> list[dict]:
        return [r for r in self.results if not r["success"]]

    def to_dict(self) -> dict:
        return {
            "success": self.success,
            "labels": self.labels,
            "escalated": self.escalated,
            "expectations": len(self.results),
            "failed": len(self.failures()),
            "results": self.results,
        }

    def message(self) -> str:
        failed = self.failures()
        lines = [f"label checks failed: {len(failed)} of {len(self.results)} expectations not met "
                 f"on {self.labels} trainable label(s)"]
        lines += [f"  {_failure_line(r)}" for r in failed]
        where = f"inspect {self.out_path}" if self.out_path else "inspect the failures above"
        lines.append(f"{where}; the round stopped before training, production is unchanged")
        return "\n".join(lines)

    def raise_for_failure(self) -> None:
        if not self.success:
            raise CheckFailed(self.message())


def _failure_line(r: dict) -> str:
    line = f"{r['expectation']}: {r['observed']}"
    if r.get("unexpected_examples"):
        shown = [tuple(x.values()) if isinstance(x, dict) else x for x in r["unexpected_examples"]]
        line += f", e.g. {shown}"
    elif r.get("unexpected_rows"):
        line += f", at rows {r['unexpected_rows']}"
    return line


# --------------------------------------------------------------------------- helpers
def _plain(x: Any) -> Any:
    """JSON-safe plain Python: numpy scalars unwrapped, NaN -> None, tuples -> lists."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [_plain(v) for v in x]
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", None) == 0:
        x = x.item()  # numpy scalar
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None if math.isnan(x) else str(x)
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)  # timestamps and other odd values: readable, not a crash


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _examples(values: list, column: str | list | None) -> list:
    out: list = []
    for v in values:
        v = _plain(v)
        if column == "grade" and isinstance(v, float) and v.is_integer():
            v = int(v)  # an int column with a null in it is read as float: show 7, not 7.0
        if v not in out:  # compound duplicates list every copy: show each pair once
            out.append(v)
        if len(out) == MAX_EXAMPLES:
            break
    return out


def _exception_message(info: Any) -> str | None:
    """GE 1.x puts either {raised_exception, exception_message} or {metric id: {...}} here."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return info.get("exception_message")
    for v in info.values():
        if isinstance(v, dict) and (v.get("raised_exception") or v.get("exception_message")):
            return v.get("exception_message") or "raised an exception"
    return None


def _result(expectation: str, type_: str, column, success: bool, observed: str, **extra) -> dict:
    return {"expectation": expectation, "type": type_, "column": column, "success": bool(success),
            "observed": observed, "unexpected_count": extra.pop("unexpected_count", 0),
            "unexpected_examples": extra.pop("unexpected_examples", []), **extra}


# --------------------------------------------------------------------------- the suite
def _known_present(labels, column: str, known: set[str]) -> list:
    """The known ids that occur in the frame. GE 1.x re-serialises each expectation's
    configuration (value_set included) over a hundred times per validation: a 14k-id corpus
    set costs ~3 s per expectation. Restricting value_set to the known ids present in the
    column gives the same verdict (a value is unexpected iff it is not known) in ~0.1 s."""
    present = set(labels[column].dropna().unique().tolist())
    return sorted(present & known, key=str)


def _expectations(spec, labels, known_query_ids: set[str], known_doc_ids: set[str]) -> list[tuple[str, Any]]:
    """(readable name, GE expectation) in report order."""
    import great_expectations.expectations as gxe

    return [
        ("grade not null", gxe.ExpectColumnValuesToNotBeNull(column="grade")),
        ("grade in {0,1,2,3}", gxe.ExpectColumnValuesToBeInSet(column="grade", value_set=list(GRADES))),
        ("query_id not null", gxe.ExpectColumnValuesToNotBeNull(column="query_id")),
        ("doc_id not null", gxe.ExpectColumnValuesToNotBeNull(column="doc_id")),
        ("agreement not null", gxe.ExpectColumnValuesToNotBeNull(column="agreement")),
        ("status not null", gxe.ExpectColumnValuesToNotBeNull(column="status")),
        ("agreement between 0 and 1",
         gxe.ExpectColumnValuesToBeBetween(column="agreement", min_value=0.0, max_value=1.0)),
        (f"mean agreement >= {spec.min_agreement}",
         gxe.ExpectColumnMeanToBeBetween(column="agreement", min_value=float(spec.min_agreement))),
        ("status in {accepted,human}", gxe.ExpectColumnValuesToBeInSet(column="status", value_set=list(TRAINABLE))),
        ("(query_id, doc_id) unique", gxe.ExpectCompoundColumnsToBeUnique(column_list=["query_id", "doc_id"])),
        (f"query_id in known query ids ({len(known_query_ids)})",
         gxe.ExpectColumnValuesToBeInSet(column="query_id", value_set=_known_present(labels, "query_id", known_query_ids))),
        (f"doc_id in known doc ids ({len(known_doc_ids)})",
         gxe.ExpectColumnValuesToBeInSet(column="doc_id", value_set=_known_present(labels, "doc_id", known_doc_ids))),
    ]


def _run_suite(labels, named: list[tuple[str, Any]]) -> list[dict]:
    """One ephemeral context, one pandas datasource/asset/whole-frame batch, one suite, one
    validation definition per call (nothing is shared between calls)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)  # else tqdm bars go to stderr
    batch_def = (ctx.data_sources.add_pandas(name="serm_labels")
                 .add_dataframe_asset(name="round_labels")
                 .add_batch_definition_whole_dataframe("all_rows"))
    suite = ctx.suites.add(gx.ExpectationSuite(name="serm_label_contract"))
    for _, exp in named:
        suite.add_expectation(exp)
    vd = ctx.validation_definitions.add(
        gx.ValidationDefinition(name="serm_label_gate", data=batch_def, suite=suite))
    res = vd.run(batch_parameters={"dataframe": labels})

    # GE does not keep suite order in res.results: map back through the expectation ids
    by_id = {r.expectation_config.id: r for r in res.results}
    out = []
    for (name, exp), cfg in zip(named, suite.expectations):
        r = by_id.get(cfg.id)
        kw = cfg.configuration.kwargs if hasattr(cfg, "configuration") else {}
        column = kw.get("column") or (list(kw["column_list"]) if kw.get("column_list") else None)
        if r is None:
            out.append(_result(name, cfg.expectation_type, column, False, "not evaluated by Great Expectations"))
            continue
        info = dict(r.result or {})
        error = _exception_message(r.exception_info)
        extra: dict = {}
        if error:
            observed = f"could not be evaluated: {error.splitlines()[0][:300] if error else ''}"
        elif "unexpected_count" in info:
            n = int(info.get("unexpected_count") or 0)
            extra["unexpected_count"] = n
            extra["unexpected_rows"] = _plain((info.get("partial_unexpected_index_list") or [])[:MAX_EXAMPLES])
            if cfg.expectation_type == "expect_column_values_to_not_be_null":
                observed = _count(n, "null value")
            elif cfg.expectation_type == "expect_compound_columns_to_be_unique":
                observed = _count(n, "row") + " sharing a duplicated pair"
                extra["unexpected_examples"] = _examples(info.get("partial_unexpected_list") or [], column)
            else:
                observed = _count(n, "unexpected value")
                extra["unexpected_examples"] = _examples(info.get("partial_unexpected_list") or [], column)
        elif "observed_value" in info:
            value = _plain(info["observed_value"])
            extra["observed_value"] = value
            observed = f"observed {round(value, 4) if isinstance(value, float) else value}"
        else:
            observed = "met" if r.success else "not met"
        out.append(_result(name, cfg.expectation_type, column, bool(r.success), observed, **extra))
    return out


# --------------------------------------------------------------------------- entry point
def history_partition(history_grades) -> dict:
    """The grade distribution of the labels so far, add-one smoothed: every grade keeps some
    mass, so KL(round || history) stays finite for a grade history never saw."""
    import numpy as np

    counts = np.bincount(np.asarray(history_grades, dtype=int), minlength=len(GRADES))[: len(GRADES)] + 1.0
    return {"values": list(GRADES), "weights": [float(w) for w in counts / counts.sum()]}


def _distribution_expectations(spec, labels, history_grades) -> list[tuple[str, Any]]:
    import great_expectations.expectations as gxe

    if history_grades is None or len(history_grades) < spec.min_history_labels or not len(labels):
        return []
    part = history_partition(history_grades)
    shares = ", ".join(f"{g}: {w:.2f}" for g, w in zip(part["values"], part["weights"]))
    return [(f"grade distribution KL vs the {len(history_grades)} labels so far ({shares}) < {spec.max_grade_kl}",
             gxe.ExpectColumnKLDivergenceToBeLessThan(column="grade", partition_object=part,
                                                      threshold=float(spec.max_grade_kl)))]


def abstention_frame(spec, abstention: dict[str, float]):
    """One row per voting agent: its level-1 abstention rate and the bound it must stay under.
    The `human` agent abstains wherever nobody reviewed the pair, by design: not checked."""
    import pandas as pd

    rows = [(a, float(r), float(spec.max_abstention_per_agent.get(a, spec.max_abstention)))
            for a, r in sorted(abstention.items()) if a != "human"]
    return pd.DataFrame(rows, columns=["agent", "abstention", "bound"])


def _abstention_expectations(frame) -> list[tuple[str, Any]]:
    import great_expectations.expectations as gxe

    bounds = ", ".join(f"{a} <= {b}" for a, b in zip(frame.agent, frame.bound))
    return [(f"level-1 abstention per agent ({bounds})",
             gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="bound", column_B="abstention", or_equal=True))]


def check_labels(labels, known_query_ids: set[str], known_doc_ids: set[str], spec, escalated: int = 0,
                 out_path: Path | None = None, abstention: dict[str, float] | None = None,
                 history_grades=None) -> CheckReport:
    """Validate a round's trainable labels (the caller passes the accepted/human rows).

    labels: DataFrame with the label contract's columns; known_*_ids: the ids that exist in
    the corpus; spec: `serm.policy.ChecksSpec`; escalated: candidates escalated and still
    open this round; out_path: where to write the report JSON (atomically); abstention:
    level-1 abstention rate per agent (bounded by the policy); history_grades: the grades of
    every label before this round, seed set included (the round's distribution must stay
    within `max_grade_kl` of theirs once there are `min_history_labels`).
    Returns a CheckReport; call `.raise_for_failure()` to stop the round on failure.
    """
    escalated = int(escalated)
    n = int(len(labels))
    results: list[dict] = []

    missing = [c for c in REQUIRED_COLUMNS if c not in getattr(labels, "columns", [])]
    if n == 0:
        results.append(_result("trainable labels present", "computed", None, False,
                               "no trainable labels (the label frame is empty)"))
    elif missing:
        results.append(_result("label columns present", "computed", missing, False,
                               f"missing column(s) {missing}; the label contract needs {list(REQUIRED_COLUMNS)}"))
    else:
        results += _run_suite(labels, _expectations(spec, labels, set(known_query_ids), set(known_doc_ids))
                              + _distribution_expectations(spec, labels, history_grades))
    if abstention:
        frame = abstention_frame(spec, abstention)
        if len(frame):
            for r in _run_suite(frame, _abstention_expectations(frame)):
                if not r["success"]:
                    over = frame[frame.abstention > frame.bound]
                    r["observed"] = "; ".join(f"{a} abstained on {x:.0%} of pairs (bound {b:.0%})"
                                              for a, x, b in zip(over.agent, over.abstention, over.bound))
                    r["unexpected_examples"] = over.agent.tolist()[:MAX_EXAMPLES]
                results.append(r)

    total = escalated + n
    share = escalated / total if total else 0.0
    results.append(_result(
        f"escalated share <= {spec.max_escalated_share}", "computed", "status",
        share <= spec.max_escalated_share,
        f"{escalated} of {total} candidates ({share:.0%}) escalated and unresolved",
        observed_value=round(share, 6)))

    report = CheckReport(success=all(r["success"] for r in results), results=_plain(results),
                         labels=n, escalated=escalated, out_path=str(out_path) if out_path else None)
    if out_path is not None:
        atomic_write_json(Path(out_path), report.to_dict(), ensure_ascii=False)
    return report
