"""The supervisor's restart policy (refit.core.restarts): capped exponential backoff, reset by a long
run, and a give-up after too many fast failures in a row."""

from __future__ import annotations

import doctest

from refit.core import restarts
from refit.core.restarts import Restart, RestartPolicy, after_death


def test_fast_failures_back_off_doubling_up_to_the_cap_then_give_up() -> None:
    policy = RestartPolicy(first_s=0.5, cap_s=3.0, fast_s=10.0, give_up_after=6)
    fast, delays = 0, []
    while True:
        restart = after_death(policy, fast, ran_s=2.0)
        if restart.give_up:
            break
        delays.append(restart.delay_s)
        fast = restart.fast_failures
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert restart == Restart(None, 6)


def test_a_run_longer_than_fast_s_resets_the_count() -> None:
    policy = RestartPolicy(first_s=0.5, fast_s=10.0, give_up_after=3)
    assert after_death(policy, 2, ran_s=9.9).give_up
    assert after_death(policy, 2, ran_s=10.0) == Restart(0.5, 0)
    assert after_death(policy, 0, ran_s=0.0) == Restart(0.5, 1)


def test_the_first_fast_failure_gives_up_when_the_limit_is_one() -> None:
    assert after_death(RestartPolicy(give_up_after=1), 0, ran_s=0.0) == Restart(None, 1)


def test_the_doctest_example_holds() -> None:
    assert doctest.testmod(restarts).failed == 0
