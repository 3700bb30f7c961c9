"""inference: serves the champion of each model and hot-swaps on promotion with no failed request."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import httpx
import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from pydantic import ValidationError

from refit import signing, topics
from refit.artifacts import HttpArtifactStore
from refit.core.serving import unready
from refit.errors import BrokerUnavailableError, ConfigError
from refit.events import CandidateRejected, ModelPromoted, ModelRolledBack, PredictionServed
from refit.kafka import ConsumerConfig, Incoming, Publisher, consume
from refit.lifecycle import backoff, pause, retry
from refit.metrics import Metrics
from refit.onnx_model import Prediction
from refit.openapi import exact
from refit.settings import InferenceSettings
from refit.specs import ModelSpecs, load_specs
from refit.web import BodyLimit, background, declare_errors, error_responses, health_routes
from services.inference.predict import PREDICT_BODY, PREDICT_RESPONSES, InferenceApp, Predictions
from services.inference.serving import Champions, Served

log = structlog.get_logger("inference")

# Below the producer's default max request size (1 MiB): a bigger event could never be sent.
MAX_EVENT_BYTES = 1_000_000
PUBLISH_TRIES = 3
# A prediction body may hold up to max_batch_rows rows; beyond this many bytes per row it is
# refused (413) before being read whole into memory.
MAX_BYTES_PER_ROW = 16 * 1024

Record = tuple[str, bytes, bytes, list[tuple[str, bytes]] | None]
Logged = tuple[Served, str, list[Any], Prediction]


class RecordPublisher(Protocol):
    async def publish_many_raw(self, records: Sequence[Record]) -> None: ...


class QueryLog:
    """Predictions on their way to ``refit.predictions``: never in the request's way.

    A request only offers its prediction to a bounded queue (full: dropped and counted);
    :meth:`run` encodes and publishes in batches, retrying a failed batch a few times
    before dropping it, so a slow or absent broker costs predictions nothing.
    
    Over 80 lines: the queue's two sides (offer, never waiting; drain, batch, retry) and its counts.
    """

    def __init__(self, publisher: RecordPublisher, replica_id: str, capacity: int, batch_size: int) -> None:
        self.publisher, self.replica_id, self.batch_size = publisher, replica_id, batch_size
        self.queue: asyncio.Queue[Logged] = asyncio.Queue(capacity)
        self.counts: Counter[str] = Counter()
        self.broker_ok = True

    def offer(self, served: Served, request_id: str, rows: list[Any], predicted: Prediction) -> None:
        try:
            self.queue.put_nowait((served, request_id, rows, predicted))
        except asyncio.QueueFull:
            self.counts["dropped_queue_full"] += 1
        else:
            self.counts["enqueued"] += 1

    def stats(self) -> dict[str, Any]:
        names = ("enqueued", "published", "dropped_queue_full", "dropped_unpublished", "dropped_too_large",
                 "dropped_invalid")
        return {"publishing": True, "queued": self.queue.qsize(), "capacity": self.queue.maxsize,
                **{n: self.counts[n] for n in names}}

    def encode(self, batch: list[Logged]) -> list[Record]:
        records: list[Record] = []
        for served, request_id, rows, predicted in batch:
            try:
                event = PredictionServed(
                    model=served.name, request_id=request_id, version=served.version, digest=served.digest,
                    replica_id=self.replica_id, inputs=rows, classes=served.model.classes, labels=predicted.labels,
                    probabilities=predicted.probabilities.tolist() if predicted.probabilities is not None else None,
                    values=[v if math.isfinite(v) else None for v in predicted.values]
                    if predicted.values is not None else None)
            except ValidationError:  # rows numpy accepted that the event cannot carry (e.g. booleans)
                self.counts["dropped_invalid"] += 1
                continue
            value = event.to_bytes()
            if len(value) > MAX_EVENT_BYTES:
                self.counts["dropped_too_large"] += 1
                continue
            records.append((event.topic, event.key(), value, None))
        return records

    async def _take(self, stop: asyncio.Event) -> list[Logged]:
        """The next batch: waits for a first item (or ``stop``), then takes what is already queued."""
        while True:
            if stop.is_set() and (self.queue.empty() or not self.broker_ok):
                return []
            try:
                first = await asyncio.wait_for(self.queue.get(), timeout=0.5)
                break
            except TimeoutError:
                continue
        batch = [first]
        while len(batch) < self.batch_size and not self.queue.empty():
            batch.append(self.queue.get_nowait())
        return batch

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop``; then flush what is queued if the broker answers, else drop it."""
        while batch := await self._take(stop):
            try:
                records = await asyncio.to_thread(self.encode, batch)
                if records:
                    await self._publish(records, stop)
            except Exception as exc:  # the query log must never take the replica (its task group) down
                self.counts["dropped_unpublished"] += len(batch)
                log.error("predictions dropped", events=len(batch), error=repr(exc))
        self.counts["dropped_unpublished"] += self.queue.qsize()

    async def _publish(self, records: list[Record], stop: asyncio.Event) -> None:
        async def attempt() -> None:
            try:
                await self.publisher.publish_many_raw(records)
            except BrokerUnavailableError:
                self.broker_ok = False
                raise

        try:
            await retry("predictions", attempt, retry_on=(BrokerUnavailableError,), stop=stop, tries=PUBLISH_TRIES,
                        cap=8.0)
        except BrokerUnavailableError:
            self.counts["dropped_unpublished"] += len(records)
        else:
            self.broker_ok = True
            self.counts["published"] += len(records)


