"""The prediction request path: answered in front of FastAPI.

A prediction is the one request refit answers thousands of times a second, and FastAPI's
layers, routing and dependency solving cost more than parsing the body, running the model and
writing the answer together (measured in docs/benchmarks.md). :class:`InferenceApp` answers
``POST /v1/models/{name}/predict`` before FastAPI sees it; the FastAPI route of the same path
documents the operation in the OpenAPI schema and answers through the same
:meth:`Predictions.answer` if it is ever reached (tests compare the two). Errors are FastAPI's
shape, ``{"detail": ...}``, with the request id in a header.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import Any, Protocol

import numpy as np
import orjson
import structlog
from fastapi import FastAPI, HTTPException
from starlette.types import Receive, Scope, Send

from refit import tracing
from refit.core.fallback import KeywordRules, without_champion
from refit.core.schema import validate_text
from refit.errors import ModelLoadError, SchemaError
from refit.metrics import Metrics
from refit.onnx_model import OnnxModel, Prediction
from refit.settings import InferenceSettings
from refit.specs import FallbackKind, ModelSpec, ModelSpecs
from refit.web import is_json
from services.inference import v2 as wire_v2
from services.inference.serving import Champions, Served

log = structlog.get_logger("inference")

MAX_REQUEST_ID = 200
PREFIX, SUFFIX = "/v1/models/", "/predict"
Headers = list[tuple[bytes, bytes]]

PREDICT_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {
        "type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
        "description": "Exactly one of: features (one row), instances (rows of named features), "
                       "inputs (rows of numbers in feature order), text, texts. Numbers within the "
                       "model's bounds, texts non-empty and within its length (docs/operations.md).",
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


# What a prediction answers (declared so that clients, and the fuzzing tests, can check it).
# A non-finite model output is null: a regression value by design, a probability as orjson writes NaN.
PREDICT_RESPONSES = {"200": {"description": "The predictions of the version named in the answer", "content": {
    "application/json": {"schema": {
        "type": "object", "required": ["model", "version", "digest", "request_id", "predictions"],
        "properties": {
            "model": {"type": "string"},
            "version": {"type": ["integer", "null"], "description": "null when a fallback without a model answered"},
            "digest": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
            "request_id": {"type": "string"},
            "fallback": {"type": "string", "enum": ["previous", "prior", "rules"],
                         "description": "present when the champion did not answer (serving.fallback)"},
            "predictions": {"type": "array", "items": {"oneOf": [
                {"type": "object", "required": ["label", "probabilities"], "additionalProperties": False,
                 "properties": {"label": {"type": "string"}, "probabilities": {
                     "type": "object", "additionalProperties": {"type": ["number", "null"]}}}},
                {"type": "object", "required": ["value"], "additionalProperties": False,
                 "properties": {"value": {"type": ["number", "null"]}}},
            ]}},
        },
    }}}}}


def _bad(msg: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["body"], "msg": msg, "type": "value_error"}])


class InputRule:
    """What a model's spec lets into a prediction, as ingest checks a sample (refit.core.schema):
    numbers within the spec's bounds, no booleans; texts non-empty and within ``bounds.max_chars``;
    and at most ``max_request_chars`` of tokenizer work (rows x the longest text) per request."""

    def __init__(self, spec: ModelSpec, max_request_chars: int) -> None:
        self.spec, self.max_request_chars = spec, max_request_chars
        ranges = spec.feature_ranges
        self.low = np.array([r[1] for r in ranges], dtype=np.float32)
        self.high = np.array([r[2] for r in ranges], dtype=np.float32)
        self.exact_low, self.exact_high = np.array([r[1] for r in ranges]), np.array([r[2] for r in ranges])
        # The common case, every feature within the same ±max_abs: one abs and one max per request.
        symmetric = all(-low == high == spec.bounds.max_abs for _, low, high in ranges)
        self.max_abs = float(np.float32(spec.bounds.max_abs)) if symmetric else None

    def check_texts(self, texts: list[str], field: str = "texts") -> None:
        for i, text in enumerate(texts):
            try:
                validate_text(self.spec, text)
            except SchemaError as exc:
                where = "text" if field == "text" else f"texts[{i}]"
                raise _bad(f"{where}: {str(exc).partition(': ')[2]}") from None
        work = len(texts) * max(map(len, texts))
        if work > self.max_request_chars:
            raise _bad(f"at most {self.max_request_chars} characters of text per request, counted as rows x the "
                       f"longest text (every text is padded to the longest): {len(texts)} x "
                       f"{work // len(texts)} = {work}; send fewer or shorter texts per request")

    def check_numbers(self, matrix: np.ndarray, names: list[str], rows: list[Any]) -> None:
        # Strictly inside in float32 is inside (rounding is monotonic); a value that rounds onto a
        # bound may lie beyond it (1e15 + 1 is 1e15 in float32): such rows are compared as sent.
        inside = np.abs(matrix).max() < self.max_abs if self.max_abs is not None else \
            bool(((matrix > self.low) & (matrix < self.high)).all())  # NaN is inside nothing
        if inside:
            return
        if not np.isfinite(matrix).all():
            raise _bad("features must be finite numbers")
        exact = np.array(rows, dtype=np.float64)
        outside = np.argwhere((exact < self.exact_low) | (exact > self.exact_high))
        if len(outside):
            row, column = outside[0]
            raise _bad(f"features.{names[column]}: {float(exact[row, column]):g} is outside the model's bounds "
                       f"[{self.exact_low[column]:g}, {self.exact_high[column]:g}]")


_TEXT_KEYS, _NUMERIC_KEYS = ("text", "texts"), ("features", "instances", "inputs")


class SpecInput:
    """A model's input as its spec declares it: what parsing a body needs when no model is loaded."""

    def __init__(self, spec: ModelSpec) -> None:
        self.input_kind, self.features = spec.input.kind, list(spec.input.features)

    def matrix(self, rows: list[Any]) -> np.ndarray:
        return np.asarray(rows, dtype=object).reshape(-1, 1)


