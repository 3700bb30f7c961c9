"""A text batch whose padded tokenizer work (rows x the longest text) exceeds ``OnnxModel.text_work``
runs in chunks of similar lengths, with the very same predictions in the same order (issue 17, defect 11:
one 7 MB text in a holdout of 5,000 rows took a judgement to 7.7 GB)."""

from __future__ import annotations

import numpy as np
import pytest

from refit.datasets import sample_rows
from refit.onnx_model import OnnxModel, Prediction
from refit.specs import load_specs
from tests.conftest import SPECS
from tests.support.training import Row, fit


class Counted(OnnxModel):
    """The real model, recording the rows of each onnxruntime call."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.calls: list[int] = []

    def _run(self, batch: np.ndarray) -> Prediction:
        self.calls.append(len(batch))
        return super()._run(batch)


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    data = sample_rows("food-mood", 7)
    rows = [Row(str(i), None, r["text"], str(r["label"]), None, "") for i, r in enumerate(data)]
    return fit(load_specs(SPECS).get("food-mood"), rows).onnx_bytes


def test_a_long_text_among_short_ones_is_scored_in_chunks_with_the_same_answers(onnx_bytes: bytes) -> None:
    texts = [r["text"] for r in sample_rows("food-mood", 3)][:300]
    texts.insert(150, "warm soup and cold beer " * 2000)  # 48,000 characters, x 301 rows: 14.4 million
    chunked, one_call = Counted(onnx_bytes), Counted(onnx_bytes)
    one_call.text_work = 10**9
    batch = chunked.matrix(texts)

    got, expected = chunked.run(batch), one_call.run(batch)
    assert one_call.calls == [301]
    assert sum(chunked.calls) == 301 and chunked.calls[-1] == 1  # the long text alone, the short ones together
    assert max(chunked.calls) * 65 <= chunked.text_work  # the bundled texts have at most 65 characters
    assert got.labels == expected.labels and len(got.labels) == 301
    np.testing.assert_allclose(got.probabilities, expected.probabilities, rtol=0, atol=1e-6)


def test_a_batch_within_the_budget_is_one_call(onnx_bytes: bytes) -> None:
    model = Counted(onnx_bytes)
    model.run(model.matrix(["warm soup " * 100] * 1000))  # 1000 x 1000 = the default budget exactly
    assert model.calls == [1000]
