"""Round summary (terminal) and round report (HTML page + PNG plot in the round's folder)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from serm import schema as S
from serm.files import atomic_write_text
from serm.schema import METRIC_NAMES as METRICS, Metrics, RoundManifest, RoundMetrics, TEST_SETS


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _manifest(rdir: Path) -> RoundManifest:
    return RoundManifest.maybe(rdir) or RoundManifest(round=None)


def summary_lines(rdir: Path) -> list[str]:
    man = _manifest(rdir)
    ing, drift = man.ingest, man.drift
    mine = _load(rdir / S.MINING_REPORT.name)
    ann = _load(rdir / S.ANNOTATION_REPORT.name)
    met = _load(rdir / S.METRICS.name)
    lines = [f"Round {man.round} summary",
             f"  stream      batch {ing.get('batch')} ({ing.get('locale')}): {ing.get('valid')} events, "
             f"{ing.get('quarantined')} quarantined",
             f"  drift       {'DRIFT' if drift.get('drifted_any') else 'no drift'}; trigger: "
             f"{'yes' if drift.get('trigger') else 'no'} — {drift.get('reason', '')}"]
    if mine:
        lines.append(f"  mined       {mine.get('selected')} of {mine.get('stream_pairs')} pairs "
                     f"(per agent {mine.get('per_agent')})")
    if ann:
        lines.append(f"  annotated   {ann.get('candidates')}: accepted {ann.get('accepted')}, "
                     f"escalated {ann.get('escalated_total')} (human-resolved {ann.get('human_resolved')}, "
                     f"open {ann.get('escalated_open')}), rejected {ann.get('rejected')}")
        if "simulation_accepted_label_accuracy" in ann:
            lines.append(f"              accepted-label accuracy vs hidden grades (simulation only): "
                         f"{ann['simulation_accepted_label_accuracy']:.1%}")
    if met:
        rm = RoundMetrics.from_dict(met)
        lines.append("  metrics     set       metric    production  candidate")
        for split in TEST_SETS:
            for m in METRICS:
                p, c = rm.production.get(split, m), rm.candidate.get(split, m)
                lines.append(f"              {split:<9} {m:<9} {p!s:<11} {c!s}"
                             + (f"   ({rm.candidate.locale(split)})" if m == "ndcg@4" else ""))
        for split, c in ((s, rm.paired[s]) for s in TEST_SETS if s in rm.paired):
            lines.append(f"  paired      {split:<9} candidate − production {c['delta']:+.4f} "
                         f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}], p={c['p_value']:.4f} over {c['queries']} "
                         f"queries ({c['verdict']})")
        for name, b in rm.baselines.items():
            lines.append(f"  baseline    {name:<10} " + ", ".join(
                f"{split} ndcg@4 {b.get(split, 'ndcg@4')}" for split in TEST_SETS))
    lines.append(f"  decision    {'PROMOTED ' + str(man.tag) if man.promoted else 'not promoted'}"
                 f" — {man.reason or ''}")
    secs = man.seconds()
    if secs:
        lines.append("  wall time   " + ", ".join(f"{k} {v:.0f}s" for k, v in secs.items()))
    return lines


def plot_versions(versions: list[dict], out: Path, production: int | None = None) -> Path | None:
    """NDCG@4 and accuracy on the static and evolving tests, one point per model version; the
    production version is circled."""
    if not versions:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versions = sorted(versions, key=lambda v: v["version"])
    xs = list(range(len(versions)))
    labels = [f"v{v['version']}" for v in versions]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100, sharex=True)
    for ax, metric, title in zip(axes, ("ndcg@4", "accuracy"), ("NDCG@4", "accuracy")):
        for split in TEST_SETS:
            ys = [Metrics.from_dict(v["metrics"]).get(split, metric) for v in versions]
            ys = [float("nan") if y is None else y for y in ys]
            ax.plot(xs, ys, marker="o", label=f"{split} test")
            if production is not None:
                for x, v, y in zip(xs, versions, ys):
                    if v["version"] == production and y == y:
                        ax.scatter([x], [y], s=160, facecolors="none", edgecolors="black", zorder=3)
        ax.set_title(f"{title} per model version")
        ax.set_ylim(0, 1)
        ax.set_xticks(xs, labels)
        ax.set_xlabel("model version" + (f" (circled: production v{production})" if production is not None else ""))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _link(rdir: Path, name: str, text: str | None = None) -> str:
    if not (rdir / name).exists():
        return f"<span class=missing>{html.escape(text or name)} (not written this round)</span>"
    return f'<a href="{html.escape(name)}">{html.escape(text or name)}</a>'


def _drift_section(rdir: Path, drift: dict, decision: dict) -> str:
    rows = []
    for d in drift.get("detectors", []):
        det = d.get("details", {})
        op = det.get("drifted_when", "value >= threshold").split()[1]
        rows.append([d["type"], d.get("value"), f"{op} {d['threshold']:g}", "YES" if d.get("drifted") else "no",
                     det.get("skipped") or det.get("value_is", "")])
    trig = drift.get("trigger_policy") or {}
    parts = [f"<p>{_link(rdir, S.DRIFT_HTML.name, 'Evidently drift report (drift.html)')} · "
             f"{_link(rdir, S.DRIFT_JSON.name)}</p>",
             _table(["detector", "value", "drift when", "drifted", "value is"], rows) if rows
             else "<p>no drift result recorded</p>",
             f"<p><b>Trigger:</b> {'fired' if drift.get('trigger') else 'did not fire'} — "
             f"{html.escape(str(drift.get('reason', '')))}</p>"]
    if decision:
        parts.append(f"<p><b>Pipeline:</b> {'ran' if decision.get('run_pipeline') else 'did not run'} — "
                     f"{html.escape(str(decision.get('reason', '')))}</p>")
    if trig:
        from serm.policy_schema import duration

        shown = {k: duration(v) if k in ("cooldown", "period") and isinstance(v, (int, float)) else v
                 for k, v in trig.items()}
        parts.append("<p class=small>trigger policy: " + html.escape(", ".join(f"{k}={v}" for k, v in shown.items()))
                     + "</p>")
    return "\n".join(parts)


def _mining_section(rdir: Path, mine: dict) -> str:
    if not mine:
        return "<p>nothing mined this round (the pipeline did not run)</p>"
    per_agent = mine.get("per_agent") or {}
    selected = mine.get("selected_per_agent") or {}
    rows = [[a, n, selected.get(a)] for a, n in per_agent.items()]
    return (f"<p>{_link(rdir, S.MINING_REPORT.name)} · {_link(rdir, S.CANDIDATES.name)}</p>"
            f"<p>selected <b>{mine.get('selected')}</b> of {mine.get('stream_pairs')} stream pairs "
            f"(budget {mine.get('budget')}, {mine.get('scored_pairs')} scored)</p>"
            + (_table(["agent", "pairs picked", "in the selection"], rows) if rows else ""))


def _annotation_section(rdir: Path, ann: dict) -> str:
    if not ann:
        return "<p>nothing annotated this round (the pipeline did not run)</p>"
    keys = [("candidates", "candidate pairs"), ("votes", "votes"), ("accepted", "accepted (two-level agreement)"),
            ("human_resolved", "resolved by a person"), ("escalated_open", "escalated, still open"),
            ("escalated_total", "escalated in all"), ("rejected", "rejected"),
            ("accepted_rate", "accepted share of candidates (agreement rate)"),
            ("escalation_rate", "escalated share of candidates"),
            ("mean_agreement_accepted", "mean agreement of accepted labels"),
            ("simulation_accepted_label_accuracy", "accepted-label accuracy vs hidden grades (simulation only)"),
            ("cost", "cost"), ("tokens", "tokens")]
    rows = [[label, ann[k]] for k, label in keys if k in ann]
    parts = [f"<p>{_link(rdir, S.ANNOTATION_REPORT.name)} · {_link(rdir, S.LABELS.name)} · "
             f"{_link(rdir, S.ESCALATIONS.name)} · "
             f"{_link(rdir, S.LABEL_CHECKS.name, 'label checks (Great Expectations)')}</p>",
             _table(["statistic", "value"], rows)]
    grades = ann.get("grade_distribution") or {}
    if grades:
        parts.append(_table(["grade", "labels"], [[g, n] for g, n in sorted(grades.items(), key=lambda kv: str(kv[0]))]))
    abst = ann.get("level1_abstention") or {}
    acc = ann.get("simulation_agent_accuracy") or {}
    if abst or acc:
        rows = []
        for a in sorted(set(abst) | set(acc)):
            right = acc.get(a, {})
            rows.append([a, abst.get(a), right.get("accuracy"), right.get("graded")])
        parts.append(_table(["agent", "abstention (level 1)", "accuracy vs hidden grades (simulation only)",
                             "pairs it graded"], rows))
    return "\n".join(parts)


def _metrics_section(rdir: Path, met: dict, man: RoundManifest) -> str:
    if not met:
        return "<p>no candidate was trained this round</p>"
    rm = RoundMetrics.from_dict(met)
    rows = []
    for split in TEST_SETS:
        for m in METRICS:
            p, c = rm.production.get(split, m), rm.candidate.get(split, m)
            delta = c - p if isinstance(p, (int, float)) and isinstance(c, (int, float)) else None
            rows.append([f"{split} ({rm.candidate.locale(split)})", m, p, c, delta])
    base = [[name, f"{split} ({rm.candidate.locale(split)})", m, b.get(split, m), rm.candidate.get(split, m)]
            for name, b in rm.baselines.items() for split in TEST_SETS for m in METRICS if b.get(split, m) is not None]
    paired = [[f"{split} ({rm.candidate.locale(split)})", c["queries"], c["delta"], f"[{c['ci_low']:+.4f}, "
               f"{c['ci_high']:+.4f}]", c["p_value"], c["verdict"]]
              for split, c in ((s, rm.paired[s]) for s in TEST_SETS if s in rm.paired)]
    verdict = f"promoted {man.tag}" if man.promoted else "not promoted"
    return (f"<p>{_link(rdir, S.METRICS.name)}</p>"
            + _table(["test set", "metric", "production", "candidate", "candidate - production"], rows)
            + ("<p>Candidate − production on the promotion metric, paired over each set's queries "
               "(randomization test, bootstrap 95% CI):</p>"
               + _table(["test set", "queries", "delta", "95% CI", "p", "verdict"], paired) if paired else "")
            + ("<p>Reference rankers on the same candidates (ranking only; they give no grades):</p>"
               + _table(["baseline", "test set", "metric", "baseline", "candidate"], base) if base else "")
            + f"<p><b>Decision:</b> {html.escape(verdict)} — {html.escape(str(man.reason or ''))}</p>")


def _versions_section(versions: list[dict], production, plot: Path | None) -> str:
    rows = []
    for v in sorted(versions, key=lambda v: v["version"]):
        m = Metrics.from_dict(v.get("metrics"))
        rows.append([f"v{v['version']}" + (" (production)" if v["version"] == production else ""), v.get("tag"),
                     v.get("round"), m.get(S.STATIC, "ndcg@4"), m.get(S.EVOLVING, "ndcg@4"), m.locale(S.EVOLVING),
                     m.get(S.STATIC, "accuracy"), m.get(S.EVOLVING, "accuracy")])
    img = f'<p><img src="{plot.name}" alt="NDCG@4 and accuracy per model version"></p>' if plot else ""
    return img + _table(["version", "tag", "round", "static NDCG@4", "evolving NDCG@4", "evolving locale",
                         "static accuracy", "evolving accuracy"], rows)


def write_round_report(ws, round_no: int, rdir: Path) -> Path:
    """`report.html` in the round's folder: summary, drift + trigger, mining, annotation
    statistics, the metrics table and `metrics_by_version.png`, with links to every artifact."""
    reg = ws.versions()
    versions, production = reg["versions"], reg.get("production")
    plot = plot_versions(versions, rdir / S.VERSIONS_PLOT, production)
    man = _manifest(rdir)
    body = "\n".join(html.escape(line) for line in summary_lines(rdir))
    sections = [("Summary", f"<pre>{body}</pre>"),
                ("Drift and trigger", _drift_section(rdir, man.drift, man.decision or {})),
                ("Mining", _mining_section(rdir, _load(rdir / S.MINING_REPORT.name))),
                ("Annotation statistics", _annotation_section(rdir, _load(rdir / S.ANNOTATION_REPORT.name))),
                ("Metrics: candidate vs production", _metrics_section(rdir, _load(rdir / S.METRICS.name), man)),
                ("Metrics across versions", _versions_section(versions, production, plot)),
                ("More", f"<p>{_link(rdir, S.MANIFEST_FILE, 'round manifest (stages, timings, decision)')} · "
                         f"dashboard of every round and version: <code>serm ui --workspace {html.escape(str(ws.root))}"
                         "</code></p>")]
    toc = " · ".join(f'<a href="#s{i}">{html.escape(t)}</a>' for i, (t, _) in enumerate(sections))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>SERM round {round_no}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}} pre{{background:#f6f6f6;padding:1em;overflow-x:auto}}
table{{border-collapse:collapse;margin:.5em 0}} td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}
th{{background:#eee}} .missing{{color:#888}} .small{{color:#555;font-size:90%}}</style></head>
<body><h1>SERM round {round_no}</h1><p>{toc}</p>
{''.join(f'<h2 id="s{i}">{html.escape(t)}</h2>{content}' for i, (t, content) in enumerate(sections))}
</body></html>"""
    out = atomic_write_text(rdir / S.REPORT_HTML, page)
    return out
