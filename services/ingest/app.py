"""ingest: validates labeled samples and publishes them; 202 only after the broker acknowledged."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from refit.core.schema import validate_features, validate_label, validate_text
from refit.errors import SchemaError, UnknownModelError
from refit.events import SampleIngested
from refit.kafka import Publisher
from refit.specs import ModelSpec, ModelSpecs, load_specs
from refit.settings import IngestSettings
from refit.web import BodyLimit, add_error_handlers, require_token

# Sample ids derived from an idempotency key are stable: posting the same key twice
# yields the same id, which every consumer stores only once.
_ID_NAMESPACE = uuid.UUID("5b8f3c0e-6a0f-4d57-9a53-4a0e2f1f0b8e")


class SampleRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    features: dict[str, Any] | list[Any] | None = None
    text: str | None = None
    label: Any
    confidence: float | None = Field(None, ge=0, le=1)
    source: str | None = Field(None, max_length=64)
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    event_time: datetime | None = None
    request_id: str | None = Field(None, min_length=1, max_length=200,
                                   description="the request id of an earlier prediction this label answers")


class SampleIn(SampleRow):
    model: str


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    samples: list[SampleRow] = Field(min_length=1)


class Accepted(BaseModel):
    accepted: int
    sample_ids: list[str]


def _sample_id(model: str, key: str | None) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"{model}\x00{key}") if key else uuid.uuid4())


def to_event(spec: ModelSpec, row: SampleRow) -> SampleIngested:
    """Validate one row against the spec's input schema; :class:`SchemaError` names the field."""
    if spec.input.kind == "text":
        if row.features is not None:
            raise SchemaError("features: this model takes text")
        features, text = None, validate_text(spec, row.text)
    else:
        if row.text is not None:
            raise SchemaError("text: this model takes numeric features")
        features, text = validate_features(spec, row.features), None
    return SampleIngested(
        model=spec.name, sample_id=_sample_id(spec.name, row.idempotency_key), features=features, text=text,
        label=validate_label(spec, row.label), confidence=row.confidence, source=row.source,
        idempotency_key=row.idempotency_key, event_time=row.event_time, request_id=row.request_id,
    )


def _unprocessable(errors: list[dict[str, Any]]) -> HTTPException:
    return HTTPException(422, detail=errors)


def _error(exc: Exception, row: int | None, field_prefix: tuple[str | int, ...] = ("body",)) -> dict[str, Any]:
    message = str(exc)
    field, _, msg = message.partition(": ")
    loc = [*field_prefix, *([row] if row is not None else []), *field.split(".")]
    return {"loc": loc, "msg": msg or message, "type": "value_error"}


def get_publisher(request: Request) -> Publisher:
    return request.state.publisher  # type: ignore[no-any-return]


PublisherDep = Annotated[Publisher, Depends(get_publisher)]


def create_app(settings: IngestSettings, specs: ModelSpecs | None = None) -> FastAPI:
    specs = specs or load_specs(settings.specs_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        publisher = Publisher(settings, client_id="refit-ingest", timeout_s=settings.publish_timeout_s)
        try:
            yield {"publisher": publisher}
        finally:
            await publisher.close()

    producers = [Depends(require_token(*(k.get_secret_value() for k in settings.api_keys)))] \
        if settings.api_keys else []
    app = FastAPI(title="refit ingest", version="1", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    add_error_handlers(app)

    def spec_for(name: str) -> ModelSpec:
        try:
            return specs.get(name)
        except UnknownModelError as exc:
            raise _unprocessable([{"loc": ["body", "model"], "msg": str(exc), "type": "value_error"}]) from None

    @app.post("/v1/samples", status_code=202, response_model=Accepted, dependencies=producers)
    async def post_sample(sample: SampleIn, publisher: PublisherDep) -> Accepted:
        """Publish one labeled sample; answers after the broker acknowledged it."""
        spec = spec_for(sample.model)
        try:
            event = to_event(spec, sample)
        except SchemaError as exc:
            raise _unprocessable([_error(exc, None)]) from None
        await publisher.publish(event)
        return Accepted(accepted=1, sample_ids=[event.sample_id])

    @app.post("/v1/samples:batch", status_code=202, response_model=Accepted, dependencies=producers)
    async def post_batch(batch: BatchIn, publisher: PublisherDep) -> Accepted:
        """Publish many samples, all or nothing: any invalid row rejects the request with every row's error."""
        if len(batch.samples) > settings.max_batch_rows:
            raise _unprocessable([{"loc": ["body", "samples"], "type": "value_error",
                                   "msg": f"at most {settings.max_batch_rows} samples per batch"}])
        spec = spec_for(batch.model)
        events, errors = [], []
        for i, row in enumerate(batch.samples):
            try:
                events.append(to_event(spec, row))
            except SchemaError as exc:
                errors.append(_error(exc, i, ("body", "samples")))
        if errors:
            raise _unprocessable(errors)
        await publisher.publish_many(events)
        return Accepted(accepted=len(events), sample_ids=[e.sample_id for e in events])

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(publisher: PublisherDep) -> dict[str, str]:
        if not await publisher.ready():
            raise HTTPException(503, "broker unreachable")
        return {"status": "ready"}

    return app
