"""Paired bootstrap intervals: the observed differences are sklearn's, seeded, and chunking changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error, r2_score

from refit.core import bootstrap
from refit.core.bootstrap import paired_bootstrap


def classes(n: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 6, n)
    cand = np.where(rng.random(n) < 0.85, y, rng.integers(0, 7, n))  # may predict a label never true
    champ = np.where(rng.random(n) < 0.80, y, rng.integers(0, 6, n))
    return [str(v) for v in y], [str(v) for v in cand], [str(v) for v in champ]


def values(n: int, seed: int) -> tuple[list[float], list[float], list[float]]:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    return list(y), list(y + rng.normal(size=n) * 0.3), list(y + rng.normal(size=n) * 0.4)


@pytest.mark.parametrize("n", [5, 300, 2000])
def test_observed_classification_differences_are_sklearns(n: int) -> None:
    y, cand, champ = classes(n, n)
    got = paired_bootstrap("classification", y, cand, champ, resamples=50, seed=1)
    for metric, score in (("accuracy", accuracy_score), ("f1_macro", lambda t, p: f1_score(t, p, average="macro")),
                          ("f1_weighted", lambda t, p: f1_score(t, p, average="weighted"))):
        assert got[metric].observed == pytest.approx(score(y, cand) - score(y, champ), abs=1e-12), metric


@pytest.mark.parametrize("n", [5, 300, 2000])
def test_observed_regression_differences_are_sklearns(n: int) -> None:
    y, cand, champ = values(n, n)
    got = paired_bootstrap("regression", y, cand, champ, resamples=50, seed=1)
    for metric, score in (("rmse", lambda t, p: mean_squared_error(t, p) ** 0.5), ("mae", mean_absolute_error),
                          ("r2", r2_score)):
        assert got[metric].observed == pytest.approx(score(y, cand) - score(y, champ), abs=1e-12), metric


@pytest.mark.parametrize("task,data", [("classification", classes(700, 3)), ("regression", values(700, 3))])
def test_chunk_size_never_changes_an_interval(task: str, data: tuple[list, list, list], monkeypatch) -> None:
    """Resamples are drawn in chunks from one generator: the same indices whatever the chunk size."""
    results = []
    for chunk in (1, 7, 100, 1000):
        monkeypatch.setattr(bootstrap, "_CHUNK", chunk)
        results.append(paired_bootstrap(task, *data, resamples=250, seed=11))
    assert all(r == results[0] for r in results[1:])


def test_same_seed_same_interval_and_another_seed_another() -> None:
    y, cand, champ = classes(500, 4)
    first = paired_bootstrap("classification", y, cand, champ, resamples=200, seed=5)
    assert paired_bootstrap("classification", y, cand, champ, resamples=200, seed=5) == first
    assert paired_bootstrap("classification", y, cand, champ, resamples=200, seed=6) != first


def test_the_interval_brackets_a_clear_improvement_away_from_zero() -> None:
    y, champ, _ = classes(2000, 8)
    got = paired_bootstrap("classification", y, y, champ, resamples=400, seed=2)  # a perfect candidate
    interval = got["accuracy"]
    assert 0 < interval.low <= interval.observed <= interval.high and interval.resamples == 400


def test_mismatched_or_empty_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        paired_bootstrap("classification", [], [], [])
    with pytest.raises(ValueError):
        paired_bootstrap("regression", [1.0, 2.0], [1.0], [1.0, 2.0])
