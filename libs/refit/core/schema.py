"""Validation of one sample against a model's input schema."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from refit.errors import SchemaError

FLOAT32_MAX = 3.4028234663852886e38
from refit.specs import ModelSpec


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
    for name, value in zip(names, values, strict=True):
        if isinstance(value, float) and -FLOAT32_MAX <= value <= FLOAT32_MAX:  # the common case, cheaply
            out[name] = value
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaError(f"features.{name}: expected a number, got {type(value).__name__}")
        out[name] = _finite(value, f"features.{name}: must be finite (within ±3.4e38)")
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


def validate_label(spec: ModelSpec, label: Any) -> str | float:
    """Classification labels become strings (from a closed set if the spec has one)."""
    if spec.task == "regression":
        if isinstance(label, bool) or not isinstance(label, (int, float)):
            raise SchemaError("label: a regression label must be a finite number")
        return _finite(label, "label: a regression label must be a finite number")
    if isinstance(label, bool) or not isinstance(label, (str, int)) or label == "":
        raise SchemaError("label: a classification label must be a non-empty string or an integer")
    text = str(label)
    if spec.labels is not None and text not in spec.labels:
        raise SchemaError(f"label: {text!r} is not one of {list(spec.labels)}")
    return text


def validate_text(spec: ModelSpec, text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise SchemaError("text: expected a non-empty string")
    return text
