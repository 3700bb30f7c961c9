"""Quality metrics, compared with values computed by hand on tiny inputs."""

from __future__ import annotations

import math

import pytest

from refit.core.metrics import classification_scores, regression_scores, scores


@pytest.mark.parametrize(
    ("y_true", "y_pred", "expected"),
    [
        # per class F1: a 0.5 (P 1/2, R 1/2), b 0.8 (P 2/3, R 1), c 0 (never predicted); support 2, 2, 1
        (["a", "a", "b", "b", "c"], ["a", "b", "b", "b", "a"],
         {"accuracy": 0.6, "f1_macro": 1.3 / 3, "f1_weighted": 2.6 / 5}),
        # a label only in the predictions counts in the macro average with F1 0 and weight 0
        (["a", "b"], ["a", "c"], {"accuracy": 0.5, "f1_macro": 1 / 3, "f1_weighted": 0.5}),
        (["0", "1", "1"], ["0", "1", "1"], {"accuracy": 1.0, "f1_macro": 1.0, "f1_weighted": 1.0}),
        (["x", "y"], ["y", "x"], {"accuracy": 0.0, "f1_macro": 0.0, "f1_weighted": 0.0}),
    ],
)
def test_classification_scores(y_true, y_pred, expected):
    result = classification_scores(y_true, y_pred)

    assert result == pytest.approx(expected, abs=1e-12)
    assert set(result) == {"accuracy", "f1_macro", "f1_weighted"}


@pytest.mark.parametrize(
    ("y_pred", "expected"),
    [
        # y_true 1, 2, 3, 4: mean 2.5, total sum of squares 5
        ([1, 2, 3, 4], {"rmse": 0.0, "mae": 0.0, "r2": 1.0}),
        ([1, 2, 3, 5], {"rmse": 0.5, "mae": 0.25, "r2": 0.8}),  # squared errors 0 0 0 1
        ([2, 2, 3, 6], {"rmse": math.sqrt(1.25), "mae": 0.75, "r2": 0.0}),  # squared errors 1 0 0 4
        ([4, 3, 2, 1], {"rmse": math.sqrt(5), "mae": 2.0, "r2": -3.0}),  # squared errors 9 1 1 9
    ],
)
def test_regression_scores(y_pred, expected):
    result = regression_scores([1.0, 2.0, 3.0, 4.0], y_pred)

    assert result == pytest.approx(expected, abs=1e-12)
    assert set(result) == {"rmse", "mae", "r2"}


def test_scores_are_plain_floats():
    """They go into JSON events and SQLite; numpy scalars must not leak out."""
    for result in (classification_scores(["a", "b"], ["a", "a"]), regression_scores([1.0, 2.0], [1.5, 2.5])):
        assert all(type(v) is float for v in result.values())


def test_scores_dispatches_by_task():
    assert scores("classification", ["a", "b"], ["a", "a"]) == classification_scores(["a", "b"], ["a", "a"])
    assert scores("regression", [1.0, 2.0], [1.5, 2.5]) == regression_scores([1.0, 2.0], [1.5, 2.5])