def _one_input(model: OnnxModel | SpecInput, body: dict[str, Any]) -> tuple[str, Any]:
    """The body's one input field: more than one is ambiguous, anything else unknown (ingest's rule)."""
    allowed = _TEXT_KEYS if model.input_kind == "text" else _NUMERIC_KEYS
    if len(body) == 1:
        ((key, value),) = body.items()
        if key in allowed:
            return key, value
    names = " or ".join(repr(k) for k in allowed)
    if not body or not set(body) & set(allowed):
        raise _bad(f"expected one of {names}" if model.input_kind != "text" else
                   "expected 'text' (a string) or 'texts' (a non-empty list of strings)")
    raise _bad(f"expected exactly one of {names}, got {sorted(body)[:6]}")


def _has_bool(rows: list[Any]) -> bool:
    return any(type(v) is bool for row in rows for v in (row.values() if isinstance(row, dict) else row))


def to_batch(model: OnnxModel | SpecInput, body: Any, max_rows: int, rule: InputRule | None = None,
             maybe_bool: bool = True) -> tuple[list[Any], np.ndarray]:
    """The rows as sent and the model's input tensor; every problem is a 422 naming it.

    ``maybe_bool`` false says the body holds no ``true``/``false`` at all (the caller looked at
    its bytes), which spares the scan for booleans used as numbers.
    """
    if not isinstance(body, dict):
        raise _bad("expected a JSON object")
    key, value = _one_input(model, body)
    if model.input_kind == "text":
        texts = [value] if key == "text" else value
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise _bad("expected 'text' (a string) or 'texts' (a non-empty list of strings)")
        rows: Any = texts
    else:
        rows = [value] if key == "features" else value
    if not isinstance(rows, list) or not rows:
        raise _bad("expected a non-empty list of rows")
    if len(rows) > max_rows:
        raise _bad(f"at most {max_rows} rows per request")
    if model.input_kind == "text":
        if rule is not None:
            rule.check_texts(rows, key)
        return rows, model.matrix(rows)
    names = model.features
    sent = rows
    try:
        if isinstance(rows[0], dict):
            rows = [[row[f] for f in names] if isinstance(row, dict) and len(row) == len(names) else None
                    for row in rows]
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused just below
            matrix = np.array(rows, dtype=np.float32)
    except KeyError as exc:
        raise _bad(f"missing feature {exc.args[0]!r}") from None
    except (TypeError, ValueError):
        raise _bad(f"each row must hold exactly {len(names)} numbers: {', '.join(names[:8])}…") from None
    if matrix.ndim != 2 or matrix.shape[1] != len(names):
        raise _bad(f"each row must hold exactly {len(names)} numbers")
    if maybe_bool and _has_bool(rows):
        raise _bad("features: booleans are not numbers")
    if rule is not None and len(rule.low) == len(names):
        rule.check_numbers(matrix, names, rows)
    elif not np.isfinite(matrix.sum(dtype=np.float64)):  # one pass; JSON has no NaN, a float32 overflow is inf
        raise _bad("features must be finite numbers")
    return sent, matrix


