"""monitor: the judge and the control plane (status, history, triggers, artifacts, dashboard)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from refit import topics
from refit.events import CandidateTrained, PredictionServed, SampleIngested, ShadowScored, TrainingFailed
from refit.kafka import ConsumerConfig, Publisher, consume
from refit.metrics import Metrics
from refit.openapi import exact
from refit.settings import MonitorSettings
from refit.specs import ModelSpecs, load_specs
from refit.web import BodyLimit, JSONRoute, add_error_handlers, background, declare_errors, health_routes
from services.monitor.parts import open_monitor
from services.monitor.routes import control, data, models, system

# Every body the monitor takes (a reason, a rollback target, a trigger configuration) is small;
# without a limit any client could make it hold an arbitrarily large body in memory.
MAX_BODY_BYTES = 1024 * 1024

# What each operation's own code answers besides 422; 400, 401, 404 and 413 come from the body,
# the token and the model-name dependency (refit.web.declare_errors). 503: a publish the broker
# did not acknowledge; 502/503: the trainer, which owns the dataset, failed or is not configured.
ROUTE_ERRORS = {
    "POST /v1/models/{name}/retrain": [503],
    "POST /v1/models/{name}/rollback": [409, 503],
    "POST /v1/models/{name}/quarantine": [503],
    "POST /v1/scheduler/start": [503],
    "POST /v1/scheduler/stop": [503],
    "GET /v1/models/{name}/champion": [404],
    "GET /v1/models/{name}/dataset": [502, 503],
    "GET /v1/artifacts/{digest}": [400, 404],
}


def create_app(settings: MonitorSettings, specs: ModelSpecs | None = None) -> FastAPI:
    specs = specs or load_specs(settings.specs_path)
    metrics = Metrics("monitor")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        publisher = Publisher(settings, client_id="refit-monitor")
        try:
            with open_monitor(settings, specs, publisher, metrics) as monitor:
                async with background(app, "monitor") as work:
                    work.start("consumer", consume(
                        settings, ConsumerConfig(
                            name="monitor", subscribe=[topics.SAMPLES, topics.CANDIDATES, topics.PREDICTIONS],
                            group_id="refit-monitor", expected=(SampleIngested, CandidateTrained, TrainingFailed,
                                                               PredictionServed, ShadowScored)),
                        handler=monitor.intake.handle, publisher=publisher, stop=work.stop, metrics=metrics))
                    work.start("decider", monitor.decider.run(work.stop))
                    work.start("triggers", monitor.periodic(work.stop))
                    work.start("webhooks", monitor.notifier.run(work.stop))
                    if monitor.mlflow is not None:
                        work.start("mlflow", monitor.mlflow.run(work.stop))
                    yield {"monitor": monitor, "background": work}
        finally:
            await publisher.close()

    async def ready(request: Request) -> str | None:
        return None if await request.state.monitor.publisher.ready() else "broker unreachable"

    app = FastAPI(title="refit monitor", version="1", lifespan=lifespan)
    app.router.route_class = JSONRoute  # a lone surrogate in a body is a 422, not a 500 (refit.web)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    metrics.mount(app)
    add_error_handlers(app)
    for router in (models.router, control.router(settings), data.router(settings), system.router(settings)):
        app.include_router(router)
    health_routes(app, ready)
    declare_errors(app, ROUTE_ERRORS)
    exact(app, specs)
    return app
