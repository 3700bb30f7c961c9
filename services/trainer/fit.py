"""Fit a model spec's scikit-learn pipeline, convert it to ONNX, and check the conversion.

CPU-bound and synchronous: the service runs it in a worker thread.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import orjson
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.base import is_classifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from refit.errors import ConfigError, ModelLoadError
from refit.events import ConversionCheck
from refit.onnx_model import META_CLASSES, META_FEATURES, META_INPUT_KIND, META_TASK, OnnxModel
from refit.specs import ModelSpec
from services.trainer.training_set import TrainingSet


@dataclass(frozen=True)
class Fitted:
    onnx_bytes: bytes
    classes: list[str] | None
    conversion: ConversionCheck
    rows_trained: int
    rows_held_back: int
    duration_s: float
    seconds: dict[str, float]  # fit, convert, check
    iterations: int | None = None  # the solver's, when the estimator reports them (n_iter_)


def build_pipeline(spec: ModelSpec) -> Pipeline:
    module_name, _, class_name = spec.estimator.class_path.rpartition(".")
    try:
        estimator_cls = getattr(importlib.import_module(module_name), class_name)
        estimator = estimator_cls(**spec.estimator.params)
    except (ImportError, AttributeError, TypeError) as exc:
        raise ConfigError(f"model {spec.name}: cannot build {spec.estimator.class_path}: {exc}") from None
    if spec.input.kind == "text":
        params = dict(spec.estimator.vectorizer)
        if "ngram_range" in params:  # YAML gives a list; scikit-learn takes only a tuple
            params["ngram_range"] = tuple(params["ngram_range"])
        return Pipeline([("tfidf", TfidfVectorizer(**params)), ("model", estimator)])
    steps: list[tuple[str, Any]] = [("scale", StandardScaler())] if spec.estimator.scale else []
    return Pipeline([*steps, ("model", estimator)])


def _convert(spec: ModelSpec, pipeline: Pipeline, classes: list[str] | None) -> bytes:
    if spec.input.kind == "text":
        initial = [("input", StringTensorType([None, 1]))]
        # Lowercasing becomes an ONNX StringNormalizer that asks for a locale; C.UTF-8 exists in
        # every image, en_US.UTF-8 (skl2onnx's default) often does not.
        options: dict[Any, Any] = {TfidfVectorizer: {"tokenexp": r"\b\w\w+\b", "locale": "C.UTF-8"}}
    else:
        initial = [("input", FloatTensorType([None, len(spec.input.features)]))]
        options = {}
    model = pipeline.steps[-1][1]
    if is_classifier(model):
        options[type(model)] = {"zipmap": False}
    proto = to_onnx(pipeline, initial_types=initial, options=options or None)
    meta = {META_TASK: spec.task, META_INPUT_KIND: spec.input.kind,
            META_FEATURES: orjson.dumps(list(spec.input.features)).decode()}
    if classes is not None:
        meta[META_CLASSES] = orjson.dumps(classes).decode()
    onnx.helper.set_model_props(proto, meta)
    return proto.SerializeToString()


def check_conversion(spec: ModelSpec, pipeline: Pipeline, onnx_bytes: bytes, x: np.ndarray) -> ConversionCheck:
    """Compare ONNX with scikit-learn on the same rows: labels, and probabilities or values."""
    tolerance = spec.safeguard.conversion_tolerance
    try:
        got = OnnxModel(onnx_bytes).run(x)
    except ModelLoadError as exc:
        return ConversionCheck(rows=len(x), max_abs_diff=None, tolerance=tolerance, passed=False, error=str(exc))
    if spec.task == "classification":
        want_proba = pipeline.predict_proba(x[:, 0] if spec.input.kind == "text" else x)
        classes = [str(c) for c in pipeline.classes_]
        want_labels = [classes[i] for i in want_proba.argmax(axis=1)]
        diff = float(np.abs(got.probabilities - want_proba).max()) if len(x) else 0.0
        ordered = np.sort(want_proba, axis=1)
        near_tie = (ordered[:, -1] - ordered[:, -2]) < 10 * tolerance if want_proba.shape[1] > 1 else np.zeros(len(x), bool)
        same = [a == b or tie for a, b, tie in zip(got.labels or [], want_labels, near_tie, strict=True)]
        agreement = float(np.mean(same)) if same else 1.0
        return ConversionCheck(rows=len(x), label_agreement=agreement, max_abs_diff=diff, tolerance=tolerance,
                               passed=agreement == 1.0 and diff <= tolerance)
    want = pipeline.predict(x)
    scale = np.maximum(1.0, np.abs(want))
    diff = float((np.abs(np.asarray(got.values) - want) / scale).max()) if len(x) else 0.0
    return ConversionCheck(rows=len(x), max_abs_diff=diff, tolerance=tolerance, passed=diff <= tolerance)


def fit_set(spec: ModelSpec, data: TrainingSet, threads: int = 1) -> Fitted:
    """Fit the spec's pipeline on ``data``, convert it, and check the conversion on the held-back rows.

    BLAS and OpenMP use at most ``threads`` threads. One by default, like inference's sessions:
    on a shared 2-core machine, their default of one thread per core made a 64,000-row digits
    fit 3 to 30 times slower than one thread (the threads spin while waiting for each other),
    and the trainer shares its cores with its own event loop and the other services.
    """
    text = spec.input.kind == "text"
    with threadpool_limits(limits=threads):
        started = time.perf_counter()
        pipeline = build_pipeline(spec)
        pipeline.fit(data.x_train[:, 0] if text else data.x_train, data.y_train)
        classes = [str(c) for c in pipeline.classes_] if spec.task == "classification" else None
        fitted = time.perf_counter()
        onnx_bytes = _convert(spec, pipeline, classes)
        converted = time.perf_counter()
        conversion = check_conversion(spec, pipeline, onnx_bytes, data.x_back)
        checked = time.perf_counter()
    seconds = {"fit": fitted - started, "convert": converted - fitted, "check": checked - converted}
    n_iter = getattr(pipeline.steps[-1][1], "n_iter_", None)
    iterations = int(np.max(n_iter)) if n_iter is not None else None
    return Fitted(onnx_bytes, classes, conversion, data.rows_trained, data.rows_held_back, checked - started,
                  seconds, iterations)
