"""Factory fixtures shared by the unit tests of the pure core and the contracts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from refit.specs import MetricRule, ModelSpec, SafeguardSpec

SpecFactory = Callable[..., ModelSpec]
PolicyFactory = Callable[..., SafeguardSpec]


def spec_data(**overrides: Any) -> dict[str, Any]:
    """Raw (YAML-shaped) data of a small valid classification spec, with overrides."""
    data: dict[str, Any] = {
        "name": "iris",
        "task": "classification",
        "input": {"kind": "numeric", "features": ["a", "b", "c"]},
        "estimator": {"class": "sklearn.linear_model.LogisticRegression", "params": {"C": 1.0}},
    }
    data.update(overrides)
    return data


@pytest.fixture
def make_spec() -> SpecFactory:
    """Build a validated :class:`ModelSpec`; keyword arguments replace top-level fields."""

    def make(**overrides: Any) -> ModelSpec:
        return ModelSpec.model_validate(spec_data(**overrides))

    return make


@pytest.fixture
def make_policy() -> PolicyFactory:
    """Build a :class:`SafeguardSpec` from ``metric=dict(rule fields)`` keyword arguments.

    ``make_policy(accuracy={}, rmse={"min": 0.1})`` gives two rules in that order.
    """

    def make(**rules: dict[str, Any]) -> SafeguardSpec:
        return SafeguardSpec(metrics=tuple(MetricRule(name=name, **fields) for name, fields in rules.items()))

    return make