def encode(served: Served, predicted: Prediction, request_id: str) -> bytes:
    """The 200 body: the version that answered and one prediction per row (PREDICT_RESPONSES)."""
    return _answer(served.name, served.version, served.digest, served.model.classes or [], predicted, request_id,
                   served.fallback)


def _answer(name: str, version: int | None, digest: str | None, classes: list[str], predicted: Prediction,
            request_id: str, fallback: str | None = None) -> bytes:
    if predicted.labels is not None:
        probs = predicted.probabilities.tolist() if predicted.probabilities is not None else []
        rows: list[dict[str, Any]] = [
            {"label": label, "probabilities": dict(zip(classes, p, strict=True))}
            for label, p in zip(predicted.labels, probs, strict=True)]
    else:
        rows = [{"value": v if math.isfinite(v) else None} for v in predicted.values or []]
    body = {"model": name, "version": version, "digest": digest, "request_id": request_id, "predictions": rows}
    if fallback is not None:
        body["fallback"] = fallback
    return orjson.dumps(body)


class QueryLogLike(Protocol):
    def offer(self, served: Served, request_id: str, rows: list[Any], predicted: Prediction) -> None: ...


class ShadowLike(Protocol):
    def offer(self, served: Served, request_id: str, batch: np.ndarray, predicted: Prediction) -> None: ...


class _ClientGone(Exception):
    pass


def _header(headers: Headers, name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


async def _read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The whole body, refused (413) as soon as it is known to exceed ``limit`` bytes."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body exceeds {limit} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Coalesce:
    """One model call for all the requests that reached the model in the same event-loop pass.

    No waiting: the first request of a pass schedules the call with ``call_soon``, so it runs as
    soon as the requests already being handled have added their rows. Under load many requests
    arrive together and the model's fixed cost per call (most of a single-row prediction's time
    in a server, docs/benchmarks.md) is paid once for all of them; alone, a request pays one
    more pass of the loop. Rows of different requests never mix in an answer: each gets its own
    slice, and if the joint call fails each request is run alone, so an error stays its own.
    """

    def __init__(self) -> None:
        self.pending: dict[int, tuple[OnnxModel, list[tuple[np.ndarray, asyncio.Future[Prediction]]]]] = {}

    def run(self, model: OnnxModel, batch: np.ndarray) -> asyncio.Future[Prediction]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Prediction] = loop.create_future()
        waiting = self.pending.get(id(model))
        if waiting is None:
            waiting = self.pending[id(model)] = (model, [])
            loop.call_soon(self._flush, id(model))
        waiting[1].append((batch, future))
        return future

    def _flush(self, key: int) -> None:
        model, waiting = self.pending.pop(key)
        if len(waiting) > 1:
            try:
                joint = model.run(np.concatenate([batch for batch, _ in waiting]))
            except Exception:  # run each alone below, so each request gets its own answer or error
                pass
            else:
                start = 0
                for batch, future in waiting:
                    end = start + len(batch)
                    if not future.cancelled():
                        future.set_result(joint.rows(start, end))
                    start = end
                return
        for batch, future in waiting:
            if future.cancelled():
                continue
            try:
                future.set_result(model.run(batch))
            except Exception as exc:  # a callback must not raise: the request gets the error
                future.set_exception(exc)


_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


class RequestIds:
    """Version-4 UUIDs, every random bit from the operating system's CSPRNG, read in chunks.

    A request id is the key that joins a prediction with its label (the first label wins), so it
    must not be guessable: a client who can guess another's ids can label its predictions first.
    ``os.urandom`` per id would cost a getrandom(2) call per request; one call fills ``chunk`` bytes,
    enough for ``chunk // 16`` ids. Used from one thread (the event loop); worker processes are
    started, not forked, so no two share a buffer.
    """

    def __init__(self, chunk: int = 16 * 4096) -> None:
        self.chunk = chunk
        self._buffer = b""
        self._next = 0

    def new(self) -> str:
        start = self._next
        if start + 16 > len(self._buffer):
            self._buffer, start = os.urandom(self.chunk), 0
        self._next = start + 16
        h = self._buffer[start:start + 16].hex()
        # The version (4) and variant (10xx) bits set as uuid.UUID(version=4) does, at a third of its cost.
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


