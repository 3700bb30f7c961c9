"""The core loop over real processes: samples → v1 promoted → served → more samples → v2 judged → hot swap."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest

from refit.demo import digits_waves, post_rows, wait_for_decisions

pytestmark = pytest.mark.e2e


class SteadyClient(threading.Thread):
    """Sends predictions back to back until stopped (bounded by count and time); records every outcome."""

    def __init__(self, url: str, row: dict[str, float], max_requests: int = 50_000, max_seconds: float = 180) -> None:
        super().__init__(daemon=True)
        self.url, self.row = url, row
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.halt = threading.Event()
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[int] = Counter()
        self.errors: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=10) as client:
            while not self.halt.is_set() and time.monotonic() < deadline and self.sent < self.max_requests:
                try:
                    response = client.post(self.url, json={"features": self.row})
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                self.statuses[response.status_code] += 1
                if response.status_code == 200:
                    self.versions[response.json()["version"]] += 1

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)


def wait_until_served(client: httpx.Client, url: str, row: dict[str, float], version: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.post(url, json={"features": row})
        if response.status_code == 200 and response.json()["version"] == version:
            return
        time.sleep(0.1)
    raise AssertionError(f"inference did not serve v{version} within {timeout_s}s")


@pytest.mark.brokers("kafka", "embedded")
def test_samples_to_promotion_to_hot_swap_without_a_failed_request(stack_factory, specs_file) -> None:
    stack = stack_factory(specs_file(only=("digits",)))
    # Two waves of 400 rows (about 320 each for training; the trainer trains per 300 new rows): v1
    # learns from the first, v2 from both, exactly one training each. Twice the data makes v2 at
    # least as good on the shared holdout (within the 1% tolerance), so the promotion, and with it
    # the hot swap under load, always happens.
    rows = [row for wave in digits_waves(3) for row in wave]
    waves = [rows[:400], rows[400:800]]
    predict = f"{stack.url('inference-0')}/v1/models/digits/predict"
    probe = waves[0][0]["features"]
    with httpx.Client(timeout=30) as client:
        assert client.get(f"{stack.url('inference-0')}/readyz").status_code == 503  # no champion yet

        post_rows(client, stack.url("ingest"), "digits", waves[0])
        first = wait_for_decisions(client, stack.url("monitor"), "digits", 1)[0]
        assert first["event_type"] == "ModelPromoted", first["reasons"]
        assert first["version"] == 1 and first["champion_scores"] is None
        assert first["reasons"][0].startswith("first model")
        assert {c["kind"] for c in first["checks"]} == {"gate"}
        wait_until_served(client, predict, probe, 1)
        assert client.get(f"{stack.url('inference-0')}/readyz").status_code == 200

        steady = SteadyClient(predict, probe)
        steady.start()
        try:
            time.sleep(1.0)
            post_rows(client, stack.url("ingest"), "digits", waves[1])
            second = wait_for_decisions(client, stack.url("monitor"), "digits", 2)[0]
            assert second["version"] == 2 and second["champion_version"] == 1
            # Candidate and champion were scored on the very same holdout rows.
            assert set(second["champion_scores"]) == set(second["candidate_scores"]) == {
                "accuracy", "f1_macro", "f1_weighted"}
            assert second["holdout"]["size"] > first["holdout"]["size"]
            assert len(second["holdout"]["fingerprint"]) == 64
            tolerance = [c for c in second["checks"] if c["kind"] == "tolerance"]
            assert len(tolerance) == 3 and all(c["champion"] is not None for c in tolerance)
            assert second["event_type"] == "ModelPromoted", second["reasons"]
            wait_until_served(client, predict, probe, 2)
            time.sleep(1.0)  # v2 serves the steady client a while too
        finally:
            steady.halt.set()
            steady.join(30)

    print(f"steady client: {steady.sent} requests, statuses {dict(steady.statuses)}, "
          f"versions {dict(steady.versions)}")
    assert steady.errors == []
    assert set(steady.statuses) == {200}
    assert steady.sent > 100
    assert set(steady.versions) == {1, 2}
