"""The Great Expectations gate on a round's labels: a failing suite stops the round before
training, with a readable reason, and production stays as it is."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from serm.errors import CheckFailed

TRAINABLE = ["accepted", "human"]


@dataclass
class CheckReport:
    success: bool
    results: list[dict] = field(default_factory=list)
    out_path: str | None = None

    def to_dict(self) -> dict:
        return {"success": self.success, "results": self.results}

    def raise_for_failure(self) -> None:
        if self.success:
            return
        lines = ["label checks failed:"]
        for r in self.results:
            if not r["success"]:
                ex = f", e.g. {r['unexpected_examples']}" if r.get("unexpected_examples") else ""
                lines.append(f"  {r['expectation']}: {r['observed']}{ex}")
        where = f"inspect {self.out_path}; " if self.out_path else ""
        lines.append(f"{where}the round stopped before training, production is unchanged")
        raise CheckFailed("\n".join(lines))


def _describe(config) -> str:
    name, kw = config.type, dict(config.kwargs)
    col = kw.get("column") or kw.get("column_list")
    if name == "expect_column_values_to_be_in_set":
        shown = sorted(kw["value_set"])
        vals = "{" + ",".join(map(str, shown[:6])) + (",…}" if len(shown) > 6 else "}")
        return f"{col} in {vals}" if len(shown) <= 6 else f"{col} known ({len(shown)} ids)"
    if name == "expect_column_values_to_not_be_null":
        return f"{col} not null"
    if name == "expect_column_values_to_be_between":
        return f"{col} between {kw.get('min_value')} and {kw.get('max_value')}"
    if name == "expect_column_mean_to_be_between":
        return f"mean {col} >= {kw.get('min_value')}"
    if name == "expect_compound_columns_to_be_unique":
        return f"({', '.join(col)}) unique"
    return name


def check_labels(labels, known_query_ids: set[str], known_doc_ids: set[str], spec, escalated: int = 0,
                 out_path: Path | None = None) -> CheckReport:
    """Validate the trainable labels of a round with one GE 1.x suite."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    results: list[dict] = []
    if len(labels) == 0:
        results.append({"expectation": "trainable labels present", "success": False,
                        "observed": "no trainable labels", "unexpected_examples": []})
    else:
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        batch_def = (ctx.data_sources.add_pandas("labels").add_dataframe_asset("round_labels")
                     .add_batch_definition_whole_dataframe("all"))
        suite = ctx.suites.add(gx.ExpectationSuite(name="serm_labels"))
        expectations = [
            gxe.ExpectColumnValuesToNotBeNull(column="grade"),
            gxe.ExpectColumnValuesToBeInSet(column="grade", value_set=[0, 1, 2, 3]),
            gxe.ExpectColumnValuesToNotBeNull(column="query_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="doc_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="agreement"),
            gxe.ExpectColumnValuesToNotBeNull(column="status"),
            gxe.ExpectColumnValuesToBeBetween(column="agreement", min_value=0.0, max_value=1.0),
            gxe.ExpectColumnMeanToBeBetween(column="agreement", min_value=spec.min_agreement),
            gxe.ExpectColumnValuesToBeInSet(column="status", value_set=TRAINABLE),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["query_id", "doc_id"]),
            gxe.ExpectColumnValuesToBeInSet(column="query_id", value_set=sorted(known_query_ids)),
            gxe.ExpectColumnValuesToBeInSet(column="doc_id", value_set=sorted(known_doc_ids)),
        ]
        for e in expectations:
            suite.add_expectation(e)
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name="serm_labels", data=batch_def, suite=suite))
        res = vd.run(batch_parameters={"dataframe": labels})
        for r in res.results:
            info = r.result or {}
            unexpected = info.get("partial_unexpected_list") or []
            if info.get("unexpected_count"):
                observed = f"{info['unexpected_count']} unexpected value(s)"
            elif "observed_value" in info:
                observed = f"observed {info['observed_value']}"
            else:
                observed = "ok" if r.success else "failed"
            results.append({"expectation": _describe(r.expectation_config),
                            "success": bool(r.success), "observed": observed,
                            "unexpected_examples": [x if not isinstance(x, float) or x == x else None
                                                    for x in unexpected[:5]]})
    total = escalated + len(labels)
    share = escalated / total if total else 0.0
    results.append({"expectation": f"escalated share <= {spec.max_escalated_share}",
                    "success": share <= spec.max_escalated_share,
                    "observed": f"{escalated} of {total} ({share:.0%}) escalated and unresolved",
                    "unexpected_examples": []})
    report = CheckReport(success=all(r["success"] for r in results), results=results,
                         out_path=str(out_path) if out_path else None)
    if out_path is not None:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(report.to_dict(), indent=2, default=str))
        os.replace(tmp, out_path)
    return report
