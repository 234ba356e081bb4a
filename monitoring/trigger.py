"""The evolution trigger: whether a round runs (`decide_trigger`).

`force` runs the round; else too few new pairs stop it; else the drift detectors decide
(`mode: any | all`); a round the detectors want still waits while the last evolution round is
within `cooldown`, or while `max_rounds_per_period` evolution rounds already finished within
`period` (an evolution round = one that ran the pipeline; `serm.history.round_history` lists
the committed rounds).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from serm.policy_schema import duration
from serm.history import round_history  # noqa: F401 (re-exported: the trigger's input)

if TYPE_CHECKING:
    from monitoring.drift_report import DriftResult


def _when(iso: str) -> datetime:
    t = datetime.fromisoformat(iso)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


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
