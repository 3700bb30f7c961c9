"""inference: serves the champion of each model and hot-swaps on promotion with no failed request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response

from refit import signing, topics, tracing
from refit.artifacts import HttpArtifactStore
from refit.core.fallback import prior_from_json, without_champion
from refit.core.serving import unready
from refit.errors import ConfigError
from refit.events import CandidateRejected, ModelPromoted, ModelRolledBack
from refit.kafka import ConsumerConfig, Incoming, Publisher, consume
from refit.lifecycle import backoff, pause
from refit.metrics import Metrics
from refit.openapi import exact
from refit.settings import InferenceSettings
from refit.specs import ModelSpec, ModelSpecs, load_specs
from refit.web import BodyLimit, background, declare_errors, error_responses, health_routes
from services.inference.predict import PREDICT_BODY, PREDICT_RESPONSES, InferenceApp, Predictions
from services.inference.querylog import QueryLog
from services.inference.serving import MONITOR, Champions
from services.inference import v2 as wire_v2
from services.inference.shadow import Shadow

log = structlog.get_logger("inference")

# A prediction body may hold up to max_batch_rows rows; beyond this many bytes per row it is
# refused (413) before being read whole into memory.
MAX_BYTES_PER_ROW = 16 * 1024

Signed = tuple[bytes, str]


def _signed_champion(response: httpx.Response) -> tuple[Signed, list[Signed]] | None:
    """The champion's signed decision from the monitor's answer, and the model's other recent signed
    decisions (``recent``: none from a monitor that sends none); None when there is no champion yet (404).

    ValueError for any other answer (a monitor still starting, or something that is not one).
    """
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise ValueError(f"HTTP {response.status_code}")
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError("not a champion's signed decision")
    recent = body.get("recent", [])
    if not isinstance(recent, list):
        raise ValueError("recent decisions are not a list")
    return _signed(body), [_signed(item) for item in recent]


def _signed(item: Any) -> Signed:
    if not isinstance(item, dict) or not isinstance(item.get("decision"), str) or \
            not isinstance(item.get("signature"), str):
        raise ValueError("not a signed decision")
    return item["decision"].encode(), item["signature"]


async def follow_monitor(settings: InferenceSettings, champions: Champions, stop: asyncio.Event) -> None:
    """Load each model's current champion from the monitor (the decision it signed), then keep checking.

    At start-up, retry until every model answered (a 404: no champion yet, the topic will bring
    it). Then ask again every ``reconcile_s``: a decision this replica never read from the topic,
    or a swap it refused (no memory, an artifact fetch that failed), is caught up within that
    time. A decision already followed changes nothing. The monitor's signed answer wins over the
    topic: a replica serving a decision the monitor never made (a forgery numbered far ahead, say)
    goes back to the monitor's champion, and decisions from the topic numbered far past that answer
    are refused (``refit.core.serving``). A genuine decision read from the topic between the
    monitor's answer and its arrival is undone until the next check brings it back: a window of
    milliseconds, the price of the monitor always having the last word.
    """
    names = champions.specs.names()
    pending, delays, started = set(names), backoff(cap=5.0), False
    async with httpx.AsyncClient(base_url=settings.monitor_url, timeout=10) as client:
        while not stop.is_set():
            for name in sorted(pending):
                try:
                    champion = _signed_champion(await client.get(f"/v1/models/{name}/champion"))
                except (httpx.HTTPError, ValueError) as exc:
                    log.info("monitor not answering", model=name, error=repr(exc))
                    break
                if champion is not None:
                    for earlier in champion[1]:  # the other recent decisions: the champion's challengers, for the shadow
                        champions.learn(*earlier)
                    if await champions.apply(*champion[0], MONITOR) and started:
                        log.warning("caught up from the monitor: the decisions topic had not brought it", model=name)
                pending.discard(name)
            await _fetch_priors(client, champions)
            if pending:
                wait = next(delays)
            elif settings.reconcile_s == 0:
                return
            else:
                pending, delays, started, wait = set(names), backoff(cap=5.0), True, settings.reconcile_s
            await pause(stop, wait)


def _without_champion(spec: ModelSpec, champions: Champions) -> str | None:
    return without_champion(spec.serving, spec.input.kind == "text", champions.priors.get(spec.name))


async def _fetch_priors(client: httpx.AsyncClient, champions: Champions) -> None:
    """Each model's holdout prior, for the models whose ``serving.fallback`` lists ``prior``."""
    for spec in champions.specs.models:
        if "prior" not in spec.serving.fallback:
            continue
        try:
            response = await client.get(f"/v1/models/{spec.name}/prior")
            if response.status_code == 200:
                champions.priors[spec.name] = prior_from_json(response.json())
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.info("no prior from the monitor", model=spec.name, error=repr(exc))


