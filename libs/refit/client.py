"""A Python client for refit's HTTP APIs, sync (`Client`) and async (`AsyncClient`).

Each call is described once, as a `Call`: which service, which request, whether it is safe to send
again, and how to read the answer. The two clients only differ in how they send it (httpx's sync or
async client), so what a call means is written once.

Retries are safe by construction:

- samples always carry an idempotency key (the client makes one when the caller gives none), so a
  batch sent twice is stored once;
- reads and predictions have no effect to repeat;
- control calls (retrain, rollback, scheduler) are sent again only when the connection failed before
  the request left, never after a timeout or a 5xx, where it may have been carried out.

Errors are exceptions carrying the server's message: `ApiError` (an HTTP error answer, with its status
and the body's ``detail``/``error``) and `UnreachableError` (no answer after the retries).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import httpx
import orjson
from pydantic import BaseModel, ConfigDict

from refit.errors import RefitError
from refit.events import CandidateRejected, ModelPromoted, ModelRolledBack, parse_event

T = TypeVar("T")
Service = Literal["ingest", "monitor", "inference"]
Decision = ModelPromoted | CandidateRejected | ModelRolledBack
Row = Mapping[str, float] | Sequence[float]

_RETRY_STATUS = frozenset({429, 502, 503, 504})


class ApiError(RefitError):
    """The server answered with an error: its status and its message."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message, self.body = status, message, body


class UnreachableError(RefitError, ConnectionError):
    """No answer from a service, after the retries."""


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)  # new fields from a newer server are kept, not refused


class Accepted(_Answer):
    accepted: int
    sample_ids: list[str]


class Prediction(_Answer):
    model: str
    version: int
    digest: str
    request_id: str
    predictions: list[dict[str, Any]]


class Champion(_Answer):
    version: int
    digest: str
    since: str
    decision: str
    scores: dict[str, Any] | None = None


class ModelStatus(_Answer):
    name: str
    task: str
    input: str
    champion: Champion | None
    holdout_size: int
    versions: int
    pending: int


class RetrainAccepted(_Answer):
    request_id: str
    model: str