class Predictions:
    """Answers one prediction request: (status, body, headers), every problem a 4xx naming it."""

    def __init__(self, settings: InferenceSettings, specs: ModelSpecs, metrics: Metrics, limit: int) -> None:
        self.max_rows = settings.max_batch_rows
        self.names = set(specs.names())
        self.rules = {spec.name: InputRule(spec, settings.max_request_chars) for spec in specs.models}
        self.specs = {spec.name: spec for spec in specs.models}
        self.keyword_rules = {spec.name: KeywordRules(spec.serving.rules, spec.labels) for spec in specs.models
                              if spec.serving.rules is not None}
        self.metrics = metrics
        self.limit = limit
        self.coalesce = Coalesce()
        self.new_request_id = RequestIds().new

    async def answer(self, name: str, scope: Scope, receive: Receive, v2: bool = False,
                     version: str | None = None) -> tuple[int, bytes, Headers]:
        """One prediction, ``/v1`` or (``v2``) the Open Inference Protocol's ``infer`` of ``version``
        (any, if None): one parser, one model call, two wire formats (services/inference/v2.py)."""
        started = time.perf_counter()
        headers: Headers = scope["headers"]
        request_id = _header(headers, b"x-request-id")
        kind: FallbackKind | None = None
        try:
            if request_id is None:
                request_id = self.new_request_id()
            elif not 0 < len(request_id) <= MAX_REQUEST_ID or not request_id.isprintable():
                request_id = self.new_request_id()
                raise HTTPException(400, f"X-Request-ID must be 1 to {MAX_REQUEST_ID} printable characters")
            champions: Champions = scope["state"]["champions"]
            served = champions.served.get(name)
            if served is None or served.fallback is not None and "previous" not in self.specs[name].serving.fallback:
                if name not in self.names:
                    raise HTTPException(404, f"no model named {name!r}")
                kind = self._fallback_kind(name, champions)
            serving = served.version if served is not None and kind is None else None
            if version is not None and version != str(serving):
                raise HTTPException(404, f"version {version} of {name!r} is not served here"
                                    + (f"; it serves {serving}" if serving is not None else ""))
            raw, body = await self._body(headers, receive, missing_ok=v2)
            request = wire_v2.to_v1(self.specs[name], body) if v2 else body
            maybe_bool = b"true" in raw or b"false" in raw
            if kind is not None:
                rows, _ = to_batch(SpecInput(self.specs[name]), request, self.max_rows, self.rules[name], maybe_bool)
                predicted, classes = self._fallback_predict(name, kind, champions, rows)
            else:
                assert served is not None
                rows, batch = to_batch(served.model, request, self.max_rows, self.rules[name], maybe_bool)
                try:
                    predicted = await self.coalesce.run(served.model, batch)
                except ModelLoadError as exc:
                    raise _bad(f"the model could not run on this input: {exc}") from None
                classes = served.model.classes or []
            outputs = wire_v2.requested(body, self.specs[name].task) if v2 else ()
        except HTTPException as exc:
            self.metrics.requests.labels(name if name in self.names else "unknown", "none", str(exc.status_code)).inc()
            extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items()]
            status, content = wire_v2.error(exc) if v2 else (exc.status_code, orjson.dumps({"detail": exc.detail}))
            return status, content, [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode()),
                                     *extra]
        answer = [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode())]
        if (flag := kind or (served.fallback if served is not None else None)) is not None:
            self.metrics.fallback_answers.labels(name, flag).inc()
            answer.append((b"x-refit-fallback", flag.encode()))
        if kind is not None:
            return 200, self._encode(v2, name, None, None, classes, predicted, request_id, body, outputs, kind), answer
        assert served is not None
        query_log: QueryLogLike | None = scope["state"]["query_log"]
        if query_log is not None:
            query_log.offer(served, request_id, rows, predicted)
        shadow: ShadowLike | None = scope["state"].get("shadow")
        if shadow is not None:
            shadow.offer(served, request_id, batch, predicted)
        content = self._encode(v2, name, served.version, served.digest, classes, predicted, request_id, body, outputs,
                               served.fallback) if v2 else encode(served, predicted, request_id)
        served.answered.inc()
        served.latency.observe(time.perf_counter() - started)
        answer.append((b"x-refit-model-version", str(served.version).encode()))
        return 200, content, answer

    @staticmethod
    def _encode(v2: bool, name: str, version: int | None, digest: str | None, classes: list[str],
                predicted: Prediction, request_id: str, body: Any, outputs: tuple[str, ...],
                fallback: str | None) -> bytes:
        if not v2:
            return _answer(name, version, digest, classes, predicted, request_id, fallback)
        parameters = {k: v for k, v in (("digest", digest), ("fallback", fallback)) if v is not None}
        return wire_v2.encode(name, version, classes, predicted, request_id, body.get("id"), outputs, parameters)

    async def _body(self, headers: Headers, receive: Receive, missing_ok: bool = False) -> tuple[bytes, Any]:
        """The request's JSON body (and its bytes); a 415, 413 or 400 naming what is wrong. The Open
        Inference Protocol's clients may send no Content-Type (``missing_ok``); a wrong one is refused."""
        content_type = _header(headers, b"content-type")
        if content_type != "application/json" and not is_json(content_type) and \
                not (missing_ok and content_type is None):  # none at all too for /v1, as ingest
            raise HTTPException(415, "expected a JSON body (Content-Type: application/json), "
                                     f"got {'none' if content_type is None else repr(content_type[:80])}")
        if _header(headers, b"inference-header-content-length") is not None:
            raise HTTPException(400, "the binary tensor extension is not supported: send the tensors as JSON")
        raw = await _read_body(receive, _header(headers, b"content-length"), self.limit)
        try:
            return raw, orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise HTTPException(400, f"body is not valid JSON: {exc}") from None

    def _fallback_kind(self, name: str, champions: Champions) -> FallbackKind:
        """The ``serving.fallback`` kind that answers without a loadable champion (refit.core.fallback);
        a 503 as before when none can."""
        spec = self.specs[name]
        kind = without_champion(spec.serving, spec.input.kind == "text", champions.priors.get(name))
        if kind is None:
            raise HTTPException(503, f"model {name!r} has no champion yet", headers={"Retry-After": "1"})
        return kind

    def _fallback_predict(self, name: str, kind: FallbackKind, champions: Champions,
                          rows: list[Any]) -> tuple[Prediction, list[str]]:
        if kind == "rules":
            rules = self.keyword_rules[name]
            return rules.predict(rows), rules.classes
        prior = champions.priors[name]
        return prior.predict(len(rows)), list(prior.classes)


