"""Changing what the monitor does: retrain, rollback, quarantine, configuration at run time and the scheduler.

Every write needs the control token; reads of the configuration are open. Configuration at run time
is ``services/monitor/runconfig.py``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field, ValidationError

from refit.events import SamplesQuarantined
from refit.settings import MonitorSettings
from refit.specs import RUNTIME_SECTIONS, SafeguardSpec, TrainingSpec, TriggersSpec
from refit.web import JSONRoute, require_token
from services.monitor.decider import RollbackError
from services.monitor.parts import Monitor
from services.monitor.routes import ModelName, MonitorDep


class RetrainIn(BaseModel):
    reason: str = Field("manual request", min_length=1, max_length=500)


class RollbackIn(BaseModel):
    to_version: int | None = Field(None, ge=1, description="default: the champion before the current one")
    reason: str = Field("manual rollback", min_length=1, max_length=500)


class QuarantineIn(BaseModel):
    sample_ids: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1, max_length=1000)
    reason: str = Field(min_length=1, max_length=500)


log = structlog.get_logger("monitor.control")
_MAX_INT = 2**63 - 1  # the bound of SQLite integers and of C sizes (deque lengths) counts end up in


def computable(config: TriggersSpec) -> TriggersSpec:
    """Refuse (422) what validates but the trigger loop cannot compute with: non-finite numbers
    (JSON bodies may carry ``Infinity``), durations beyond ``timedelta``, counts beyond 64 bits.
    Stored, such a configuration made every later evaluation of the model's triggers raise."""
    errors = []
    for field, value in config.model_dump().items():
        if isinstance(value, float) and not math.isfinite(value):
            errors.append((field, "must be a finite number"))
        elif isinstance(value, int) and abs(value) > _MAX_INT:
            errors.append((field, f"must be at most {_MAX_INT}"))
    minute, day = timedelta(minutes=1), timedelta(days=1)
    durations = [("cooldown_minutes", minute, config.cooldown_minutes),
                 # a first retry waits the timeout plus the backoff
                 ("timeout_minutes", minute, config.timeout_minutes + config.backoff_minutes),
                 ("max_age_days", day, config.max_age_days), ("adaptive_min_days", day, config.adaptive_min_days),
                 ("adaptive_max_days", day, config.adaptive_max_days)]
    for field, unit, value in durations:
        try:
            if value is not None and math.isfinite(value):
                _ = unit * value  # raises OverflowError beyond timedelta.max
        except OverflowError:
            errors.append((field, f"must be at most {timedelta.max.days} days"
                                  + (" with backoff_minutes" if field == "timeout_minutes" else "")))
    if errors:
        raise HTTPException(422, [{"loc": ["body", field], "msg": msg, "type": "value_error"} for field, msg in errors])
    return config


