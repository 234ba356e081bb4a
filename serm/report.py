"""Round summary (terminal) and round report (HTML page + PNG plot in the round's folder)."""

from __future__ import annotations

import html
import json
from pathlib import Path


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def summary_lines(rdir: Path) -> list[str]:
    man = _load(rdir / "manifest.json")
    st = man.get("stages", {})
    ing = st.get("ingest", {}).get("result") or {}
    drift = st.get("drift", {}).get("result") or {}
    mine = _load(rdir / "mining_report.json")
    ann = _load(rdir / "annotation_report.json")
    met = _load(rdir / "metrics.json")
    lines = [f"Round {man.get('round')} summary",
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
        lines.append("  metrics     set       metric    production  candidate")
        for split in ("static", "evolving"):
            for m in ("ndcg@4", "ndcg@10", "accuracy", "macro_f1"):
                p, c = met["production"][split].get(m), met["candidate"][split].get(m)
                lines.append(f"              {split:<9} {m:<9} {p!s:<11} {c!s}"
                             + (f"   ({met['candidate'][split]['locale']})" if m == "ndcg@4" else ""))
    lines.append(f"  decision    {'PROMOTED ' + str(man.get('tag')) if man.get('promoted') else 'not promoted'}"
                 f" — {man.get('reason', '')}")
    order = ["ingest", "drift", "mine", "annotate", "check", "train", "evaluate", "promote"]
    secs = {k: st[k]["seconds"] for k in order if k in st and st[k].get("seconds") is not None}
    if secs:
        lines.append("  wall time   " + ", ".join(f"{k} {v:.0f}s" for k, v in secs.items()))
    return lines


def plot_versions(versions: list[dict], out: Path) -> Path | None:
    if not versions:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [f"v{v['version']}" for v in versions]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for split in ("static", "evolving"):
        ax.plot(xs, [v["metrics"][split]["ndcg@4"] for v in versions], marker="o", label=f"NDCG@4 {split}")
    ax.set_ylim(0, 1)
    ax.set_xlabel("model version")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def write_round_report(ws, round_no: int, rdir: Path) -> Path:
    versions = ws.versions()["versions"]
    plot = plot_versions(versions, rdir / "metrics_by_version.png")
    body = "\n".join(html.escape(line) for line in summary_lines(rdir))
    links = [(n, n) for n in ("drift.html", "drift.json", "mining_report.json", "annotation_report.json",
                              "label_checks.json", "metrics.json", "manifest.json") if (rdir / n).exists()]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>SERM round {round_no}</title>
<style>body{{font-family:sans-serif;margin:2em}} pre{{background:#f6f6f6;padding:1em}}</style></head>
<body><h1>SERM round {round_no}</h1><pre>{body}</pre>
<h2>Artifacts</h2><ul>{''.join(f'<li><a href="{h}">{html.escape(t)}</a></li>' for h, t in links)}</ul>
{f'<h2>Metrics across versions</h2><img src="{plot.name}" alt="NDCG@4 by version">' if plot else ''}
</body></html>"""
    out = rdir / "report.html"
    out.write_text(page, encoding="utf-8")
    return out
