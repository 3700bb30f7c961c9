"""One rule for both edges (issue 17, defects 10, 11, 15): what ingest refuses in a sample, inference
refuses in a prediction request, through the fast path and the documented route alike."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import orjson
import pytest
from fastapi import FastAPI

from refit.datasets import sample_rows
from refit.metrics import Metrics
from refit.onnx_model import OnnxModel
from refit.settings import InferenceSettings
from services.inference.app import create_app
from services.inference.serving import Champions, Served
from tests.support.training import Row, fit
from tests.unit.test_predict_path import SPECS, call

DIGITS = sample_rows("digits", 7)[0]["features"]
DIABETES = sample_rows("diabetes", 7)[0]["features"]


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    metrics = Metrics("inference")
    champions = Champions(SPECS, None, b"k", metrics=metrics)  # type: ignore[arg-type]
    for name, count in (("digits", 300), ("diabetes", 200), ("food-mood", 10_000)):
        data = sample_rows(name, 7)[:count]
        rows = [Row(str(i), r.get("features"), r.get("text"), str(r["label"]), None, "")  # type: ignore[arg-type]
                for i, r in enumerate(data)]
        model = OnnxModel(fit(SPECS.get(name), rows).onnx_bytes)
        champions.served[name] = Served(name, 1, "a" * 64, 5, model, metrics.requests.labels(name, "1", "200"),
                                        metrics.latency.labels(name, "1"))
    return {"champions": champions, "query_log": None}


def answer(state: dict[str, Any], model: str, body: bytes, content_type: bytes | None = b"application/json",
           settings: InferenceSettings | None = None) -> tuple[int, Any]:
    """The fast path's answer, checked to be the route's."""
    app = create_app(settings or InferenceSettings(), SPECS)
    without = functools.partial(FastAPI.__call__, app)
    headers = [(b"host", b"x"), (b"x-request-id", b"r"), *([(b"content-type", content_type)] if content_type else [])]
    path = f"/v1/models/{model}/predict"

    async def both() -> tuple[Any, Any]:
        return await call(app, state, path, body, headers), await call(without, state, path, body, headers)

    (status, _, content, by_fastapi), (route_status, _, route_content, _) = asyncio.run(both())
    assert not by_fastapi and status == route_status and orjson.loads(content) == orjson.loads(route_content)
    return status, orjson.loads(content)


def refused(state: dict[str, Any], model: str, body: Any, needle: str, status: int = 422, **kw: Any) -> None:
    got, content = answer(state, model, body if isinstance(body, bytes) else orjson.dumps(body), **kw)
    assert got == status, content
    assert needle in orjson.dumps(content).decode(), content


def test_text_and_texts_together_are_ambiguous(state) -> None:
    """{"text": "", "texts": [3 texts]} answered one prediction: text silently won."""
    refused(state, "food-mood", {"text": "", "texts": ["a", "b", "c"]},
            "expected exactly one of 'text' or 'texts', got ['text', 'texts']")
    refused(state, "digits", {"features": DIGITS, "inputs": [list(DIGITS.values())]},
            "expected exactly one of 'features' or 'instances' or 'inputs'")
    refused(state, "digits", {"features": DIGITS, "extra": 1}, "got ['extra', 'features']")
    ok, content = answer(state, "food-mood", orjson.dumps({"texts": ["warm soup", "cold beer", "salad"]}))
    assert ok == 200 and len(content["predictions"]) == 3


@pytest.mark.parametrize("body", [{"text": ""}, {"text": "   "}, {"texts": ["warm soup", "\n"]}])
def test_empty_text_is_refused_as_at_ingest(state, body) -> None:
    refused(state, "food-mood", body, f"{'text' if 'text' in body else 'texts[1]'}: expected a non-empty string")


@pytest.mark.parametrize("body", [{"features": {**DIGITS, "p3": True}}, {"inputs": [[False] * 64]},
                                  {"instances": [DIGITS, {**DIGITS, "p0": True}]}])
def test_booleans_are_not_numbers_as_at_ingest(state, body) -> None:
    refused(state, "digits", body, "booleans are not numbers")


def test_a_missing_content_type_is_415_as_ingest_refuses_it(state) -> None:
    refused(state, "digits", {"features": DIGITS}, "got none", status=415, content_type=None)


def test_numbers_beyond_the_spec_bounds_are_refused_by_name(state) -> None:
    """3e38 is finite as float32: the diabetes model answered NaN (null); now the spec's bounds apply."""
    refused(state, "diabetes", {"features": dict.fromkeys(DIABETES, 3e38)},
            "features.age: 3e+38 is outside the model's bounds [-1, 1]")
    refused(state, "diabetes", {"inputs": [[0.0] * 9 + [-1.5]]}, "features.s6: -1.5 is outside the model's bounds")
    refused(state, "digits", {"inputs": [[0.0] * 63 + [2e15]]}, "features.p63: 2e+15 is outside the model's bounds")
    refused(state, "digits", b'{"inputs": [[1e39' + b", 0" * 63 + b"]]}", "features must be finite numbers")
    assert answer(state, "diabetes", orjson.dumps({"features": DIABETES}))[0] == 200


def test_text_length_and_the_tokenizers_work_per_request_are_bounded(state) -> None:
    """One 1 MB text among 255 short ones cost 1.26 GB that stayed allocated."""
    refused(state, "food-mood", {"texts": ["x" * 1001]}, "texts[0]: at most 1000 characters, got 1001")
    assert answer(state, "food-mood", orjson.dumps({"texts": ["warm soup " * 100] * 100}))[0] == 200  # 1000 x 100
    small = InferenceSettings(max_request_chars=50_000)
    refused(state, "food-mood", {"texts": ["warm soup " * 100] + ["tea"] * 50},
            "51 x 1000 = 51000", settings=small)
    assert answer(state, "food-mood", orjson.dumps({"texts": ["warm soup " * 100] * 50}), settings=small)[0] == 200