def router(settings: MonitorSettings) -> APIRouter:
    authorized = Depends(require_token(settings.api_token.get_secret_value()))
    routes = APIRouter(route_class=JSONRoute)

    @routes.post("/v1/models/{name}/retrain", status_code=202, dependencies=[authorized])
    async def retrain(name: ModelName, body: RetrainIn, monitor: MonitorDep) -> dict[str, str]:
        """Ask the trainer for a new candidate now."""
        event = await monitor.triggers.manual(name, body.reason, requested_by="api")
        return {"request_id": str(event.event_id), "model": name}

    @routes.post("/v1/models/{name}/rollback", dependencies=[authorized])
    async def rollback(name: ModelName, body: RollbackIn, monitor: MonitorDep) -> dict[str, Any]:
        """Put the previous champion (or a named earlier champion) back; inference follows the decision."""
        try:
            event = await monitor.decider.rollback(name, body.to_version, body.reason, requested_by="api")
        except RollbackError as exc:
            raise HTTPException(409, str(exc)) from None
        return event.model_dump(mode="json")

    @routes.post("/v1/models/{name}/quarantine", dependencies=[authorized])
    async def quarantine(name: ModelName, body: QuarantineIn, monitor: MonitorDep) -> dict[str, Any]:
        """Take samples out of the holdout and, through SamplesQuarantined, out of the trainer's dataset,
        for good: a redelivered copy is not stored again. Published before recorded: a 503 changed nothing."""
        ids = sorted(set(body.sample_ids))
        event = SamplesQuarantined(model=name, sample_ids=ids, reason=body.reason, requested_by="api")
        await monitor.publisher.publish(event)
        removed = await asyncio.to_thread(monitor.registry.quarantine, name, ids, body.reason)
        log.info("samples_quarantined", model=name, samples=len(ids), removed_from_holdout=removed,
                 reason=body.reason, event_id=str(event.event_id))
        return {"model": name, "event_id": str(event.event_id), "quarantined": len(ids),
                "removed_from_holdout": removed}

    @routes.get("/v1/models/{name}/triggers")
    async def triggers(name: ModelName, monitor: MonitorDep) -> dict[str, Any]:
        """Triggers that fired (with evidence), those held back and why, live performance, drift, schedules."""
        return monitor.triggers.describe(name)

    @routes.get("/v1/models/{name}/config")
    async def get_config(name: ModelName, monitor: MonitorDep) -> dict[str, Any]:
        """The model's effective triggers, safeguard and training sections, its configuration version
        (0: the spec file as is), which sections an operator set over the spec file, and where the
        triggers come from (``source``: spec or override)."""
        return monitor.triggers.runconfig.describe(name)

    async def configure(monitor: Monitor, name: str, section: str, value: dict[str, Any] | None) -> dict[str, Any]:
        """Set (or, with None, reset) one section; 422 naming the problem when the whole spec is not valid."""
        try:
            await monitor.triggers.runconfig.set(name, section, value, requested_by="api")
        except ValidationError as exc:
            raise HTTPException(422, [{"loc": ["body", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]}
                                      for e in exc.errors(include_url=False, include_context=False)]) from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return monitor.triggers.runconfig.describe(name)

    @routes.put("/v1/models/{name}/config", dependencies=[authorized])
    async def put_config(name: ModelName, body: TriggersSpec, monitor: MonitorDep) -> dict[str, Any]:
        """Replace the model's trigger configuration (as ``PUT …/config/triggers``)."""
        return await configure(monitor, name, "triggers", computable(body).model_dump(mode="json"))

    @routes.put("/v1/models/{name}/config/triggers", dependencies=[authorized])
    async def put_triggers(name: ModelName, body: TriggersSpec, monitor: MonitorDep) -> dict[str, Any]:
        """Replace the model's triggers section (validated; persisted; overrides the spec file's)."""
        return await configure(monitor, name, "triggers", computable(body).model_dump(mode="json"))

    @routes.put("/v1/models/{name}/config/safeguard", dependencies=[authorized])
    async def put_safeguard(name: ModelName, body: SafeguardSpec, monitor: MonitorDep) -> dict[str, Any]:
        """Replace the model's safeguard section (metrics, gates, tolerances, live evidence): validated as
        one spec with the rest (a metric of the other task is a 422), persisted, used by every decision
        from now on (each names its ``config_version``)."""
        return await configure(monitor, name, "safeguard", body.model_dump(mode="json", by_alias=True))

    @routes.put("/v1/models/{name}/config/training", dependencies=[authorized])
    async def put_training(name: ModelName, body: TrainingSpec, monitor: MonitorDep) -> dict[str, Any]:
        """Replace the model's training section (window, holdout, thresholds): validated, persisted, told
        to the trainer (ModelConfigured), used by every training from now on (each candidate names its
        ``config_version``)."""
        return await configure(monitor, name, "training", body.model_dump(mode="json"))

    def resetting(section: str) -> Callable[..., Awaitable[dict[str, Any]]]:
        async def reset(name: ModelName, monitor: MonitorDep) -> dict[str, Any]:
            return await configure(monitor, name, section, None)
        return reset

    for section in RUNTIME_SECTIONS:
        routes.delete(f"/v1/models/{{name}}/config/{section}", dependencies=[authorized], name=f"reset_{section}",
                      description=f"Put the {section} section back to the spec file's (a new configuration "
                                  "version).")(resetting(section))

    @routes.get("/v1/scheduler")
    async def scheduler(monitor: MonitorDep) -> dict[str, Any]:
        """Whether automatic retraining runs, and every schedule with its next run time."""
        jobs = [job for name in monitor.specs.names() for job in monitor.triggers.schedules(name)]
        return {"running": monitor.triggers.running, "jobs": jobs}

    @routes.post("/v1/scheduler/start", dependencies=[authorized])
    async def scheduler_start(monitor: MonitorDep) -> dict[str, Any]:
        """Resume automatic retraining (schedules and every automatic trigger)."""
        await monitor.triggers.set_running(True, requested_by="api")
        return {"running": True}

    @routes.post("/v1/scheduler/stop", dependencies=[authorized])
    async def scheduler_stop(monitor: MonitorDep) -> dict[str, Any]:
        """Pause automatic retraining; manual requests still work."""
        await monitor.triggers.set_running(False, requested_by="api")
        return {"running": False}

    return routes
