"""Validation of one sample against a model's input schema and bounds.

:func:`validate_sample` is the one rule every edge applies: ingest (a 422 naming the field), the
trainer and the monitor (a dead letter with the reason). The bounds come from the spec's
``bounds`` section (:class:`refit.specs.BoundsSpec`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from refit.errors import SchemaError
from refit.specs import FLOAT32_MAX, ModelSpec

__all__ = ["FLOAT32_MAX", "SampleLike", "ValidSample", "validate_features", "validate_label", "validate_sample",
           "validate_text"]


class SampleLike(Protocol):
    """What a sample carries, whoever decoded it (ingest's request row, a ``SampleIngested``)."""

    @property
    def features(self) -> Any: ...
    @property
    def text(self) -> Any: ...
    @property
    def label(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class ValidSample:
    """A sample's input and label as the models take them."""

    features: dict[str, float] | None
    text: str | None
    label: str | float


def validate_sample(spec: ModelSpec, sample: SampleLike) -> ValidSample:
    """Check one sample against the spec's input kind, schema and bounds, and its label.

    :class:`SchemaError` names the field first (``"features.age: …"``), so an HTTP edge can
    turn it into a 422 location and a consumer into a dead-letter reason.
    """
    if spec.input.kind == "text":
        if sample.features is not None:
            raise SchemaError("features: this model takes text")
        features, text = None, validate_text(spec, sample.text)
    else:
        features, text = validate_features(spec, sample.features), None  # its reason first, as it always was
        if sample.text is not None:
            raise SchemaError("text: this model takes numeric features")
    return ValidSample(features, text, validate_label(spec, sample.label))


def validate_features(spec: ModelSpec, features: Any) -> dict[str, float]:
    """Named numeric features in spec order; a list is taken in spec order too."""
    names = spec.input.features
    if isinstance(features, Mapping):
        if len(features) != len(names) or not all(n in features for n in names):
            missing = [n for n in names if n not in features]
            if missing:
                raise SchemaError(f"features: missing {missing[:5]}{' …' if len(missing) > 5 else ''}")
            known = set(names)
            raise SchemaError(f"features: unknown {sorted(str(k) for k in features if k not in known)[:5]}")
        values = [features[n] for n in names]
    elif isinstance(features, Sequence) and not isinstance(features, (str, bytes)):
        if len(features) != len(names):
            raise SchemaError(f"features: expected {len(names)} values, got {len(features)}")
        values = list(features)
    else:
        raise SchemaError("features: expected an object of named numbers or a list of numbers")
    out: dict[str, float] = {}
    for (name, low, high), value in zip(spec.feature_ranges, values, strict=True):
        if isinstance(value, float) and low <= value <= high:  # the common case, cheaply
            out[name] = value
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaError(f"features.{name}: expected a number, got {type(value).__name__}")
        out[name] = _within(_finite(value, f"features.{name}: must be finite (within ±3.4e38)"), low, high,
                            f"features.{name}")
    return out


def _finite(value: int | float, message: str) -> float:
    """A number the models can hold: finite as a float32 (ONNX and the fitted pipelines use
    float32 inputs; one larger value would make every training of the model fail)."""
    try:
        number = float(value)  # a huge JSON integer overflows here
    except OverflowError:
        raise SchemaError(message) from None
    if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
        raise SchemaError(message)
    return number


def _within(number: float, low: float, high: float, field: str) -> float:
    if not low <= number <= high:
        raise SchemaError(f"{field}: {number:g} is outside the model's bounds [{low:g}, {high:g}]")
    return number


def validate_label(spec: ModelSpec, label: Any) -> str | float:
    """Classification labels become strings (from a closed set if the spec has one); a regression
    label is a number within the spec's label bounds."""
    if spec.task == "regression":
        if isinstance(label, bool) or not isinstance(label, (int, float)):
            raise SchemaError("label: a regression label must be a finite number")
        low, high = spec.bounds.label_range()
        return _within(_finite(label, "label: a regression label must be a finite number"), low, high, "label")
    if isinstance(label, bool) or not isinstance(label, (str, int)) or label == "":
        raise SchemaError("label: a classification label must be a non-empty string or an integer")
    text = str(label)
    if spec.labels is not None and text not in spec.labels:
        raise SchemaError(f"label: {text!r} is not one of {list(spec.labels)}")
    return text


def validate_text(spec: ModelSpec, text: Any) -> str:
    """A non-empty text of at most the spec's ``bounds.max_chars`` characters."""
    if not isinstance(text, str) or not text.strip():
        raise SchemaError("text: expected a non-empty string")
    limit = spec.bounds.max_chars
    if len(text) > limit:
        raise SchemaError(f"text: at most {limit} characters, got {len(text)}")
    return text
