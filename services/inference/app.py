"""inference: serves the champion of each model and hot-swaps on promotion with no failed request."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import orjson
import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response

from refit import signing, topics
from refit.artifacts import HttpArtifactStore
from refit.events import CandidateRejected, ModelPromoted, ModelRolledBack
from refit.kafka import Incoming, Publisher, consume
from refit.onnx_model import OnnxModel
from refit.settings import InferenceSettings
from refit.specs import ModelSpecs, load_specs
from services.inference.serving import Champions, Served

log = structlog.get_logger("inference")

PREDICT_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {
        "type": "object",
        "description": "One of: features (one row), instances (rows of named features), "
                       "inputs (rows of numbers in feature order), text, texts.",
        "properties": {
            "features": {"oneOf": [{"type": "object", "additionalProperties": {"type": "number"}},
                                   {"type": "array", "items": {"type": "number"}}]},
            "instances": {"type": "array", "items": {"type": "object"}},
            "inputs": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
            "text": {"type": "string"},
            "texts": {"type": "array", "items": {"type": "string"}},
        },
    }}},
}


def _bad(msg: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["body"], "msg": msg, "type": "value_error"}])


def to_batch(model: OnnxModel, body: Any, max_rows: int) -> np.ndarray:
    """The request body as the model's input tensor; every problem is a 422 naming it."""
    if not isinstance(body, dict):
        raise _bad("expected a JSON object")
    if model.input_kind == "text":
        texts = [body["text"]] if "text" in body else body.get("texts")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise _bad("expected 'text' (a string) or 'texts' (a non-empty list of strings)")
        rows: Any = texts
    elif "inputs" in body:
        rows = body["inputs"]
    elif "features" in body:
        rows = [body["features"]]
    elif "instances" in body:
        rows = body["instances"]
    else:
        raise _bad("expected one of 'features', 'instances' or 'inputs'")
    if not isinstance(rows, list) or not rows:
        raise _bad("expected a non-empty list of rows")
    if len(rows) > max_rows:
        raise _bad(f"at most {max_rows} rows per request")
    if model.input_kind == "text":
        return model.matrix(rows)
    names = model.features
    try:
        if isinstance(rows[0], dict):
            rows = [[row[f] for f in names] if isinstance(row, dict) and len(row) == len(names) else None
                    for row in rows]
        matrix = np.array(rows, dtype=np.float32)
    except KeyError as exc:
        raise _bad(f"missing feature {exc.args[0]!r}") from None
    except (TypeError, ValueError):
        raise _bad(f"each row must hold exactly {len(names)} numbers: {', '.join(names[:8])}…") from None
    if matrix.ndim != 2 or matrix.shape[1] != len(names):
        raise _bad(f"each row must hold exactly {len(names)} numbers")
    if not np.isfinite(matrix).all():
        raise _bad("features must be finite numbers")
    return matrix


def answer(served: Served, batch: np.ndarray) -> bytes:
    predicted = served.model.run(batch)
    if predicted.labels is not None:
        classes = served.model.classes or []
        probs = predicted.probabilities.tolist() if predicted.probabilities is not None else []
        rows: list[dict[str, Any]] = [
            {"label": label, "probabilities": dict(zip(classes, p, strict=True))}
            for label, p in zip(predicted.labels, probs, strict=True)]
    else:
        rows = [{"value": v if math.isfinite(v) else None} for v in predicted.values or []]
    return orjson.dumps({"model": served.name, "version": served.version, "digest": served.digest,
                         "predictions": rows})


async def bootstrap(settings: InferenceSettings, champions: Champions, stop: asyncio.Event) -> None:
    """Load each model's current champion from the monitor (the decision it signed), retrying until done."""
    pending = set(champions.specs.names())
    delay = 0.5
    async with httpx.AsyncClient(base_url=settings.monitor_url, timeout=10) as client:
        while pending and not stop.is_set():
            for name in sorted(pending):
                try:
                    response = await client.get(f"/v1/models/{name}/champion")
                except httpx.HTTPError as exc:
                    log.info("monitor not reachable yet", error=repr(exc))
                    break
                if response.status_code == 200:
                    body = response.json()
                    await champions.apply(body["decision"].encode(), body["signature"], "monitor")
                    pending.discard(name)
                elif response.status_code == 404:
                    pending.discard(name)  # no champion yet: the decisions topic will bring it
            if pending:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


def create_app(settings: InferenceSettings, specs: ModelSpecs | None = None) -> FastAPI:
    specs = specs or load_specs(settings.specs_path)
    key = settings.decision_signing_key.get_secret_value().encode()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        champions = Champions(specs, HttpArtifactStore(settings.monitor_url), key, settings.session_threads)
        publisher = Publisher(settings, client_id=f"refit-{settings.replica_id}")
        stop = asyncio.Event()

        async def follow(items: list[Incoming]) -> dict[int, str]:
            for item in items:
                await champions.apply(item.record.value or b"", item.header(signing.HEADER), "topic")
            return {}

        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(bootstrap(settings, champions, stop))
                # No consumer group: every replica reads every decision; old ones are skipped by sequence.
                tasks.create_task(consume(
                    settings, name=settings.replica_id, subscribe=[topics.DECISIONS], group_id=None,
                    expected=(ModelPromoted, CandidateRejected, ModelRolledBack), handler=follow,
                    publisher=publisher, stop=stop))
                yield {"champions": champions}
                stop.set()
        finally:
            await publisher.close()

    app = FastAPI(title="refit inference", version="1", lifespan=lifespan)

    @app.post("/v1/models/{name}/predict", openapi_extra={"requestBody": PREDICT_BODY})
    async def predict(name: str, request: Request) -> Response:
        """Predict with the current champion; the response names the version that answered."""
        champions: Champions = request.state.champions
        served = champions.served.get(name)
        if served is None:
            if name not in champions.specs.names():
                raise HTTPException(404, f"no model named {name!r}")
            raise HTTPException(503, f"model {name!r} has no champion yet", headers={"Retry-After": "1"})
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise HTTPException(400, f"body is not valid JSON: {exc}") from None
        batch = to_batch(served.model, body, settings.max_batch_rows)
        return Response(answer(served, batch), media_type="application/json",
                        headers={"x-refit-model-version": str(served.version)})

    @app.get("/v1/models")
    async def models(request: Request) -> list[dict[str, Any]]:
        champions: Champions = request.state.champions
        return [{"name": n, "version": s.version, "digest": s.digest} if (s := champions.served.get(n))
                else {"name": n, "version": None, "digest": None} for n in specs.names()]

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> dict[str, Any]:
        champions: Champions = request.state.champions
        if not champions.ready():
            missing = [n for n in specs.names() if n not in champions.served]
            raise HTTPException(503, f"no champion yet for {', '.join(missing)}")
        return {"status": "ready"}

    return app