class Scheduler(_Answer):
    running: bool
    jobs: list[dict[str, Any]] = []


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request to one service, and how to read its answer."""

    service: Service
    method: str
    path: str
    read: Callable[[Any], T]
    json: Any = None
    params: Mapping[str, Any] | None = None
    credential: Literal["control", "ingest"] | None = None
    repeatable: bool = True  # False: sent again only when it never left


def _decision(payload: dict[str, Any]) -> Decision:
    fields = {k: v for k, v in payload.items() if k != "published"}
    return parse_event(orjson.dumps(fields), (ModelPromoted, CandidateRejected, ModelRolledBack))  # type: ignore[return-value]


def sample(features: Row | None = None, *, label: Any, text: str | None = None, confidence: float | None = None,
           source: str | None = None, idempotency_key: str | None = None, request_id: str | None = None,
           event_time: str | None = None) -> dict[str, Any]:
    """One labeled sample as ingest takes it; an idempotency key is made when none is given."""
    row: dict[str, Any] = {"label": label, "idempotency_key": idempotency_key or f"client-{uuid.uuid4()}"}
    optional = {"features": features if features is None or isinstance(features, Mapping) else list(features),
                "text": text, "confidence": confidence, "source": source, "request_id": request_id,
                "event_time": event_time}
    row.update({k: v for k, v in optional.items() if v is not None})
    return row


class Calls:
    """Every call the clients make, built once."""

    @staticmethod
    def post_samples(model: str, samples: Iterable[Mapping[str, Any]]) -> Call[Accepted]:
        rows = [s if "idempotency_key" in s else {**s, "idempotency_key": f"client-{uuid.uuid4()}"} for s in samples]
        return Call("ingest", "POST", "/v1/samples:batch", Accepted.model_validate,
                    json={"model": model, "samples": rows}, credential="ingest")

    @staticmethod
    def feedback(model: str, request_id: str, label: Any, features: Row | None, text: str | None) -> Call[Accepted]:
        return Calls.post_samples(model, [sample(features, label=label, text=text, request_id=request_id,
                                                 idempotency_key=f"feedback-{request_id}")])

    @staticmethod
    def predict(model: str, rows: Sequence[Row] | None = None, *, texts: Sequence[str] | None = None) -> Call[Prediction]:
        if (rows is None) == (texts is None):
            raise ValueError("give rows (numeric models) or texts (text models), not both")
        body: dict[str, Any] = {"texts": list(texts)} if texts is not None else {
            "instances": [dict(r) for r in rows]} if rows and isinstance(rows[0], Mapping) else {
            "inputs": [list(r) for r in rows or []]}  # type: ignore[arg-type]
        return Call("inference", "POST", f"/v1/models/{model}/predict", Prediction.model_validate, json=body)

    @staticmethod
    def models() -> Call[list[ModelStatus]]:
        return Call("monitor", "GET", "/v1/models", lambda data: [ModelStatus.model_validate(m) for m in data])

    @staticmethod
    def model(name: str) -> Call[ModelStatus]:
        return Call("monitor", "GET", f"/v1/models/{name}", ModelStatus.model_validate)

    @staticmethod
    def decisions(name: str, limit: int = 100) -> Call[list[Decision]]:
        return Call("monitor", "GET", f"/v1/models/{name}/decisions", lambda data: [_decision(d) for d in data],
                    params={"limit": limit})

    @staticmethod
    def versions(name: str) -> Call[list[dict[str, Any]]]:
        return Call("monitor", "GET", f"/v1/models/{name}/versions", list)

    @staticmethod
    def triggers(name: str) -> Call[dict[str, Any]]:
        return Call("monitor", "GET", f"/v1/models/{name}/triggers", dict)

    @staticmethod
    def retrain(name: str, reason: str = "manual request") -> Call[RetrainAccepted]:
        return Call("monitor", "POST", f"/v1/models/{name}/retrain", RetrainAccepted.model_validate,
                    json={"reason": reason}, credential="control", repeatable=False)

    @staticmethod
    def rollback(name: str, to_version: int | None = None, reason: str = "manual rollback") -> Call[ModelRolledBack]:
        return Call("monitor", "POST", f"/v1/models/{name}/rollback",
                    lambda data: ModelRolledBack.model_validate(data),
                    json={"reason": reason, "to_version": to_version}, credential="control", repeatable=False)

    @staticmethod
    def scheduler(action: Literal["start", "stop"] | None = None) -> Call[Scheduler]:
        if action is None:
            return Call("monitor", "GET", "/v1/scheduler", Scheduler.model_validate)
        return Call("monitor", "POST", f"/v1/scheduler/{action}", Scheduler.model_validate, credential="control",
                    repeatable=False)

    @staticmethod
    def health() -> Call[dict[str, Any]]:
        return Call("monitor", "GET", "/v1/health", dict)

    @staticmethod
    def report(days: float = 7) -> Call[dict[str, Any]]:
        return Call("monitor", "GET", "/v1/reports", dict, params={"days": days})


def _message(response: httpx.Response) -> tuple[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return response.text or response.reason_phrase, response.text
    if isinstance(body, dict):
        detail = body.get("detail", body.get("error", body))
        if isinstance(detail, list):  # FastAPI's validation errors: say which field, and what
            detail = "; ".join(f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in detail)
        return str(detail), body
    return str(body), body


@dataclass
class _Base:
    ingest: str = "http://127.0.0.1:8001"
    monitor: str = "http://127.0.0.1:8003"
    inference: str = "http://127.0.0.1:8004"
    token: str | None = None  # the control token
    ingest_key: str | None = None
    timeout: float = 30.0
    retries: int = 3
    backoff_s: float = 0.2
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def _request(self, call: Call[Any]) -> dict[str, Any]:
        base = {"ingest": self.ingest, "monitor": self.monitor, "inference": self.inference}[call.service]
        secret = {"control": self.token, "ingest": self.ingest_key, None: None}[call.credential]
        return {"method": call.method, "url": base.rstrip("/") + call.path, "json": call.json,
                "params": call.params, "headers": {"authorization": f"Bearer {secret}"} if secret else {}}

    def _again(self, call: Call[Any], attempt: int, error: Exception | None, status: int | None) -> float | None:
        """How long to wait before sending `call` again, or None to stop."""
        if attempt >= self.retries:
            return None
        never_left = isinstance(error, httpx.ConnectError)
        if not (never_left or (call.repeatable and (error is not None or status in _RETRY_STATUS))):
            return None
        return self.backoff_s * 2**attempt * (0.5 + self._rng.random())

    @staticmethod
    def _read(call: Call[T], response: httpx.Response) -> T:
        if response.status_code >= 400:
            message, body = _message(response)
            raise ApiError(response.status_code, message, body)
        return call.read(response.json())

    def _after(self, call: Call[Any], attempt: int, response: httpx.Response | None,
               error: Exception | None) -> float | None:
        """After an attempt: how long to wait before the next one, or None when ``response`` is the
        answer; :class:`UnreachableError` when the retries are spent without any answer."""
        wait = self._again(call, attempt, error, response.status_code if response is not None else None)
        if wait is None and response is None:
            base = getattr(self, call.service)
            raise UnreachableError(f"cannot reach the {call.service} at {base}: {error or type(error).__name__}") \
                from error
        return wait


class Client(_Base):
    """The sync client. Use it as a context manager, or call `close()`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._http = httpx.Client(timeout=self.timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            error: Exception | None = None
            response = None
            try:
                response = self._http.request(**self._request(call))
            except httpx.TransportError as exc:
                error = exc
            if (wait := self._after(call, attempt, response, error)) is None:
                return self._read(call, response)  # type: ignore[arg-type]
            time.sleep(wait)
            attempt += 1

    def post_samples(self, model: str, samples: Iterable[Mapping[str, Any]]) -> Accepted:
        return self.run(Calls.post_samples(model, samples))

    def post_feedback(self, model: str, request_id: str, label: Any, features: Row | None = None, *,
                      text: str | None = None) -> Accepted:
        """The true label of an earlier prediction (its ``request_id``; row i of many: ``"<id>#<i>"``), with
        the input it was made on: a labeled sample like any other, joined to what was served."""
        return self.run(Calls.feedback(model, request_id, label, features, text))

    def predict(self, model: str, rows: Sequence[Row] | None = None, *, texts: Sequence[str] | None = None) -> Prediction:
        return self.run(Calls.predict(model, rows, texts=texts))

    def models(self) -> list[ModelStatus]:
        return self.run(Calls.models())

    def model(self, name: str) -> ModelStatus:
        return self.run(Calls.model(name))

    def decisions(self, name: str, limit: int = 100) -> list[Decision]:
        return self.run(Calls.decisions(name, limit))

    def versions(self, name: str) -> list[dict[str, Any]]:
        return self.run(Calls.versions(name))

    def triggers(self, name: str) -> dict[str, Any]:
        return self.run(Calls.triggers(name))

    def retrain(self, name: str, reason: str = "manual request") -> RetrainAccepted:
        return self.run(Calls.retrain(name, reason))

    def rollback(self, name: str, to_version: int | None = None, reason: str = "manual rollback") -> ModelRolledBack:
        return self.run(Calls.rollback(name, to_version, reason))

    def scheduler(self, action: Literal["start", "stop"] | None = None) -> Scheduler:
        return self.run(Calls.scheduler(action))

    def health(self) -> dict[str, Any]:
        return self.run(Calls.health())

    def report(self, days: float = 7) -> dict[str, Any]:
        return self.run(Calls.report(days))


class AsyncClient(_Base):
    """The async client: the same calls as `Client`, awaited. Use it as an async context manager."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._http = httpx.AsyncClient(timeout=self.timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            error: Exception | None = None
            response = None
            try:
                response = await self._http.request(**self._request(call))
            except httpx.TransportError as exc:
                error = exc
            if (wait := self._after(call, attempt, response, error)) is None:
                return self._read(call, response)  # type: ignore[arg-type]
            await asyncio.sleep(wait)
            attempt += 1

    async def post_samples(self, model: str, samples: Iterable[Mapping[str, Any]]) -> Accepted:
        return await self.run(Calls.post_samples(model, samples))

    async def post_feedback(self, model: str, request_id: str, label: Any, features: Row | None = None, *,
                            text: str | None = None) -> Accepted:
        return await self.run(Calls.feedback(model, request_id, label, features, text))

    async def predict(self, model: str, rows: Sequence[Row] | None = None, *,
                      texts: Sequence[str] | None = None) -> Prediction:
        return await self.run(Calls.predict(model, rows, texts=texts))

    async def models(self) -> list[ModelStatus]:
        return await self.run(Calls.models())

    async def model(self, name: str) -> ModelStatus:
        return await self.run(Calls.model(name))

    async def decisions(self, name: str, limit: int = 100) -> list[Decision]:
        return await self.run(Calls.decisions(name, limit))

    async def versions(self, name: str) -> list[dict[str, Any]]:
        return await self.run(Calls.versions(name))

    async def triggers(self, name: str) -> dict[str, Any]:
        return await self.run(Calls.triggers(name))

    async def retrain(self, name: str, reason: str = "manual request") -> RetrainAccepted:
        return await self.run(Calls.retrain(name, reason))

    async def rollback(self, name: str, to_version: int | None = None,
                       reason: str = "manual rollback") -> ModelRolledBack:
        return await self.run(Calls.rollback(name, to_version, reason))

    async def scheduler(self, action: Literal["start", "stop"] | None = None) -> Scheduler:
        return await self.run(Calls.scheduler(action))

    async def health(self) -> dict[str, Any]:
        return await self.run(Calls.health())

    async def report(self, days: float = 7) -> dict[str, Any]:
        return await self.run(Calls.report(days))
