"""trainer: keeps the training dataset, fits candidates when asked or when enough new data arrived."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
import structlog
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse

import refit
from refit import topics, tracing
from refit.artifacts import LocalArtifactStore
from refit.core.schema import validate_sample
from refit.core.split import is_holdout
from refit.errors import BrokerUnavailableError, SchemaError, UnknownModelError
from refit.events import (ArtifactRef, CandidateTrained, ConceptChanged, InputSignature, ModelConfigured,
                          RetrainingPaused, RetrainingResumed, RetrainRequested, SampleIngested, SamplesQuarantined,
                          TrainingFailed, TrainingStats)
from refit.kafka import ConsumerConfig, Incoming, Publisher, consume
from refit.lifecycle import pause, retry
from refit.metrics import Metrics, retired
from refit.openapi import DATASET_RESPONSES, exact
from refit.settings import TrainerSettings
from refit.specs import ModelSpec, ModelSpecs, load_specs
from refit.web import background, declare_errors, health_routes, reads
from services.trainer.fitter import Fitter, FitTimeoutError
from services.trainer.ownership import Ownership
from services.trainer.store import EXPORT_COLUMNS, DatasetStore
from services.trainer.training_set import prepare

log = structlog.get_logger("trainer")


class Trainer:
    """Consumes samples and retrain requests; runs at most one training per model at a time.

    Over 80 lines: :meth:`train` is one training from window to published candidate, step by step
    (read, filter, fit, store, publish, mark), each step a call; split, it would pass the window's
    state between halves.
    """

    def __init__(self, settings: TrainerSettings, specs: ModelSpecs, store: DatasetStore,
                 artifacts: LocalArtifactStore, publisher: Publisher, metrics: Metrics, fitter: Fitter) -> None:
        self.settings, self.specs, self.store, self.metrics = settings, specs, store, metrics
        self.fitter = fitter
        self.artifacts, self.publisher = artifacts, publisher
        self.ownership = Ownership(store, (m.name for m in specs.models))
        self.wake = asyncio.Event()
        self.trainings = 0
        self.consumer_counts: Counter[str] = Counter()
        self.held: dict[str, str] = {}  # per model: a training its own path wanted, and why it waits
        self.traced = tracing.Recent()  # per model: the newest samples' trace contexts, for the next training
        self.files = specs.model_copy(deep=True)  # the spec file's, which run-time configuration is set over
        for name in specs.names():
            self._apply(name, *store.configured(name))

    def configure(self, event: ModelConfigured) -> None:
        """Train by the configuration the monitor set at run time from now on; the latest version wins (a
        redelivery of an older one changes nothing). ValueError (a dead letter) if it does not fit the
        spec file here."""
        self.files.get(event.model).configured(event.sections)
        if self.store.configure(event.model, event.config_version, event.sections):
            self._apply(event.model, event.config_version, event.sections)
            log.info("configuration changed", model=event.model, config_version=event.config_version,
                     sections=sorted(event.sections))

    def _apply(self, model: str, version: int, sections: dict[str, Any]) -> None:
        """Train ``model`` by its configuration at run time (ModelConfigured, from the monitor) from now on."""
        try:
            self.specs.put(self.files.get(model).configured(sections))
        except ValueError as exc:  # a pydantic ValidationError too: the spec file changed under it
            log.error("run-time configuration no longer fits the spec file; the spec file's serves", model=model,
                      config_version=version, error=str(exc))

    async def handle(self, items: list[Incoming]) -> dict[int, str]:
        rejected: dict[int, str] = {}
        training: list[SampleIngested] = []
        holdout: list[SampleIngested] = []
        positions: dict[int, int] = {}
        for i, item in enumerate(items):
            event, record = item.event, item.record
            if record.topic == topics.SAMPLES:
                positions[record.partition] = max(positions.get(record.partition, 0), record.offset + 1)
            try:
                spec = self.specs.get(event.model)
                if isinstance(event, RetrainRequested):
                    self.store.add_request(event, (record.partition, record.offset))
                    continue
                if isinstance(event, (RetrainingPaused, RetrainingResumed)):
                    self.store.set_paused(event.model, isinstance(event, RetrainingPaused), event.occurred_at)
                    continue
                if isinstance(event, ConceptChanged):
                    self.store.set_concept_change(event.model, event.changed_at)
                    continue
                if isinstance(event, ModelConfigured):
                    try:
                        self.configure(event)
                    except ValueError as exc:  # a pydantic ValidationError too
                        rejected[i] = f"configuration {event.config_version} does not fit: {exc}"
                    continue
                if isinstance(event, SamplesQuarantined):  # also keeps out this batch's copies (add_samples)
                    removed = self.store.quarantine(event.model, event.sample_ids)
                    log.info("samples_quarantined", model=event.model, samples=len(event.sample_ids),
                             removed=removed, reason=event.reason, event_id=str(event.event_id))
                    continue
                assert isinstance(event, SampleIngested)
                validate_sample(spec, event)  # as the trainer's spec knows it: else a dead letter
                if tracing.enabled:
                    self.traced.add(event.model, item.header(tracing.HEADER))
            except (UnknownModelError, SchemaError) as exc:
                rejected[i] = str(exc)
                continue
            in_holdout = is_holdout(event.sample_id, spec.training.holdout_fraction, spec.name)
            (holdout if in_holdout else training).append(event)
        for model, new in self.store.add_samples(training, holdout, positions).items():
            self.metrics.samples_stored.labels(model).inc(new)
        self.wake.set()
        return rejected

    def due(self, spec: ModelSpec) -> tuple[str, str | None, datetime | None] | None:
        """Why this model should train now, if it should: (trigger kind, request id, where its window
        starts when a concept change moved it: the latest change, for every training after it)."""
        pending = self.store.pending_request(spec.name)
        if pending is not None:
            return pending[1], pending[0], self.store.window_start(spec.name)
        threshold = spec.training.min_new_samples
        total, new = self.store.counts(spec.name, at_most=max(spec.training.min_samples, threshold or 0))
        if threshold is None or new < threshold or total < spec.training.min_samples:
            return None
        if self.store.paused(spec.name):  # the monitor owns the pause; this path obeys it too
            self.held[spec.name] = f"{new} new rows (threshold {threshold}): automatic retraining is paused"
            return None
        self.held.pop(spec.name, None)
        return "sample_count", None, self.store.window_start(spec.name)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.wake.clear()
            for spec in self.specs.models:
                if not self.ownership.owns(spec.name):
                    continue
                reason = self.due(spec)
                if reason is not None and not stop.is_set():
                    await self.train(spec, *reason, stop=stop)
            await pause(stop, self.settings.poll_interval_s, self.wake)

    async def retain(self, stop: asyncio.Event) -> None:
        """Every ``retention_interval_s``: each model's dataset cut to what its ``retention`` keeps; logged and
        counted (``refit_retention_rows_deleted_total``)."""
        while self.settings.retention_interval_s and not stop.is_set():
            now = datetime.now(UTC)
            for spec in self.specs.models:
                rows, _, days = spec.kept_rows()
                cutoff = now - timedelta(days=days) if days is not None else None
                deleted = await asyncio.to_thread(self.store.retain, spec.name, rows, cutoff,
                                                  spec.retention.keep_decisions)
                retired(self.metrics, spec.name, deleted)
            await pause(stop, self.settings.retention_interval_s)

    async def train(self, spec: ModelSpec, trigger: str, request_id: str | None, since: datetime | None,
                    stop: asyncio.Event) -> None:
        """One training, in a span (when tracing) that is the child of the newest sample's and links
        the others since the last training (refit.tracing)."""
        samples = self.traced.take(spec.name) if tracing.enabled else []
        with tracing.span("train", samples[-1] if samples else None, samples[:-1], model=spec.name,
                          trigger=trigger) as current:
            await self._train(spec, trigger, request_id, since, stop, tracing.headers(current))

    async def _train(self, spec: ModelSpec, trigger: str, request_id: str | None, since: datetime | None,
                     stop: asyncio.Event, headers: list[tuple[str, bytes]]) -> None:
        bound = log.bind(model=spec.name, trigger=trigger, request_id=request_id)
        now = datetime.now(UTC)
        # Reading and filtering a large window takes seconds: off the event loop, like fitting.
        data, window = await asyncio.to_thread(prepare, self.store, spec, now, since)
        filtered, top = window.filters, window.top_seq
        if filtered.kept < spec.training.min_samples or (spec.task == "classification" and window.classes < 2):
            bound.info("not enough data to train", rows=filtered.kept, classes=window.classes,
                       filters=filtered.as_dict())
            reason = (f"insufficient data: {filtered.kept} rows after the filters (need {spec.training.min_samples}),"
                      f" {window.classes} classes")
            await self._failed(spec, trigger, request_id, "insufficient_data", reason, top, now, stop)
            return
        bound.info("training", rows=filtered.kept, filters=filtered.as_dict())
        for name, removed in filtered.as_dict().items():
            if name not in ("seen", "kept") and removed:
                self.metrics.samples_filtered.labels(spec.name, name).inc(removed)
        try:
            fitted = await self.fitter.fit(spec, data)
        except Exception as exc:  # isolated in its worker process: whatever it raised failed this training
            bound.error("training failed", error=str(exc), error_type=type(exc).__name__)
            self.metrics.trainings.labels(spec.name, type(exc).__name__).inc()
            failure = "timeout" if isinstance(exc, FitTimeoutError) else "error"
            await self._failed(spec, trigger, request_id, failure, f"{type(exc).__name__}: {exc}", top, now, stop)
            return
        finally:
            fingerprint = data.fingerprint
            del data  # not held while the candidate is stored and published (that may wait for a broker)
        digest = await asyncio.to_thread(self.artifacts.put, fitted.onnx_bytes)
        assert window.first_at is not None and window.last_at is not None  # at least min_samples rows
        event = CandidateTrained(
            model=spec.name, candidate_id=str(uuid.uuid4()), task=spec.task,
            artifact=ArtifactRef(digest=digest, size_bytes=len(fitted.onnx_bytes), uri=self.artifacts.uri(digest)),
            signature=InputSignature(kind=spec.input.kind, features=list(spec.input.features)),
            classes=fitted.classes,
            training=TrainingStats(
                rows_seen=window.rows_seen, rows_trained=fitted.rows_trained,
                rows_held_back=fitted.rows_held_back, filters=filtered.as_dict(),
                first_sample_at=window.first_at, last_sample_at=window.last_at,
                duration_s=round(fitted.duration_s, 4), estimator=spec.estimator.class_path,
                spec_hash=spec.spec_hash(), code_version=refit.__version__, data_fingerprint=fingerprint,
                config_version=self.store.configured(spec.name)[0]),
            conversion=fitted.conversion, retrain_request_id=request_id, trigger=trigger,
        )
        if not self.ownership.owns(spec.name):  # moved to another trainer mid-run: it answers the request
            bound.info("model moved to another trainer during training; candidate dropped")
            return
        # Until the broker takes it: the candidate is stored and the request is not done until then.
        await retry("candidate", lambda: self.publisher.publish(event, headers), retry_on=(BrokerUnavailableError,),
                    stop=stop)
        self.store.mark_trained(spec.name, top, now)
        self.store.finish_requests(spec.name, f"candidate {event.candidate_id}", now)
        self.trainings += 1
        self.metrics.trainings.labels(spec.name, "success").inc()
        self.metrics.training_duration.labels(spec.name).observe(fitted.duration_s)
        stages = {name: round(s, 3) for name, s in (window.seconds | fitted.seconds).items()}
        bound.info("candidate published", candidate_id=event.candidate_id, digest=digest,
                   seconds=round(fitted.duration_s, 3), stages=stages, iterations=fitted.iterations,
                   conversion_passed=fitted.conversion.passed)

    async def _failed(self, spec: ModelSpec, trigger: str, request_id: str | None, failure: str, reason: str,
                      top: int, started: datetime, stop: asyncio.Event) -> None:
        """A training that ended without a candidate: tell the monitor at once (it ends the request in
        flight and retries with backoff), then mark the rows considered."""
        event = TrainingFailed(model=spec.name, failure=failure, reason=reason, retrain_request_id=request_id,
                               trigger=trigger, duration_s=round((datetime.now(UTC) - started).total_seconds(), 3))
        await retry("training failure", lambda: self.publisher.publish(event), retry_on=(BrokerUnavailableError,),
                    stop=stop)
        self.store.finish_requests(spec.name, f"failed: {reason}", started)
        self.store.mark_trained(spec.name, top, started)


def dataset_jsonl(pages: Iterator[list[tuple[Any, ...]]]) -> Iterator[bytes]:
    for page in pages:
        out = []
        for row in page:
            record = dict(zip(EXPORT_COLUMNS, row, strict=True))
            record["features"] = orjson.Fragment(record["features"]) if record["features"] else None
            out.append(orjson.dumps(record))
        yield b"\n".join(out) + b"\n"


def dataset_csv(spec: ModelSpec, pages: Iterator[list[tuple[Any, ...]]]) -> Iterator[bytes]:
    """One column per feature (or ``text``), then the label and the sample's metadata."""
    inputs = list(spec.input.features) if spec.input.kind == "numeric" else ["text"]
    meta = [c for c in EXPORT_COLUMNS if c not in ("features", "text")]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*inputs, *meta])
    for page in pages:
        for row in page:
            record = dict(zip(EXPORT_COLUMNS, row, strict=True))
            values = ([orjson.loads(record["features"])[f] for f in inputs] if spec.input.kind == "numeric"
                      else [record["text"]])
            writer.writerow([*values, *(record[c] for c in meta)])
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


