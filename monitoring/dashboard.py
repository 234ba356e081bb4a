"""The Evidently UI workspace of a SERM workspace: one project, its snapshots, its dashboard.

`WORKSPACE/.serm/evidently` is a local Evidently workspace (`serm ui` serves it) holding one
project, "SERM <workspace folder>", with four kinds of snapshots:

- `drift` (tags serm, drift): each batch's drift report, added by `monitoring.drift.run_drift`
  when the round's drift stage runs (one per round: a restarted round replaces its own);
- `round` (tag serm-round): one per committed round: drift share and each detector's value,
  whether the trigger fired / the pipeline ran / the model was promoted, mined, accepted,
  escalated and human-resolved counts, candidate and production NDCG@4, the production
  version after the round;
- `version` (tag serm-version): one per model version: NDCG@4 and accuracy on the static and
  evolving test sets, and whether it is production now;
- `state` (tag serm-state): the production version now.

Evidently dashboards plot only metric results stored in snapshots, so each round / version
/ state row is logged as a Report of `MeanValue` metrics over a one-row Dataset whose columns
are that row's numbers (the mean of one value is the value; a missing value is left out, so
the series has a gap there). `sync` derives these rows from the committed files
(data/rounds/*/, versions.json, data/state.json) and is idempotent: every snapshot carries a
fingerprint of its row; sync adds what is missing, replaces what changed and deletes what no
longer exists (rounds undone by a rollback). `serm-index.json` in the Evidently workspace
maps snapshot ids to (kind, key, fingerprint); Evidently ignores files at its top level.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

from serm.files import atomic_write_text

INDEX = "serm-index.json"
SCHEMA = 1  # bump when the rows change shape: every summary snapshot is then rebuilt
TAGS = {"round": "serm-round", "version": "serm-version", "state": "serm-state"}
METRIC = "evidently:metric_v2:MeanValue"


def project_name(ws) -> str:
    """The Evidently project of SERM workspace `ws`."""
    return f"SERM {Path(ws.root).name}"


def evidently_path(ws) -> Path:
    return Path(ws.dot) / "evidently"


# --------------------------------------------------------------------------- index + project
@contextlib.contextmanager
def _locked_index(path: Path):
    """The index, exclusively: two writers (a round finishing, `serm ui`) never interleave."""
    import fcntl

    path.mkdir(parents=True, exist_ok=True)
    with open(path / (INDEX + ".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        f = path / INDEX
        index = json.loads(f.read_text()) if f.exists() else {}
        index.setdefault("snapshots", {})
        yield index
        atomic_write_text(f, json.dumps(index, indent=2, sort_keys=True))


def _project(ews, index: dict, name: str, description: str | None = None):
    """The project recorded in the index, else the one named `name`, else a new one."""
    pid = index.get("project_id")
    project = ews.get_project(pid) if pid else None
    if project is None:
        found = ews.search_project(name)
        project = found[0] if found else ews.create_project(name, description=description)
        index["project_id"] = str(project.id)
        index["snapshots"] = {}
    return project


def record_snapshot(path: Path, name: str, snapshot, run_name: str | None, kind: str, key=None,
                    fingerprint: str | None = None, description: str | None = None) -> dict:
    """Add `snapshot` to the project `name` of the Evidently workspace at `path`; with `key`,
    replace the earlier snapshot of the same (kind, key)."""
    from evidently.ui.workspace import Workspace

    with _locked_index(Path(path)) as index:
        ews = Workspace.create(str(path))
        project = _project(ews, index, name, description)
        if key is not None:
            for sid, entry in list(index["snapshots"].items()):
                if entry["kind"] == kind and entry["key"] == str(key):
                    _delete(ews, project.id, sid, index)
        ref = ews.add_run(project.id, snapshot, name=run_name)
        index["snapshots"][str(ref.id)] = {"kind": kind, "key": None if key is None else str(key),
                                           "fingerprint": fingerprint}
    return {"path": str(path), "project_id": str(project.id), "snapshot_id": str(ref.id)}


def _delete(ews, project_id, sid: str, index: dict) -> None:
    with contextlib.suppress(FileNotFoundError):
        ews.delete_run(project_id, sid)
    index["snapshots"].pop(sid, None)


# --------------------------------------------------------------------------- rows
def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _num(value):
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and value == value:
        return float(value)
    return None


def _version_of(tag: str | None, versions: list[dict]) -> int | None:
    for v in versions:
        if tag and v.get("tag") == tag:
            return int(v["version"])
    return None


def round_rows(ws) -> list[dict]:
    """One row per committed round, oldest first: key, time, name, metadata, values."""
    reg = ws.versions()
    prod = _version_of(next((v.get("tag") for v in reg["versions"] if v.get("round") == 0), None), reg["versions"])
    prod = 0 if prod is None else prod
    from serm import schema as S
    from serm.schema import Metrics, RoundManifest, WorkspaceLayout

    rows = []
    for rl in WorkspaceLayout(ws.root).committed_rounds():
        man = RoundManifest.load(rl.committed_manifest)
        st = man.stages
        ing, drift = man.ingest, man.drift
        mine, ann, met = (_load(rl.kept(a)) for a in (S.MINING_REPORT, S.ANNOTATION_REPORT, S.METRICS))
        if man.promoted:
            prod = _version_of(man.tag, reg["versions"]) if man.tag else prod
        dets = drift.get("detectors", [])
        judged = [d for d in dets if d.get("value") is not None]
        values = {"batch": ing.get("batch"), "trigger": drift.get("trigger"), "evolved": "mine" in st,
                  "promoted": man.promoted, "production_version": prod,
                  "drift_share": sum(bool(d["drifted"]) for d in judged) / len(judged) if judged else None,
                  "detectors_drifted": sum(bool(d["drifted"]) for d in judged) if dets else None,
                  "mined": mine.get("selected"), "stream_pairs": mine.get("stream_pairs"),
                  "accepted": ann.get("accepted"), "escalated": ann.get("escalated_total"),
                  "human_resolved": ann.get("human_resolved"), "escalated_open": ann.get("escalated_open"),
                  "rejected": ann.get("rejected")}
        for d in dets:
            values[f"drift_{d['type']}"] = d.get("value")
        for who in ("candidate", "production"):
            for split in S.TEST_SETS:
                values[f"{who}_{split}_ndcg@4"] = Metrics.from_dict(met.get(who)).get(split, "ndcg@4")
        rows.append({"kind": "round", "key": str(man.round), "time": man.finished,
                     "name": f"round {man.round}: batch {ing.get('batch')} ({ing.get('locale')})",
                     "metadata": {"round": str(man.round), "batch": str(ing.get("batch")),
                                  "locale": str(ing.get("locale")), "production": f"v{prod}"},
                     "values": values, "detectors": dets})
    return rows


def version_rows(ws) -> list[dict]:
    from serm.schema import TEST_SETS, Metrics

    reg = ws.versions()
    rows = []
    for v in sorted(reg["versions"], key=lambda v: v["version"]):
        m = Metrics.from_dict(v.get("metrics"))
        values = {"version": v["version"], "is_production": v["version"] == reg.get("production"),
                  "round": v.get("round")}
        for split in TEST_SETS:
            for metric in ("ndcg@4", "accuracy"):
                values[f"{split}_{metric}"] = m.get(split, metric)
        rows.append({"kind": "version", "key": str(v["version"]), "time": v.get("created"),
                     "name": f"model v{v['version']} ({v.get('tag')})",
                     "metadata": {"version": f"v{v['version']}", "tag": str(v.get("tag")), "round": str(v.get("round")),
                                  "evolving_locale": str(m.locale("evolving"))},
                     "values": values})
    return rows


def state_row(ws) -> dict:
    state, reg = ws.state(), ws.versions()
    prod = reg.get("production", state.get("production"))
    return {"kind": "state", "key": "production", "time": None, "name": f"production v{prod}",
            "metadata": {"production": f"v{prod}"},
            "values": {"production_version": prod, "rounds_done": state.get("rounds_done")}}


def _fingerprint(row: dict) -> str:
    blob = json.dumps({k: row[k] for k in ("time", "name", "metadata", "values")} | {"schema": SCHEMA},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def row_snapshot(row: dict):
    """The Evidently snapshot of one row: MeanValue of each present value over a one-row Dataset."""
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue

    values = {k: v for k, v in ((k, _num(v)) for k, v in row["values"].items()) if v is not None}
    cols = list(values)
    data = Dataset.from_pandas(pd.DataFrame([values], columns=cols), data_definition=DataDefinition(numerical_columns=cols))
    when = datetime.fromisoformat(row["time"]) if row.get("time") else datetime.now(timezone.utc)
    # Evidently stores naive timestamps: keep UTC wall time, as its own snapshots do.
    when = when.astimezone(timezone.utc).replace(tzinfo=None) if when.tzinfo else when
    return Report([MeanValue(column=c) for c in cols]).run(
        data, None, timestamp=when, tags=["serm", TAGS[row["kind"]]],
        metadata={"source": "serm monitoring.dashboard", "kind": row["kind"], **row["metadata"]}, name=row["name"])


# --------------------------------------------------------------------------- sync
def sync(ws, log=None) -> dict:
    """Bring the Evidently project of `ws` up to date with its committed rounds and versions,
    and rewrite its dashboard. Returns counts and the project id."""
    from evidently.ui.workspace import Workspace

    from serm import versioning

    interrupted = versioning.interrupted_promotion(ws)
    if interrupted and interrupted["kind"] == "uncommitted":   # data/ is half-way: keep the committed picture
        if log:
            log(f"[dashboard] not synced: {interrupted['message']}")
        return {"path": str(evidently_path(ws)), "added": 0, "removed": 0, "skipped": interrupted["message"]}
    path = evidently_path(ws)
    state = state_row(ws)
    rows = round_rows(ws) + version_rows(ws) + ([state] if state["values"]["production_version"] is not None else [])
    wanted = {(r["kind"], r["key"]): (r, _fingerprint(r)) for r in rows}
    added = removed = 0
    with _locked_index(path) as index:
        ews = Workspace.create(str(path))
        project = _project(ews, index, project_name(ws), f"SERM workspace {ws.root}")
        have = {}
        for sid, entry in list(index["snapshots"].items()):
            if entry["kind"] == "drift":
                if _stale_drift(ws, entry["key"]):
                    _delete(ews, project.id, sid, index)
                    removed += 1
                continue
            want = wanted.get((entry["kind"], entry["key"]))
            if want is None or want[1] != entry["fingerprint"] or (entry["kind"], entry["key"]) in have:
                _delete(ews, project.id, sid, index)
                removed += 1
            else:
                have[(entry["kind"], entry["key"])] = sid
        for key, (row, fp) in wanted.items():
            if key in have:
                continue
            ref = ews.add_run(project.id, row_snapshot(row), name=row["name"])
            index["snapshots"][str(ref.id)] = {"kind": row["kind"], "key": row["key"], "fingerprint": fp}
            added += 1
        build_dashboard(ews, project.id, ws, rows)
        total = len(index["snapshots"])
    if log:
        log(f"[dashboard] Evidently project {project_name(ws)!r}: {added} snapshot(s) added, {removed} removed, "
            f"{total} in all ({path})")
    return {"project_id": str(project.id), "added": added, "removed": removed, "snapshots": total, "path": str(path)}


def _stale_drift(ws, key) -> bool:
    """A drift snapshot of a round that is neither committed nor in progress (undone by a rollback)."""
    from serm.schema import WorkspaceLayout

    try:
        r = int(key)
    except (TypeError, ValueError):
        return False
    done = ws.state().get("rounds_done", 0)
    if r <= done:
        return not WorkspaceLayout(ws.root).round(r).committed_manifest.exists()
    if r == done + 1:
        return False  # the round in progress; when it reruns its drift stage, that replaces this one
    return not Path(ws.staging(r)).exists()


def update_dashboard(ws, log=print) -> dict | None:
    """`sync`, never failing the caller: a round commits even when the dashboard cannot be
    written; the next round or `serm ui` brings it up to date."""
    try:
        return sync(ws, log)
    except Exception as exc:  # noqa: BLE001 - the dashboard is derived state; the round must commit
        log(f"[dashboard] not updated ({type(exc).__name__}: {exc}); `serm ui` will bring it up to date")
        return None


# --------------------------------------------------------------------------- the dashboard
def _metric(column: str, legend: str, kind: str):
    from evidently.sdk.models import PanelMetric

    return PanelMetric(legend=legend, metric=METRIC, metric_labels={"column": column}, tags=[TAGS[kind]])


def _rule(det: dict) -> str:
    op = det.get("details", {}).get("drifted_when", "value >= threshold").split()[1]
    label = det.get("details", {}).get("value_label", "").rstrip("=") or "value"
    return f"{det['type']}: {label}{op}{det['threshold']:g}"


def build_dashboard(ews, project_id, ws, rows: list[dict]) -> None:
    """Write the project's dashboard (one tab, every panel) in one go. (Evidently 0.7.23's
    `project.dashboard.add_panel(panel, tab=...)` lists a panel twice in its tab.)"""
    from evidently.sdk.models import DashboardModel, DashboardTabModel
    from evidently.sdk.panels import bar_plot_panel, counter_panel, line_plot_panel, text_panel

    rounds = [r for r in rows if r["kind"] == "round"]
    versions = [r for r in rows if r["kind"] == "version"]
    prod = state_row(ws)["values"]["production_version"]
    prod_row = next((v for v in versions if v["values"]["version"] == prod), None)
    detectors = {}
    for r in rounds:
        for d in r["detectors"]:
            detectors[d["type"]] = d  # the latest round's definition of each detector
    when = ", ".join(f"{v['metadata']['version']} {str(v['time'])[:16].replace('T', ' ')}" for v in versions)
    live = f"v{prod} ({prod_row['metadata']['tag']})" if prod_row else f"v{prod}"

    panels = []
    panels.append(text_panel(
        title=f"SERM workspace {Path(ws.root).name}: production {live}",
        description=(f"{len(rounds)} round(s) committed, {len(versions)} model version(s). One point per stream "
                     f"batch (= round) or per model version, placed at the time it happened. Each batch's drift "
                     f"report is under Reports. Workspace: {ws.root}")))
    panels.append(counter_panel(title="Production model version", size="half", aggregation="last",
                              values=[_metric("production_version", f"production = v{prod}", "state")],
                              description="the version serving now (data/model)"))
    panels.append(counter_panel(title="Drift share of the latest batch", size="half", aggregation="last",
                              values=[_metric("drift_share", "share of detectors that drifted", "round")],
                              description=rounds[-1]["name"] if rounds else "no round yet"))
    panels.append(line_plot_panel(title="Drift share per batch", size="half", values=[
        _metric("drift_share", "drift share", "round"),
        _metric("trigger", "trigger fired (1=yes)", "round"),
        _metric("evolved", "pipeline ran (1=yes)", "round")],
        description="per stream batch (round): detectors drifted / detectors"))
    panels.append(line_plot_panel(title="Per-detector drift score per batch", size="half", values=[
        _metric(f"drift_{t}", _rule(det), "round") for t, det in detectors.items()],
        description="each detector's measured value; legend: detector: value, drift rule"))
    panels.append(line_plot_panel(title="NDCG@4 per model version", size="half", values=[
        _metric("static_ndcg@4", "static test", "version"),
        _metric("evolving_ndcg@4", "evolving test", "version")],
        description=f"static = seed locale, evolving = the newest batch's locale when made; {when}"))
    panels.append(line_plot_panel(title="Accuracy per model version", size="half", values=[
        _metric("static_accuracy", "static test", "version"),
        _metric("evolving_accuracy", "evolving test", "version")],
        description=f"one point per version: {when}"))
    panels.append(bar_plot_panel(title="Mined / accepted / escalated per round", size="full", values=[
        _metric("mined", "mined pairs", "round"),
        _metric("accepted", "accepted labels", "round"),
        _metric("escalated", "escalated to people", "round"),
        _metric("human_resolved", "resolved by a person", "round")],
        description="rounds whose trigger did not fire mine nothing (no bar)"))
    panels.append(line_plot_panel(title="Candidate vs production NDCG@4 per round", size="half", values=[
        _metric("candidate_evolving_ndcg@4", "candidate, evolving", "round"),
        _metric("production_evolving_ndcg@4", "production, evolving", "round"),
        _metric("candidate_static_ndcg@4", "candidate, static", "round")],
        description="the promotion gate compares these"))
    panels.append(bar_plot_panel(title="Production marker per model version", size="half", values=[
        _metric("is_production", "1 = production", "version")],
        description=f"production now: {live}; one bar group per version: {when}"))
    panels.append(line_plot_panel(title="Production version after each round", size="half", values=[
        _metric("production_version", "production version", "round")],
        description="a step up = a promotion"))
    ews.save_dashboard(project_id, DashboardModel(tabs=[DashboardTabModel(title="SERM", panels=[p.id for p in panels])],
                                                  panels=panels))
