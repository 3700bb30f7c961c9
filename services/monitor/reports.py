"""Periodic reports: what happened to each model over the last days, from the durable history."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import orjson

from services.monitor.registry import Registry
from services.monitor.trigger_store import TriggerStore


def model_report(model: str, days: float, now: datetime, registry: Registry, triggers: TriggerStore) -> dict[str, Any]:
    """Retrainings by trigger kind, decisions, failures and the champion's metric trend since ``now - days``."""
    since = now - timedelta(days=days)
    decisions = [orjson.loads(d.payload) for d in registry.decisions(model, limit=100_000)]
    recent = [d for d in decisions if datetime.fromisoformat(d["occurred_at"]) >= since]
    fired = [f for f in triggers.history(model, limit=100_000) if datetime.fromisoformat(f["occurred_at"]) >= since]
    serving = [d for d in decisions if d["event_type"] in ("ModelPromoted", "ModelRolledBack")]
    before = next((d for d in serving if datetime.fromisoformat(d["occurred_at"]) < since), None)
    current = serving[0] if serving else None
    return {
        "model": model,
        "retrainings": dict(Counter(f["kind"] for f in fired)),
        "decisions": dict(Counter(d["event_type"] for d in recent)),
        "failures": [{"at": f["occurred_at"], "kind": f["kind"], "outcome": f["outcome"]} for f in fired
                     if (f["outcome"] or "").startswith("given up")],
        "promotions": [{"version": d["version"], "at": d["occurred_at"], "scores": d["candidate_scores"]}
                       for d in reversed(recent) if d["event_type"] == "ModelPromoted"],
        "trend": {
            "start": None if before is None else {"version": before["version"], "scores": before["candidate_scores"]},
            "end": None if current is None else {"version": current["version"], "scores": current["candidate_scores"]},
        },
    }


def report(models: list[str], days: float, now: datetime, registry: Registry, triggers: TriggerStore) -> dict[str, Any]:
    return {"days": days, "from": (now - timedelta(days=days)).isoformat(), "to": now.isoformat(),
            "models": [model_report(m, days, now, registry, triggers) for m in models]}
