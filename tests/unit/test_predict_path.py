"""The prediction fast path (a bare ASGI handler in front of FastAPI) answers exactly what the
documented FastAPI route answers: same status, body and headers, for answers and for every error."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI

from refit.datasets import sample_rows
from refit.metrics import Metrics
from refit.onnx_model import OnnxModel
from refit.settings import InferenceSettings
from refit.specs import load_specs
from services.inference.app import create_app
from services.inference.serving import Champions, Served
from tests.support.training import Row, fit

REPO = Path(__file__).resolve().parents[2]
SPECS = load_specs(REPO / "config" / "models.yaml")
ROW = sample_rows("digits", 7)[0]["features"]


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    rows = [Row(str(i), r["features"], None, str(r["label"]), None, "")  # type: ignore[arg-type]
            for i, r in enumerate(sample_rows("digits", 7)[:300])]
    model = OnnxModel(fit(SPECS.get("digits"), rows).onnx_bytes)
    metrics = Metrics("inference")
    champions = Champions(SPECS, None, b"k", metrics=metrics)  # type: ignore[arg-type]
    champions.served["digits"] = Served("digits", 3, "a" * 64, 5, model, metrics.requests.labels("digits", "3", "200"),
                                        metrics.latency.labels("digits", "3"))
    return {"champions": champions, "query_log": None}


async def call(app: Any, state: dict[str, Any], path: str, body: bytes, headers: list[tuple[bytes, bytes]],
               chunks: int = 1) -> tuple[int, dict[bytes, bytes], bytes, bool]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "state": dict(state)}
    size = max(1, -(-len(body) // chunks))
    parts = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    content = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), content, "app" in scope  # FastAPI marks what it handled


CASES = {
    "one row": ("/v1/models/digits/predict", orjson.dumps({"features": ROW}), b"application/json"),
    "rows in feature order": ("/v1/models/digits/predict", orjson.dumps({"inputs": [list(ROW.values())] * 3}),
                              b"application/json"),
    "json with charset": ("/v1/models/digits/predict", orjson.dumps({"features": ROW}),
                          b"application/json; charset=utf-8"),
    "unknown model": ("/v1/models/nope/predict", orjson.dumps({"features": ROW}), b"application/json"),
    "no champion yet": ("/v1/models/diabetes/predict", orjson.dumps({"features": {}}), b"application/json"),
    "not json": ("/v1/models/digits/predict", b"{nope", b"application/json"),
    "wrong content type": ("/v1/models/digits/predict", b"a=1", b"application/x-www-form-urlencoded"),
    "missing feature": ("/v1/models/digits/predict", orjson.dumps({"features": {"p0": 1}}), b"application/json"),
    "not finite": ("/v1/models/digits/predict", b'{"inputs": [[1e39' + b", 0" * 63 + b"]]}", b"application/json"),
    "too many rows": ("/v1/models/digits/predict", orjson.dumps({"inputs": [list(ROW.values())] * 1025}),
                      b"application/json"),
    "too large": ("/v1/models/digits/predict", b" " * (17 * 1024 * 1024), b"application/json"),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("chunks", [1, 3])
def test_the_fast_path_answers_what_the_route_answers(state: dict[str, Any], case: str, chunks: int) -> None:
    app = create_app(InferenceSettings(), SPECS)
    without = functools.partial(FastAPI.__call__, app)  # the same app, the FastAPI route answering
    path, body, content_type = CASES[case]
    headers = [(b"host", b"x"), (b"content-type", content_type), (b"x-request-id", b"req-1")]

    async def both() -> tuple[Any, Any]:
        return (await call(app, state, path, body, headers, chunks),
                await call(without, state, path, body, headers, chunks))

    (status, fast_headers, fast_body, by_fastapi), (route_status, route_headers, route_body, _) = asyncio.run(both())
    assert not by_fastapi  # the fast path answered, not FastAPI
    assert status == route_status
    assert orjson.loads(fast_body) == orjson.loads(route_body)
    # The route's 413 comes from the body-limit middleware, before a request id is known; the
    # fast path names the request id on every answer.
    for name in (b"content-type", b"x-refit-model-version", b"retry-after",
                 *((b"x-request-id",) if case != "too large" else ())):
        assert fast_headers.get(name) == route_headers.get(name), name
    assert fast_headers[b"x-request-id"] == b"req-1"
    if case == "one row":
        answer = orjson.loads(fast_body)
        assert status == 200 and answer["version"] == 3 and answer["request_id"] == "req-1"
    else:
        assert status != 200 or case.startswith(("rows", "json"))


def test_request_ids_are_unique_version_4_uuids_across_processes_and_requests() -> None:
    import re
    import uuid

    from refit.metrics import Metrics
    from services.inference.predict import Predictions

    makers = [Predictions(InferenceSettings(), SPECS, Metrics("inference"), 1024) for _ in range(3)]  # 3 "processes"
    ids = [m.new_request_id() for m in makers for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    pattern = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    assert all(pattern.match(i) and uuid.UUID(i).version == 4 for i in ids)


def test_request_ids_are_unguessable_and_read_the_csprng_in_chunks() -> None:
    """Issue 17, defect 14: ids were a per-process prefix and a counter, so one id told the next.

    Now all 122 random bits of each id are fresh; the operating system is asked once per chunk.
    """
    from services.inference.predict import RequestIds

    ids = RequestIds(chunk=160)  # ten ids per read
    first = ids.new()
    buffer = ids._buffer
    rest = [ids.new() for _ in range(9)]
    assert ids._buffer is buffer  # no new read for the ten ids of one chunk
    eleventh = ids.new()
    assert ids._buffer is not buffer
    many = [first, *rest, eleventh, *(ids.new() for _ in range(10_000))]
    # No two share their first 48 bits, nor their last 48: no prefix, no counter to guess from.
    assert len({i[:8] + i[9:13] for i in many}) == len(many)
    assert len({i[-12:] for i in many}) == len(many)
