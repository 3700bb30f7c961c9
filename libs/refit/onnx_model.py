"""A loaded ONNX model and what it needs to answer: task, classes, input signature.

The artifact is self-describing: the trainer writes the task, the feature order
and the class order into the ONNX metadata, so whoever holds the bytes (and has
checked their digest) can serve them with nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

from refit.errors import ModelLoadError

META_TASK = "refit.task"
META_FEATURES = "refit.features"
META_CLASSES = "refit.classes"
META_INPUT_KIND = "refit.input_kind"


@dataclass(frozen=True)
class Prediction:
    labels: list[str] | None
    probabilities: np.ndarray | None  # rows x classes, columns in ``classes`` order
    values: list[float] | None

    def rows(self, start: int, end: int) -> Prediction:
        """The predictions of rows ``start`` to ``end`` (exclusive)."""
        return Prediction(
            labels=self.labels[start:end] if self.labels is not None else None,
            probabilities=self.probabilities[start:end] if self.probabilities is not None else None,
            values=self.values[start:end] if self.values is not None else None)


class OnnxModel:
    """An onnxruntime session plus the metadata needed to feed and read it."""

    # The tokenizer pads every text of a call to the longest: a call's memory is about 7 bytes
    # times rows x the longest text. A text batch beyond this many characters of that work runs in
    # chunks of similar lengths (one 7 MB text among 5,000 holdout rows took a judgement to 7.7 GB).
    text_work = 1_000_000

    def __init__(self, data: bytes, threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad bytes
            raise ModelLoadError(f"onnxruntime cannot load the model: {exc}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.task: str = meta[META_TASK]
            self.input_kind: str = meta.get(META_INPUT_KIND, "numeric")
            self.features: list[str] = orjson.loads(meta.get(META_FEATURES, "[]"))
            self.classes: list[str] | None = orjson.loads(meta[META_CLASSES]) if META_CLASSES in meta else None
        except (KeyError, orjson.JSONDecodeError) as exc:
            raise ModelLoadError(f"model metadata incomplete: {exc}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(f"expected one input, the model has {len(inputs)}")
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        expected = 2 if self.task == "classification" else 1
        if len(self.output_names) != expected:
            raise ModelLoadError(f"a {self.task} model must have {expected} outputs, "
                                 f"this one has {self.output_names}")

    def run(self, batch: np.ndarray) -> Prediction:
        """Predict for a float32 matrix (numeric) or an object column of strings (text)."""
        if self.input_kind == "text" and len(batch) > 1:
            lengths = np.fromiter(map(len, batch[:, 0]), dtype=np.int64, count=len(batch))
            if len(batch) * int(lengths.max()) > self.text_work:
                return self._run_in_chunks(batch, lengths)
        return self._run(batch)

    def _run_in_chunks(self, batch: np.ndarray, lengths: np.ndarray) -> Prediction:
        """The same predictions, each call over texts of similar length within ``text_work``."""
        order = np.argsort(lengths, kind="stable")
        parts, start = [], 0
        while start < len(order):
            end = start + 1  # sorted by length: a chunk's longest text is its last
            while end < len(order) and (end + 1 - start) * int(lengths[order[end]]) <= self.text_work:
                end += 1
            parts.append(self._run(batch[order[start:end]]))
            start = end
        back = np.empty(len(order), dtype=np.int64)
        back[order] = np.arange(len(order))
        if self.task == "classification":
            labels = [label for part in parts for label in part.labels or []]
            probabilities = np.concatenate([np.asarray(part.probabilities) for part in parts])
            return Prediction(labels=[labels[i] for i in back], probabilities=probabilities[back], values=None)
        values = [value for part in parts for value in part.values or []]
        return Prediction(labels=None, probabilities=None, values=[values[i] for i in back])

    def _run(self, batch: np.ndarray) -> Prediction:
        try:
            outputs = self.session.run(self.output_names, {self.input_name: batch})
        except Exception as exc:
            raise ModelLoadError(f"inference failed: {exc}") from None
        if self.task == "classification":
            labels = [str(v) for v in outputs[0].tolist()]
            return Prediction(labels=labels, probabilities=np.asarray(outputs[1]), values=None)
        return Prediction(labels=None, probabilities=None, values=np.asarray(outputs[0]).reshape(-1).tolist())

    def warm_up(self) -> None:
        """Run one row of zeros (or an empty text) so the first real request pays nothing extra."""
        self.run(self.blank_rows(1))

    def blank_rows(self, n: int) -> np.ndarray:
        if self.input_kind == "text":
            return np.array([[""]] * n, dtype=object)
        return np.zeros((n, len(self.features)), dtype=np.float32)

    def matrix(self, rows: list[dict[str, Any]] | list[str]) -> np.ndarray:
        """Rows of named features (or texts) as the model's input tensor."""
        if self.input_kind == "text":
            return np.array([[t] for t in rows], dtype=object)
        return np.array([[r[f] for f in self.features] for r in rows], dtype=np.float32)  # type: ignore[index]
