"""Periodic reports: what happened to each model over the last days, from the durable history."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import orjson

from refit.core.schedule import due
from refit.specs import Schedule
from services.monitor.notify import Notifier
from services.monitor.registry import Registry
from services.monitor.trigger_store import TriggerStore


def model_report(model: str, days: float, now: datetime, registry: Registry, triggers: TriggerStore) -> dict[str, Any]:
    """Retrainings (candidates trained) by trigger kind, decisions, failures and the champion's metric trend since ``now - days``."""
    since = now - timedelta(days=days)
    decisions = [orjson.loads(d.payload) for d in registry.decisions(model, limit=100_000)]
    recent = [d for d in decisions if datetime.fromisoformat(d["occurred_at"]) >= since]
    fired = [f for f in triggers.history(model, limit=100_000) if datetime.fromisoformat(f["occurred_at"]) >= since]
    serving = [d for d in decisions if d["event_type"] in ("ModelPromoted", "ModelRolledBack")]
    before = next((d for d in serving if datetime.fromisoformat(d["occurred_at"]) < since), None)
    current = serving[0] if serving else None
    return {
        "model": model,
        # every training that produced a candidate, whoever asked: the monitor's triggers, a manual
        # request, or the trainer's own sample-count path (which the trigger history never sees)
        "retrainings": dict(Counter(v.candidate.trigger for v in registry.versions(model)
                                    if datetime.fromisoformat(v.created_at) >= since)),
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


class Reporter:
    """Sends the periodic report to the webhooks when its schedule comes due (missed runs: once)."""

    def __init__(self, models: list[str], days: float, cron: dict[str, Any], registry: Registry,
                 triggers: TriggerStore, notifier: Notifier) -> None:
        self.models, self.days, self.registry, self.triggers, self.notifier = models, days, registry, triggers, notifier
        self.schedule = Schedule(name="report", cron=cron, timezone="UTC")

    def send_if_due(self, now: datetime) -> None:
        if not self.notifier.urls:
            return
        last = self.triggers.get("report_last_run")
        if last is None:
            self.triggers.put("report_last_run", now.isoformat())
            return
        if due(self.schedule, datetime.fromisoformat(last), now) is not None:
            self.notifier.notify("report", None, report(self.models, self.days, now, self.registry, self.triggers))
            self.triggers.put("report_last_run", now.isoformat())