def create_app(settings: InferenceSettings, specs: ModelSpecs | None = None) -> FastAPI:
    """The replica's app: its lifespan wires the parts (champions, the query log, the shadow, the
    decisions consumer, the monitor check) and its routes read them from the request's state.

    Over 80 lines: the lifespan and the routes share ``settings``, ``specs``, ``metrics`` and the
    key as closures; each route is a few lines, and splitting them out would pass all four around.
    """
    specs = specs or load_specs(settings.specs_path)
    metrics = Metrics("inference")
    key = settings.decision_signing_key.get_secret_value().encode()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        store = HttpArtifactStore(settings.monitor_url, token=settings.read_token.get_secret_value())
        champions = Champions(specs, store, key, settings.session_threads, metrics,
                              reserve_bytes=settings.memory_reserve_mb * 2**20)
        publisher = Publisher(settings, client_id=f"refit-{settings.replica_id}")
        query_log = QueryLog(publisher, settings.replica_id, settings.predictions_queue_size,
                             settings.predictions_batch_size) if settings.publish_predictions else None
        shadow = Shadow(champions, publisher, settings.replica_id, settings.shadow_queue_size,
                        settings.shadow_batch_rows) if settings.shadow_scoring else None
        if shadow is not None:
            champions.followers.append(shadow.follow)

        async def follow(items: list[Incoming]) -> dict[int, str]:
            """Every decision in turn; the ones that cannot be used go to the dead letters with the reason."""
            refused: dict[int, str] = {}
            for i, item in enumerate(items):
                outcome = await champions.apply(item.record.value or b"", item.header(signing.HEADER), "topic",
                                                item.header(tracing.HEADER) if tracing.enabled else None)
                if outcome.refused is not None:
                    refused[i] = outcome.refused
            return refused

        try:
            async with background(app, settings.replica_id) as work:
                work.start("reconcile", follow_monitor(settings, champions, work.stop))
                # No consumer group: every replica reads every decision; old ones are skipped by sequence.
                work.start("decisions", consume(
                    settings, ConsumerConfig(name=settings.replica_id, subscribe=[topics.DECISIONS], group_id=None,
                                             expected=(ModelPromoted, CandidateRejected, ModelRolledBack),
                                             fetch_max_wait_ms=settings.decisions_fetch_wait_ms),
                    handler=follow, publisher=publisher, stop=work.stop))
                if query_log is not None:
                    work.start("query-log", query_log.run(work.stop))
                if shadow is not None:
                    work.start("shadow-loading", shadow.keep_loaded(work.stop))
                    work.start("shadow-scoring", shadow.run(work.stop))
                yield {"champions": champions, "query_log": query_log, "shadow": shadow, "background": work}
        finally:
            await publisher.close()
            store.close()

    # FastAPI's native OpenTelemetry hooks look the providers up on every request; refit exports
    # Prometheus metrics of its own.
    app = InferenceApp(title="refit inference", version="1", lifespan=lifespan,
                       telemetry={"tracing": False, "metrics": False, "logs": False})
    limit = max(1024 * 1024, settings.max_batch_rows * MAX_BYTES_PER_ROW)
    predictions = Predictions(settings, specs, metrics, limit)
    app.predictions = predictions  # answered before FastAPI's layers (services/inference/predict.py)
    app.add_middleware(BodyLimit, limit=limit)
    metrics.mount(app)

    # The OpenAPI declaration of predictions. InferenceApp answers this path before FastAPI
    # (services/inference/predict.py): a breakpoint here never fires in a served replica. Reached
    # (the app mounted inside another), it answers through the same Predictions.answer, and
    # tests/unit/test_predict_path.py holds the two answers equal.
    @app.post("/v1/models/{name}/predict",
              openapi_extra={"requestBody": PREDICT_BODY, "responses": PREDICT_RESPONSES})
    async def predict(name: str, request: Request) -> Response:
        """Predict with the current champion; the response names the version that answered and its request id."""
        status, body, headers = await predictions.answer(name, request.scope, request.receive)
        return Response(body, status, headers={k.decode("latin-1"): v.decode("latin-1") for k, v in headers})

    @app.get("/v1/stats")
    async def stats(request: Request) -> dict[str, Any]:
        """Counters of this replica: swaps, refused decisions, the sequence of the monitor's last
        answer about each champion, the query log's queue and the shadow's."""
        champions: Champions = request.state.champions
        query_log: QueryLog | None = request.state.query_log
        shadow: Shadow | None = request.state.shadow
        return {"replica_id": settings.replica_id, "swaps": champions.swaps,
                "swaps_by_source": dict(champions.swaps_by_source), "refused": champions.refused,
                "monitor_sequences": champions.monitor_sequence,
                "predictions": query_log.stats() if query_log is not None else {"publishing": False},
                "shadow": shadow.stats() if shadow is not None else {"publishing": False}}

    @app.get("/v1/models")
    async def models(request: Request) -> list[dict[str, Any]]:
        champions: Champions = request.state.champions
        return [{"name": n, "version": s.version, "digest": s.digest, "fallback": s.fallback}
                if (s := champions.served.get(n)) else
                {"name": n, "version": None, "digest": None, "fallback": _without_champion(specs.get(n), champions)}
                for n in specs.names()]

    required = settings.required_models
    if unknown := [n for n in required if n not in specs.names()]:
        raise ConfigError(f"REFIT_INFERENCE_REQUIRED_MODELS names models the specs do not have: {unknown}")

    async def ready(request: Request) -> str | None:
        return unready(required, request.state.champions.served, specs.names())

    @app.get("/v1/models/{name}/ready", responses=error_responses(404, 503))
    async def model_ready(name: str, request: Request) -> dict[str, Any]:
        """200 when this replica serves a champion of the model (a per-model readiness probe)."""
        if name not in specs.names():
            raise HTTPException(404, f"unknown model {name!r}")
        champions: Champions = request.state.champions
        served = champions.served.get(name)
        if served is None:
            kind = _without_champion(specs.get(name), champions)
            raise HTTPException(503, f"no champion yet for {name}" +
                                (f"; answering from its fallback: {kind}" if kind else ""))
        return {"model": name, "ready": True, "version": served.version, "digest": served.digest,
                "fallback": served.fallback}

    health_routes(app, ready)
    app.include_router(wire_v2.router(specs, predictions, ready))
    declare_errors(app, {"POST /v1/models/{name}/predict": [404, 415, 503]})
    exact(app, specs, settings.max_batch_rows)
    return app
