"""Hot swap under load: two inference replicas, a bounded load of 4 client threads, 20 rollbacks
cycling over three champions (so every swap fetches, verifies, loads and warms a session; a
rollback to the champion just replaced would reuse the session each replica keeps). No request fails, and every response names a version that was
being served at some moment of its request. The measurement is bench/swap_under_load.py's; this
prints its numbers (p99 latency during swaps against a steady phase of the same run) and asserts
only correctness, never timing."""

from __future__ import annotations

import math

import httpx
import pytest

from tests.chaos.helpers import QUIET_TRIGGERS, champions, swap_bench

pytestmark = pytest.mark.integration


def test_twenty_swaps_under_load_fail_no_request(stack_factory, specs_file) -> None:
    bench = swap_bench()
    stack = stack_factory(specs_file(only=("digits",), digits={"triggers": QUIET_TRIGGERS}), replicas=2)
    with httpx.Client(timeout=30) as client:
        versions, row = champions(client, stack, 3)
    replicas = [stack.url(r) for r in stack.replicas]
    result = bench.measure(stack.url("monitor"), replicas, row, rollbacks=20, clients=4, steady_s=3.0, gap_s=0.1,
                           max_seconds=90, max_requests=100_000, targets=versions)
    first, second, third = versions

    print(f"champions {versions}; 2 replicas, 4 clients\n{bench.report(result)}")
    print("decisions (occurred_at -> version): " + ", ".join(f"{s.decided_at[11:23]} v{s.version}"
                                                             for s in result.swaps))
    assert result.failures == []
    assert result.wrong_version == []
    assert len(result.swaps) == 20
    assert [s.version for s in result.swaps] == (versions * 7)[:20]  # each call swapped the champion
    assert {o.version for o in result.swapping} == {first, second, third}
    assert len(result.steady) > 100 and len(result.swapping) > 100
    # The version check is not vacuous: the other champion, answered while every replica had
    # been serving this one and no rollback was under way, is caught.
    stable = next(s for s in result.swaps if s.version == second)
    stray = bench.Outcome("fabricated", stable.everywhere + 0.01, stable.everywhere + 0.02, 200, first)
    assert bench.wrong_versions([stray], result.intervals) == [stray]
    assert math.isinf(result.intervals[0][1])
