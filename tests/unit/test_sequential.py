"""The anytime-valid paired test: its error rate holds when checked after every label, and it detects a
stated edge within a measured number of labels (docs/safeguard.md quotes these numbers)."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from refit.core import sequential
from refit.core.sequential import BETS, PairedTest, log_wealth_paths, paired_outcome

ALPHA = 0.05


def test_the_module_examples_hold() -> None:
    assert doctest.testmod(sequential).failed == 0


def null_streams(runs: int, n: int, seed: int, p_win: float = 0.35, p_lose: float = 0.35) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice([1.0, -1.0, 0.0], size=(runs, n), p=[p_win, p_lose, 1 - p_win - p_lose])


@pytest.mark.parametrize(("p_win", "p_lose"), [(0.35, 0.35), (0.5, 0.5), (0.05, 0.05), (0.3, 0.4)],
                         ids=["ties-30%", "no-ties", "ties-90%", "challenger-worse"])
def test_type_one_error_checked_after_every_label_stays_below_alpha(p_win: float, p_lose: float) -> None:
    """1,000 seeded streams of 2,000 labels where the challenger is no better: the share of streams whose
    evidence *ever* reaches 1/alpha (a check after every label) is at most alpha."""
    runs, n = 1000, 2000
    ever = 0
    for chunk in range(10):
        paths = log_wealth_paths(null_streams(runs // 10, n, seed=chunk, p_win=p_win, p_lose=p_lose))
        ever += int(np.sum(paths.max(axis=1) >= math.log(1 / ALPHA)))
    assert ever / runs <= ALPHA, f"{ever} of {runs} null streams crossed"


def test_the_running_test_follows_the_vectorised_path_exactly() -> None:
    stream = null_streams(1, 500, seed=3, p_win=0.5, p_lose=0.3)[0]
    path = log_wealth_paths(stream)
    test = PairedTest(alpha=ALPHA)
    for t, d in enumerate(stream):
        test.update(d)
        assert math.isclose(math.log(test.e_better), path[t], rel_tol=1e-9, abs_tol=1e-9)
    assert test.pairs == 500 and test.wins + test.losses <= 500


def detection_delays(p_win: float, p_lose: float, runs: int = 1000, n: int = 3000) -> np.ndarray:
    paths = log_wealth_paths(null_streams(runs, n, seed=11, p_win=p_win, p_lose=p_lose))
    crossed = paths >= math.log(1 / ALPHA)
    return np.where(crossed.any(axis=1), crossed.argmax(axis=1) + 1, n + 1)


def test_detection_delay_for_a_stated_edge() -> None:
    """Seeded, 1,000 streams each (docs/safeguard.md quotes these): a challenger that wins 45% of the pairs
    and loses 25% (E[d] = 0.2) is found better after a median of 111 labels, 95% of streams within 309;
    E[d] = 0.3 (55%/25%) takes 58 and 157; E[d] = 0.1 (40%/30%) takes 460 and 1,279."""
    for (p_win, p_lose), (median, p95) in {(0.45, 0.25): (111, 309), (0.55, 0.25): (58, 157),
                                           (0.40, 0.30): (460, 1279)}.items():
        delays = detection_delays(p_win, p_lose)
        assert (np.median(delays), int(np.quantile(delays, 0.95))) == (median, p95)


def test_worse_is_the_mirror_and_min_pairs_holds_both_back() -> None:
    test = PairedTest(alpha=ALPHA, min_pairs=30)
    for _ in range(29):
        test.update(-1.0)
    assert test.e_worse >= 1 / ALPHA and not test.worse  # the evidence is there, the minimum is not
    test.update(-1.0)
    assert test.worse and not test.better and test.e_better < 1
    assert test.as_dict()["losses"] == 30 and test.as_dict()["confidence_worse"] > 0.95


def test_paired_outcomes_are_signs_of_the_loss_difference() -> None:
    assert [paired_outcome(1, 0), paired_outcome(0, 1), paired_outcome(2.5, 2.5)] == [1, -1, 0]
    assert paired_outcome(1e300, 3.0) == 1  # one extreme row weighs as one row
    with pytest.raises(ValueError):
        paired_outcome(math.nan, 0)


@pytest.mark.parametrize("bad", [1.5, -2.0, math.nan, math.inf])
def test_outcomes_outside_the_unit_interval_are_refused(bad: float) -> None:
    with pytest.raises(ValueError):
        PairedTest().update(bad)
    with pytest.raises(ValueError):
        log_wealth_paths(np.array([0.0, bad]))


@pytest.mark.parametrize("kwargs", [{"alpha": 0}, {"alpha": 1}, {"min_pairs": 0}, {"bets": (0.5, 1.0)}])
def test_invalid_parameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PairedTest(**kwargs)  # type: ignore[arg-type]


def test_the_default_bets_keep_every_factor_positive() -> None:
    assert all(0 < b < 1 for b in BETS)
