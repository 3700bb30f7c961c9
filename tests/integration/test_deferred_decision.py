"""A holdout too small to judge defers the decision instead of deciding on noise."""

from __future__ import annotations

import time

import httpx
import pytest

from refit.demo import digits_waves, post_rows, wait_for_decisions
from tests.chaos.helpers import log_events, wait_until

pytestmark = pytest.mark.integration
DEFERRED = "decision deferred: holdout too small"


def test_a_candidate_waits_until_the_holdout_is_big_enough(stack_factory, specs_file) -> None:
    stack = stack_factory(specs_file(only=("digits",), digits={"safeguard": {"min_holdout": 300}}))
    monitor = stack.url("monitor")
    waves = digits_waves(3)
    with httpx.Client(timeout=30) as client:
        post_rows(client, stack.url("ingest"), "digits", waves[0])
        deadline = time.monotonic() + 60
        while not client.get(f"{monitor}/v1/models/digits/versions").json() and time.monotonic() < deadline:
            time.sleep(0.2)
        # the monitor looked at the candidate and deferred it (a positive signal, not a pause)
        wait_until("the monitor deferred v1", lambda: [r for r in log_events(stack, "monitor", DEFERRED)
                                                       if r["model"] == "digits" and r["version"] == 1])
        versions = client.get(f"{monitor}/v1/models/digits/versions").json()
        model = client.get(f"{monitor}/v1/models/digits").json()
        assert [v["status"] for v in versions] == ["pending"]
        assert model["holdout_size"] < 300 and model["champion"] is None
        assert client.get(f"{monitor}/v1/models/digits/decisions").json() == []

        for wave in waves[1:]:
            post_rows(client, stack.url("ingest"), "digits", wave)
        decisions = wait_for_decisions(client, monitor, "digits", 1)
    first = decisions[-1]
    assert first["version"] == 1
    assert first["holdout"]["size"] >= 300
