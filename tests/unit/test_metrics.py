"""Quality metrics, compared with values computed by hand on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

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


# --- values one row cannot capture (issue 17, defects 10 and 12) ------------------------------------------------


@pytest.mark.parametrize(("bad", "error"), [(math.nan, 1.5), (math.inf, 1.5), (-math.inf, 1.5), (1e38, 3.75)])
def test_a_prediction_that_is_not_finite_does_not_raise_and_counts_as_the_labels_median(bad, error):
    """A holdout row at 3e38 made a float32 model predict NaN, and scikit-learn raised out of judging."""
    y = [1.0, 2.0, 3.0, 4.0]  # median 2.5; Q1 1.75, Q3 3.25: fences [-2.75, 7.75]
    result = regression_scores(y, [1.0, 2.0, 3.0, bad])

    assert all(math.isfinite(v) for v in result.values())
    assert result["mae"] == pytest.approx(error / 4)  # 1e38 is clipped to the upper fence 7.75


def diabetes_like(n: int = 110, seed: int = 3):
    rng = np.random.default_rng(seed)
    y = rng.uniform(25, 346, n)
    return list(y), list(y + rng.normal(0, 40, n)), list(y + rng.normal(0, 45, n))


def test_one_extreme_label_no_longer_decides_the_verdict():
    """A label of 1e14 (within the default bounds) made every candidate fail the r2 gate for good."""
    from refit.core.bootstrap import paired_bootstrap
    from refit.core.safeguard import judge
    from refit.specs import load_specs
    from tests.conftest import SPECS

    policy = load_specs(SPECS).get("diabetes").safeguard
    y, cand, champ = diabetes_like()
    clean = judge(regression_scores(y, cand), regression_scores(y, champ), policy)
    assert clean.promote is True
    y2, cand2, champ2 = [*y, 1e14], [*cand, 150.0], [*champ, 150.0]
    poisoned_cand, poisoned_champ = regression_scores(y2, cand2), regression_scores(y2, champ2)
    intervals = paired_bootstrap("regression", y2, cand2, champ2, resamples=200, seed=1)
    verdict = judge(poisoned_cand, poisoned_champ, policy, intervals)

    assert verdict.promote is True, verdict.reasons
    assert regression_scores(y, cand)["r2"] > poisoned_cand["r2"] > 0.5  # the row counts, fenced: unfenced r2 is 0
    assert all(math.isfinite(i.low) and math.isfinite(i.high) for i in intervals.values())
    assert intervals["rmse"].observed == pytest.approx(poisoned_cand["rmse"] - poisoned_champ["rmse"], abs=1e-9)


def test_clean_values_are_not_clipped():
    y, cand, _ = diabetes_like()
    assert regression_scores(y, cand) == pytest.approx({
        "rmse": math.sqrt(mean_squared_error(y, cand)), "mae": mean_absolute_error(y, cand), "r2": r2_score(y, cand)},
        abs=1e-12)
