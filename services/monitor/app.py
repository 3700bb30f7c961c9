"""monitor: the judge and the control plane (status, history, triggers, artifacts)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from refit import topics
from refit.artifacts import LocalArtifactStore, check_digest
from refit.errors import ArtifactError, UnknownModelError
from refit.events import CandidateTrained, PredictionServed, SampleIngested
from refit.kafka import ConsumerConfig, Publisher, consume
from refit.metrics import Metrics
from refit.settings import MonitorSettings
from refit.specs import ModelSpecs, TriggersSpec, load_specs
from refit.web import BodyLimit, JSONRoute, add_error_handlers, answers, declare_errors, require_token
from services.monitor.feedback import FeedbackStore
from services.monitor.registry import Registry
from services.monitor.reports import report
from services.monitor.service import Monitor, RollbackError, decision_json
from services.monitor.trigger_store import TriggerStore

DASHBOARD = Path(__file__).parent / "static" / "index.html"
# Every body the monitor takes (a reason, a rollback target, a trigger configuration) is small;
# without a limit any client could make it hold an arbitrarily large body in memory.
MAX_BODY_BYTES = 1024 * 1024


class RetrainIn(BaseModel):
    reason: str = Field("manual request", min_length=1, max_length=500)


class RollbackIn(BaseModel):
    to_version: int | None = Field(None, ge=1, description="default: the champion before the current one")
    reason: str = Field("manual rollback", min_length=1, max_length=500)


def get_monitor(request: Request) -> Monitor:
    return request.state.monitor  # type: ignore[no-any-return]


MonitorDep = Annotated[Monitor, Depends(get_monitor)]


@answers(404)
def known_model(name: str, monitor: MonitorDep) -> str:
    try:
        monitor.specs.get(name)
    except UnknownModelError as exc:
        raise HTTPException(404, str(exc)) from None
    return name


ModelName = Annotated[str, Depends(known_model)]

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


# What each operation's own code answers besides 422; 400, 401, 404 and 413 come from the body,
# the token and the model-name dependency (refit.web.declare_errors). 503: a publish the broker
# did not acknowledge; 502/503: the trainer, which owns the dataset, failed or is not configured.
ROUTE_ERRORS = {
    "POST /v1/models/{name}/retrain": [503],
    "POST /v1/models/{name}/rollback": [409, 503],
    "GET /v1/models/{name}/champion": [404],
    "GET /v1/models/{name}/dataset": [502, 503],
    "GET /v1/artifacts/{digest}": [400, 404],
    "GET /readyz": [503],
}


def create_app(settings: MonitorSettings, specs: ModelSpecs | None = None) -> FastAPI:
    specs = specs or load_specs(settings.specs_path)
    metrics = Metrics("monitor")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        registry = Registry(settings.state_dir / "monitor.sqlite")
        feedback = FeedbackStore(settings.state_dir / "feedback.sqlite", {s.name: s.task for s in specs.models},
                                 settings.feedback_max_rows)
        publisher = Publisher(settings, client_id="refit-monitor")
        trigger_store = TriggerStore(settings.state_dir / "triggers.sqlite")
        monitor = Monitor(settings, specs, registry, LocalArtifactStore(settings.artifact_dir), publisher, feedback,
                          trigger_store, metrics)
        stop = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(consume(
                    settings, ConsumerConfig(
                        name="monitor", subscribe=[topics.SAMPLES, topics.CANDIDATES, topics.PREDICTIONS],
                        group_id="refit-monitor", expected=(SampleIngested, CandidateTrained, PredictionServed)),
                    handler=monitor.handle, publisher=publisher, stop=stop, metrics=metrics))
                tasks.create_task(monitor.run(stop))
                tasks.create_task(monitor.run_triggers(stop))
                tasks.create_task(monitor.notifier.run(stop))
                yield {"monitor": monitor}
                stop.set()
                monitor.wake.set()
        finally:
            await publisher.close()
            registry.close()
            feedback.close()
            trigger_store.close()

    app = FastAPI(title="refit monitor", version="1", lifespan=lifespan)
    app.router.route_class = JSONRoute  # a lone surrogate in a body is a 422, not a 500 (refit.web)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    metrics.mount(app)
    add_error_handlers(app)
    authorized = Depends(require_token(settings.api_token.get_secret_value()))

    @app.get("/v1/models")
    async def list_models(monitor: MonitorDep) -> list[dict[str, Any]]:
        """Every configured model with its champion."""
        return [monitor.summary(name) for name in specs.names()]

    @app.get("/v1/models/{name}")
    async def get_model(name: ModelName, monitor: MonitorDep) -> dict[str, Any]:
        return monitor.summary(name)

    @app.get("/v1/models/{name}/decisions")
    async def decisions(name: ModelName, monitor: MonitorDep,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        """The decision history, newest first, each with every number and reason."""
        return [decision_json(d) for d in monitor.registry.decisions(name, limit)]

    @app.get("/v1/models/{name}/champion")
    async def champion(name: ModelName, monitor: MonitorDep) -> dict[str, str]:
        """The signed decision that made the current champion, exactly as published."""
        serving = monitor.registry.serving(name)
        if serving is None:
            raise HTTPException(404, f"model {name!r} has no champion yet")
        return {"decision": serving.payload.decode(), "signature": serving.signature}

    @app.post("/v1/models/{name}/retrain", status_code=202, dependencies=[authorized])
    async def retrain(name: ModelName, body: RetrainIn, monitor: MonitorDep) -> dict[str, str]:
        """Ask the trainer for a new candidate now."""
        event = await monitor.request_retrain(name, body.reason, requested_by="api")
        return {"request_id": str(event.event_id), "model": name}

    @app.post("/v1/models/{name}/rollback", dependencies=[authorized])
    async def rollback(name: ModelName, body: RollbackIn, monitor: MonitorDep) -> dict[str, Any]:
        """Put the previous champion (or a named earlier champion) back; inference follows the decision."""
        try:
            event = await monitor.rollback(name, body.to_version, body.reason, requested_by="api")
        except RollbackError as exc:
            raise HTTPException(409, str(exc)) from None
        return event.model_dump(mode="json")

    @app.get("/v1/models/{name}/versions")
    async def versions(name: ModelName, monitor: MonitorDep) -> list[dict[str, Any]]:
        """Every version, newest first, with lineage and scores."""
        return monitor.versions(name)

    @app.get("/v1/models/{name}/live")
    async def live(name: ModelName, monitor: MonitorDep) -> dict[str, Any]:
        """Live performance: predictions joined with later labels, scored per version over a rolling window."""
        return await asyncio.to_thread(monitor.live, name)

    @app.get("/v1/models/{name}/triggers")
    async def triggers(name: ModelName, monitor: MonitorDep) -> dict[str, Any]:
        """Triggers that fired (with evidence), those held back and why, live performance, drift, schedules."""
        return monitor.triggers.describe(name)

    @app.get("/v1/models/{name}/config")
    async def get_config(name: ModelName, monitor: MonitorDep) -> dict[str, Any]:
        """The model's effective trigger configuration and where it comes from (spec or override)."""
        config, source = monitor.triggers.config(name)
        return {"model": name, "source": source, "triggers": config.model_dump(mode="json")}

    @app.put("/v1/models/{name}/config", dependencies=[authorized])
    async def put_config(name: ModelName, body: TriggersSpec, monitor: MonitorDep) -> dict[str, Any]:
        """Replace the model's trigger configuration (validated; persisted; overrides the spec file)."""
        monitor.triggers.set_config(name, computable(body))
        return {"model": name, "source": "override", "triggers": body.model_dump(mode="json")}

    @app.get("/v1/scheduler")
    async def scheduler(monitor: MonitorDep) -> dict[str, Any]:
        """Whether automatic retraining runs, and every schedule with its next run time."""
        jobs = [job for name in specs.names() for job in monitor.triggers.schedules(name)]
        return {"running": monitor.triggers.running, "jobs": jobs}

    @app.post("/v1/scheduler/start", dependencies=[authorized])
    async def scheduler_start(monitor: MonitorDep) -> dict[str, Any]:
        """Resume automatic retraining (schedules and every automatic trigger)."""
        monitor.triggers.set_running(True)
        return {"running": True}

    @app.post("/v1/scheduler/stop", dependencies=[authorized])
    async def scheduler_stop(monitor: MonitorDep) -> dict[str, Any]:
        """Pause automatic retraining; manual requests still work."""
        monitor.triggers.set_running(False)
        return {"running": False}

    @app.get("/v1/reports")
    async def reports(monitor: MonitorDep, days: Annotated[float, Query(gt=0, le=366)] = 7) -> dict[str, Any]:
        """Per model over the last ``days``: retrainings by trigger, decisions, failures, metric trend."""
        return report(specs.names(), days, datetime.now(UTC), monitor.registry, monitor.triggers.store)

    @app.get("/v1/models/{name}/dataset")
    async def dataset(name: ModelName, format: Annotated[Literal["jsonl", "csv"], Query()] = "jsonl"
                      ) -> StreamingResponse:
        """The model's training dataset, streamed from the trainer (which owns it)."""
        trainer = settings.peer_urls.get("trainer")
        if trainer is None:
            raise HTTPException(503, "no trainer URL configured (REFIT_MONITOR_PEER_URLS)")
        client = httpx.AsyncClient(timeout=httpx.Timeout(30, read=300))
        try:
            upstream = await client.send(client.build_request(
                "GET", f"{trainer.rstrip('/')}/v1/models/{name}/dataset", params={"format": format}), stream=True)
        except httpx.HTTPError as exc:
            await client.aclose()
            raise HTTPException(502, f"trainer unreachable: {exc!r}") from None
        if upstream.status_code != 200:
            await upstream.aclose()
            await client.aclose()
            raise HTTPException(502, f"trainer answered {upstream.status_code}")

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()
                await client.aclose()

        return StreamingResponse(body(), media_type=upstream.headers.get("content-type"),
                                 headers={"content-disposition": upstream.headers.get("content-disposition", "")})

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        """Each configured peer service's /healthz, as the dashboard shows it."""
        async def probe(url: str) -> dict[str, Any]:
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    response = await client.get(f"{url.rstrip('/')}/healthz")
                return {"ok": response.status_code == 200, "detail": f"HTTP {response.status_code}"}
            except httpx.HTTPError as exc:
                return {"ok": False, "detail": repr(exc)}
        names = list(settings.peer_urls)
        results = await asyncio.gather(*(probe(settings.peer_urls[n]) for n in names))
        return {"services": {"monitor": {"ok": True, "detail": "this service"}, **dict(zip(names, results))}}

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(DASHBOARD, media_type="text/html")

    @app.get("/v1/artifacts/{digest}")
    async def artifact(digest: str, monitor: MonitorDep) -> Response:
        """The ONNX bytes of an artifact, by SHA-256 digest."""
        try:
            check_digest(digest)
        except ArtifactError as exc:
            raise HTTPException(400, str(exc)) from None
        try:
            data = await asyncio.to_thread(monitor.artifacts.get, digest)
        except ArtifactError as exc:
            raise HTTPException(404, str(exc)) from None
        return Response(data, media_type="application/onnx", headers={"ETag": f'"{digest}"'})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(monitor: MonitorDep) -> dict[str, str]:
        if not await monitor.publisher.ready():
            raise HTTPException(503, "broker unreachable")
        return {"status": "ready"}

    declare_errors(app, ROUTE_ERRORS)
    return app