class InferenceApp(FastAPI):
    """FastAPI, with ``POST /v1/models/{name}/predict`` and the Open Inference Protocol's
    ``POST /v2/models/{name}[/versions/{v}]/infer`` answered before any of FastAPI's layers.

    Everything else (the other routes, OpenAPI, lifespan) is FastAPI's. A subclass rather than a
    middleware: FastAPI's own outer layers (error and telemetry middleware, body limit, the
    Starlette app) cost a prediction about as much again as the model (docs/benchmarks.md).
    """

    predictions: Predictions | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.predictions is None or scope["type"] != "http" or scope["method"] != "POST":
            await super().__call__(scope, receive, send)
            return
        path: str = scope["path"]
        name = path[len(PREFIX):-len(SUFFIX)]
        v2, version = False, None
        if not path.startswith(PREFIX) or not path.endswith(SUFFIX) or not name or "/" in name:
            if (infer := wire_v2.route(path)) is None:
                await super().__call__(scope, receive, send)
                return
            (name, version), v2 = infer, True
        started = time.time_ns() if tracing.enabled else 0
        try:
            status, body, headers = await self.predictions.answer(name, scope, receive, v2, version)
        except _ClientGone:
            return
        except Exception as exc:  # a bug, not the client's: answered like FastAPI's error middleware
            log.exception("prediction failed", model=name, error=repr(exc))
            status, body = 500, b'{"error":"Internal Server Error"}' if v2 else b'{"detail":"Internal Server Error"}'
            headers = [(b"content-type", b"application/json")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        if started and (parent := _header(scope["headers"], b"traceparent")) is not None:
            # only a sampled caller's request, and after the answer left (refit.tracing)
            tracing.record("predict", parent, started, time.time_ns(), model=name, status=status)