def _signed_champion(response: httpx.Response) -> tuple[bytes, str] | None:
    """The champion's signed decision from the monitor's answer; None when there is none yet (404).

    ValueError for any other answer (a monitor still starting, or something that is not one).
    """
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise ValueError(f"HTTP {response.status_code}")
    body = response.json()
    if not isinstance(body, dict) or not isinstance(body.get("decision"), str) or \
            not isinstance(body.get("signature"), str):
        raise ValueError("not a champion's signed decision")
    return body["decision"].encode(), body["signature"]


async def follow_monitor(settings: InferenceSettings, champions: Champions, stop: asyncio.Event) -> None:
    """Load each model's current champion from the monitor (the decision it signed), then keep checking.

    At start-up, retry until every model answered (a 404: no champion yet, the topic will bring
    it). Then ask again every ``reconcile_s``: a decision this replica never read from the topic,
    or a swap it refused (no memory, an artifact fetch that failed), is caught up within that
    time. A decision already followed changes nothing (``should_swap`` compares sequences).
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
                if champion is not None and await champions.apply(*champion, "monitor") and started:
                    log.warning("caught up from the monitor: the decisions topic had not brought it", model=name)
                pending.discard(name)
            if pending:
                wait = next(delays)
            elif settings.reconcile_s == 0:
                return
            else:
                pending, delays, started, wait = set(names), backoff(cap=5.0), True, settings.reconcile_s
            await pause(stop, wait)


def create_app(settings: InferenceSettings, specs: ModelSpecs | None = None) -> FastAPI:
    specs = specs or load_specs(settings.specs_path)
    metrics = Metrics("inference")
    key = settings.decision_signing_key.get_secret_value().encode()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        store = HttpArtifactStore(settings.monitor_url)
        champions = Champions(specs, store, key, settings.session_threads, metrics,
                              reserve_bytes=settings.memory_reserve_mb * 2**20)
        publisher = Publisher(settings, client_id=f"refit-{settings.replica_id}")
        query_log = QueryLog(publisher, settings.replica_id, settings.predictions_queue_size,
                             settings.predictions_batch_size) if settings.publish_predictions else None

        async def follow(items: list[Incoming]) -> dict[int, str]:
            for item in items:
                await champions.apply(item.record.value or b"", item.header(signing.HEADER), "topic")
            return {}

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
                yield {"champions": champions, "query_log": query_log, "background": work}
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
        """Counters of this replica: swaps, refused decisions, and the query log's queue."""
        champions: Champions = request.state.champions
        query_log: QueryLog | None = request.state.query_log
        return {"replica_id": settings.replica_id, "swaps": champions.swaps,
                "swaps_by_source": dict(champions.swaps_by_source), "refused": champions.refused,
                "predictions": query_log.stats() if query_log is not None else {"publishing": False}}

    @app.get("/v1/models")
    async def models(request: Request) -> list[dict[str, Any]]:
        champions: Champions = request.state.champions
        return [{"name": n, "version": s.version, "digest": s.digest} if (s := champions.served.get(n))
                else {"name": n, "version": None, "digest": None} for n in specs.names()]

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
        served = request.state.champions.served.get(name)
        if served is None:
            raise HTTPException(503, f"no champion yet for {name}")
        return {"model": name, "ready": True, "version": served.version, "digest": served.digest}

    health_routes(app, ready)
    declare_errors(app, {"POST /v1/models/{name}/predict": [404, 415, 503]})
    exact(app, specs, settings.max_batch_rows)
    return app
