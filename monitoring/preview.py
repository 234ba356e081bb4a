"""`serm drift`: the drift of the next stream batch (or of the round in progress) against the
production reference, and what the trigger would decide, without starting a round.

Nothing under data/ is written, no round is started, Feast and the Evidently project are left
alone: the batch is served in memory (`serm.stages.serve_batch`) and the drift report goes to
`.serm/drift-preview/` (derived state) so it can be opened.
"""

from __future__ import annotations

import json
from pathlib import Path


def current_batch(ws, policy, log=print):
    """(per-query frame, info) of the batch the next `serm evolve` would measure: the ingested
    batch of the round in progress if there is one, else the next stream batch served now."""
    import pandas as pd

    from serm import stages

    state = ws.state()
    round_no, batch_no = state["rounds_done"] + 1, state["next_batch"]
    man = ws.staging(round_no) / "manifest.json"
    frame = ws.staging(round_no) / "ingest" / "query_frame.parquet"
    if man.exists() and frame.exists():
        ing = json.loads(man.read_text()).get("stages", {}).get("ingest", {})
        if ing.get("status") == "done":
            res = ing.get("result") or {}
            return pd.read_parquet(frame), {"source": f"round {round_no} in progress (ingested)", "round": round_no,
                                            "batch": res.get("batch", batch_no), "locale": res.get("locale"),
                                            "pairs": int(res.get("pairs", 0))}
    log(f"[drift] serving stream batch {batch_no} with production v{state.get('production')} "
        "(in memory; nothing is written)")
    locale, v, qf, _ = stages.serve_batch(ws, policy, batch_no)
    pairs = int(v.valid[["query_id", "doc_id"]].drop_duplicates().shape[0])
    return qf, {"source": f"next stream batch {batch_no} (not ingested)", "round": round_no, "batch": batch_no,
                "locale": locale, "pairs": pairs}


def preview(ws, policy, log=print):
    """Drift verdicts and trigger decision for `current_batch`. Returns (DriftResult, record, info)."""
    from monitoring.drift import batch_drift
    from serm.errors import WorkspaceError

    if not ws.initialised():
        raise WorkspaceError(f"{ws.root} has no production model yet (no data/model, data/state.json); "
                             "run `serm init` or `serm evolve` there first")
    frame, info = current_batch(ws, policy, log)
    out = Path(ws.dot) / "drift-preview" / f"r{info['round']:04d}"
    result, record = batch_drift(ws, policy, frame, info["pairs"], out, evidently_workspace=None,
                                 batch_name=f"preview of round {info['round']}")
    return result, record, info


def format_preview(result, record, info, policy) -> str:
    from monitoring.drift import duration, format_verdicts

    t = policy.drift.trigger
    limits = [f"mode {t.mode}", f"min_new_pairs {t.min_new_pairs}",
              f"cooldown {duration(t.cooldown)}" if t.cooldown else "no cooldown",
              (f"max {t.max_rounds_per_period} round(s) per {duration(t.period)}" if t.max_rounds_per_period
               else "no rounds-per-period cap"), f"force {str(t.force).lower()}"]
    h = record["history"]
    lines = [f"drift of {info['source']}: locale {info['locale']}, {info['pairs']} new pairs "
             f"(reference: what production was trained on)",
             format_verdicts(result),
             f"trigger policy: {', '.join(limits)}",
             f"history: {h['evolution_rounds']} evolution round(s) of {h['committed_rounds']} committed"
             + (f", the last round {h['last_evolution_round']} at {h['last_evolution_finished']}"
                if h["last_evolution_round"] is not None else ""),
             f"trigger: {'YES' if record['trigger'] else 'no'} — {record['reason']}",
             f"report: {result.html_path} (nothing written to data/, no round started)"]
    return "\n".join(lines)
