"""Requests that reach the model in the same event-loop pass share one model call; each gets
exactly its own rows back, and a failing joint call leaves each request its own answer or error."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from refit.errors import ModelLoadError
from refit.onnx_model import Prediction
from services.inference.predict import Coalesce


class Doubling:
    """A model whose label for a row is twice its first value; rows with a negative first value fail."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def run(self, batch: np.ndarray) -> Prediction:
        self.calls.append(len(batch))
        if (batch[:, 0] < 0).any():
            raise ModelLoadError("negative input")
        return Prediction(labels=[str(int(2 * v)) for v in batch[:, 0]], probabilities=batch * 2, values=None)


def rows(*firsts: float) -> np.ndarray:
    return np.array([[f, 0.0] for f in firsts], dtype=np.float32)


async def gather(coalesce: Coalesce, model: Any, batches: list[np.ndarray]) -> list[Any]:
    return await asyncio.gather(*(coalesce.run(model, b) for b in batches), return_exceptions=True)


def test_requests_of_one_pass_share_one_call_and_get_their_own_rows() -> None:
    model = Doubling()
    results = asyncio.run(gather(Coalesce(), model, [rows(1), rows(2, 3), rows(4), rows(5, 6, 7)]))
    assert model.calls == [7]
    assert [r.labels for r in results] == [["2"], ["4", "6"], ["8"], ["10", "12", "14"]]
    assert [r.probabilities.shape for r in results] == [(1, 2), (2, 2), (1, 2), (3, 2)]


def test_a_lone_request_is_one_call_of_its_own_rows() -> None:
    model = Doubling()
    [result] = asyncio.run(gather(Coalesce(), model, [rows(1, 2)]))
    assert model.calls == [2] and result.labels == ["2", "4"]


def test_a_failing_joint_call_gives_each_request_its_own_answer_or_error() -> None:
    model = Doubling()
    results = asyncio.run(gather(Coalesce(), model, [rows(1), rows(-1), rows(3)]))
    assert model.calls == [3, 1, 1, 1]  # the joint call, then each alone
    assert results[0].labels == ["2"] and results[2].labels == ["6"]
    assert isinstance(results[1], ModelLoadError)


def test_different_models_are_never_mixed() -> None:
    first, second = Doubling(), Doubling()

    async def both() -> list[Any]:
        coalesce = Coalesce()
        return await asyncio.gather(coalesce.run(first, rows(1)), coalesce.run(second, rows(2)),
                                    coalesce.run(first, rows(3)))

    results = asyncio.run(both())
    assert first.calls == [2] and second.calls == [1]
    assert [r.labels for r in results] == [["2"], ["4"], ["6"]]


def test_passes_are_not_joined() -> None:
    model = Doubling()

    async def two_passes() -> None:
        coalesce = Coalesce()
        await coalesce.run(model, rows(1))
        await coalesce.run(model, rows(2))

    asyncio.run(two_passes())
    assert model.calls == [1, 1]


@pytest.mark.parametrize("error", [RuntimeError("a bug"), ModelLoadError("bad")])
def test_an_error_of_a_lone_request_reaches_it(error: Exception) -> None:
    class Failing:
        def run(self, batch: np.ndarray) -> Prediction:
            raise error

    [result] = asyncio.run(gather(Coalesce(), Failing(), [rows(1)]))
    assert result is error
