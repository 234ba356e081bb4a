"""`serm drift`: the drift of the next stream batch (or of the round in progress) against the
production reference, and what the trigger would decide, without starting a round.

Nothing under data/ is written, no round is started, Feast and the Evidently project are left
alone: the batch is served in memory (`serm.round.serve_batch`) and the drift report goes to
`.serm/drift-preview/` (derived state) so it can be opened.
"""

from __future__ import annotations

from pathlib import Path


def current_batch(ws, policy, log=print):
    """(per-query frame, info) of the batch the next `serm evolve` would measure: the ingested
    batch of the round in progress if there is one, else the next stream batch served now."""
    import pandas as pd

    from serm import round as rounds, schema

    state = ws.state()
    round_no, batch_no = state["rounds_done"] + 1, state["next_batch"]
    rl = schema.WorkspaceLayout(ws.root).round(round_no)
    man = schema.RoundManifest.maybe(rl.manifest)
    frame = rl.staged(schema.QUERY_FRAME)
    if man is not None and frame.exists() and man.done("ingest"):
        res = man.ingest
        return pd.read_parquet(frame), {"source": f"round {round_no} in progress (ingested)", "round": round_no,
                                        "batch": res.get("batch", batch_no), "locale": res.get("locale"),
                                        "pairs": int(res.get("pairs", 0))}
    log(f"[drift] serving stream batch {batch_no} with production v{state.get('production')} "
        "(in memory; nothing is written)")
    served, locale, _ = rounds.serve_batch(ws, policy, batch_no)
    pairs = int(served.events[["query_id", "doc_id"]].drop_duplicates().shape[0])
    return served.frame, {"source": f"next stream batch {batch_no} (not ingested)", "round": round_no,
                          "batch": batch_no, "locale": locale, "pairs": pairs}


def preview(ws, policy, log=print):
    """Drift verdicts and trigger decision for `current_batch`. Returns (DriftResult, record, info)."""
    from monitoring.dashboard import project_name
    from monitoring.drift import batch_drift
    from serm import history
    from serm.errors import WorkspaceError

    if not ws.initialised():
        raise WorkspaceError(f"{ws.root} has no production model yet (no data/model, data/state.json); "
                             "run `serm init` or `serm evolve` there first")
    frame, info = current_batch(ws, policy, log)
    out = Path(ws.dot) / "drift-preview" / f"r{info['round']:04d}"
    result, record = batch_drift(history.reference_frame(ws), history.round_history(ws), policy, frame,
                                 info["pairs"], out, evidently_workspace=None,
                                 batch_name=f"preview of round {info['round']}", project=project_name(ws))
    return result, record, info


def format_preview(result, record, info, policy) -> str:
    from monitoring.drift import format_verdicts
    from serm.policy_schema import duration

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