def create_app(settings: TrainerSettings, specs: ModelSpecs | None = None) -> FastAPI:
    specs = specs or load_specs(settings.specs_path)
    metrics = Metrics("trainer")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        store = DatasetStore(settings.state_dir / "trainer.sqlite")
        publisher = Publisher(settings, client_id="refit-trainer")
        fitter = Fitter()
        # its own copy of the specs, which configuration at run time (ModelConfigured) changes in place
        trainer = Trainer(settings, specs.model_copy(deep=True), store, LocalArtifactStore(settings.artifact_dir),
                          publisher, metrics, fitter)
        try:
            async with background(app, "trainer") as work:
                work.start("consumer", consume(
                    settings, ConsumerConfig(name="trainer", subscribe=[topics.SAMPLES, topics.RETRAIN_REQUESTS],
                                             group_id="refit-trainer", expected=(SampleIngested, RetrainRequested,
                                                                 RetrainingPaused, RetrainingResumed, ConceptChanged,
                                                                 SamplesQuarantined, ModelConfigured),
                                             placement=trainer.ownership),
                    handler=trainer.handle, publisher=publisher, stop=work.stop, counts=trainer.consumer_counts,
                    metrics=metrics))
                work.start("trainings", trainer.run(work.stop))
                work.start("retention", trainer.retain(work.stop))
                yield {"trainer": trainer, "store": store, "background": work}
        finally:
            fitter.close()
            await publisher.close()
            store.close()

    app = FastAPI(title="refit trainer", version="1", lifespan=lifespan)
    metrics.mount(app)
    health_routes(app)

    @app.get("/v1/models/{name}/dataset", response_class=Response, responses=DATASET_RESPONSES,
             dependencies=reads(settings))
    def export(name: str, request: Request,
               format: Annotated[Literal["jsonl", "csv"], Query()] = "jsonl") -> StreamingResponse:
        """Stream every stored training row of a model (holdout rows are never here), oldest first."""
        try:
            spec = specs.get(name)
        except UnknownModelError as exc:
            raise HTTPException(404, str(exc)) from None
        store: DatasetStore = request.state.store
        pages = store.export(name)
        body = dataset_csv(spec, pages) if format == "csv" else dataset_jsonl(pages)
        media = "text/csv" if format == "csv" else "application/x-ndjson"
        return StreamingResponse(body, media_type=media, headers={
            "content-disposition": f'attachment; filename="{name}-dataset.{format}"'})

    @app.get("/v1/stats")
    async def stats(request: Request) -> dict[str, Any]:
        trainer: Trainer = request.state.trainer
        return {**trainer.store.stats(), "trainings": trainer.trainings, "held": trainer.held,
                "consumer": dict(trainer.consumer_counts), "models": trainer.ownership.owned()}

    declare_errors(app, {"GET /v1/models/{name}/dataset": [404]})
    exact(app, specs)
    return app
