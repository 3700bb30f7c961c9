"""Reading models: status, decision history, the signed champion, versions and live performance."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from refit.core.fallback import Prior
from refit.web import JSONRoute, error_responses
from services.monitor.routes import ModelName, MonitorDep
from services.monitor.views import decision_json

router = APIRouter(route_class=JSONRoute)


@router.get("/v1/models")
async def list_models(monitor: MonitorDep) -> list[dict[str, Any]]:
    """Every configured model with its champion."""
    return [monitor.views.summary(name) for name in monitor.specs.names()]


@router.get("/v1/models/{name}")
async def get_model(name: ModelName, monitor: MonitorDep) -> dict[str, Any]:
    return monitor.views.summary(name)


@router.get("/v1/models/{name}/decisions")
async def decisions(name: ModelName, monitor: MonitorDep,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    """The decision history, newest first, each with every number and reason."""
    return [decision_json(d) for d in monitor.registry.decisions(name, limit)]


RECENT = 10  # other decisions in the champion's answer: enough to name its challengers


@router.get("/v1/models/{name}/champion")
async def champion(name: ModelName, monitor: MonitorDep) -> dict[str, Any]:
    """The decision that made the current champion, its bytes exactly as published, signed with the
    monitor's current key: a replica follows it across a change of key (a local state made before
    `refit up` had a key of its own, or a rotated production key). ``recent``: the model's newest
    other decisions (up to 10, oldest first), signed the same way; a replica that starts learns from
    them which versions challenge the champion (the one it replaced, a rejected candidate newer than
    it), to shadow-score them."""
    serving = monitor.registry.serving(name)
    if serving is None:
        raise HTTPException(404, f"model {name!r} has no champion yet")
    recent = [d for d in monitor.registry.decisions(name, RECENT + 1) if d.sequence != serving.sequence][:RECENT]
    return {"decision": serving.payload.decode(), "signature": monitor.decider.sign(serving.payload),
            "recent": [{"decision": d.payload.decode(), "signature": monitor.decider.sign(d.payload)}
                       for d in reversed(recent)]}


@router.get("/v1/models/{name}/versions")
async def versions(name: ModelName, monitor: MonitorDep) -> list[dict[str, Any]]:
    """Every version, newest first, with lineage and scores."""
    return monitor.views.versions(name)


@router.get("/v1/models/{name}/prior", responses=error_responses(404))
async def prior(name: ModelName, monitor: MonitorDep) -> dict[str, Any]:
    """The class frequencies or the mean of the holdout's labels: what a replica answers with when it
    has no champion to serve and the model's ``serving.fallback`` lists ``prior``."""
    spec = monitor.specs.get(name)
    found = Prior.of(spec.task, monitor.registry.holdout_labels(name, spec.training.holdout_max_rows))
    if found is None:
        raise HTTPException(404, f"model {name!r} has no holdout rows yet")
    return {"model": name, "rows": found.rows, **({"mean": found.mean} if found.mean is not None else
                                                   {"classes": dict(zip(found.classes, found.probabilities))})}


@router.get("/v1/models/{name}/live")
async def live(name: ModelName, monitor: MonitorDep) -> dict[str, Any]:
    """Live performance: predictions joined with later labels, scored per version over a rolling window."""
    return await asyncio.to_thread(monitor.views.live, name)
