"""Training failures are events (issue 17): a fit past its timeout is stopped, reported as TrainingFailed,
ends the request in flight at once and feeds the retry/backoff policy."""

from __future__ import annotations

import time

import httpx
import pytest

from refit.demo import digits_waves, post_rows
from tests.chaos.helpers import QUIET_TRIGGERS, TOKEN, stored_count, trainer_stats, wait_until

pytestmark = pytest.mark.e2e
FIT_TIMEOUT_S = 2.0
# A forest this size takes minutes on the digits: every fit runs past its timeout.
SLOW = {"class": "sklearn.ensemble.RandomForestClassifier", "params": {"n_estimators": 200_000, "random_state": 0}}


def test_a_fit_past_its_timeout_is_stopped_reported_and_retried_with_backoff(stack_factory, specs_file) -> None:
    stack = stack_factory(specs_file(only=("digits",), digits={
        "estimator": SLOW, "training": {"min_new_samples": None, "fit_timeout_s": FIT_TIMEOUT_S},
        # one retry after a 1.2 s backoff; without the event, the request would wait its 30 minutes
        "triggers": {**QUIET_TRIGGERS, "timeout_minutes": 30, "max_retries": 1, "backoff_minutes": 0.02}}))
    monitor = stack.url("monitor")
    t0 = time.monotonic()
    rows = digits_waves(3)[0]
    with httpx.Client(timeout=30) as client:
        post_rows(client, stack.url("ingest"), "digits", rows)
        wait_until("the trainer stored the rows", lambda: stored_count(trainer_stats(client, stack)) == len(rows))

        def fired() -> list[dict]:
            return client.get(f"{monitor}/v1/models/digits/triggers").json()["fired"]

        print(f"stack up and rows stored at {time.monotonic() - t0:.1f}s")
        started = time.monotonic()
        request_id = client.post(f"{monitor}/v1/models/digits/retrain", headers=TOKEN,
                                 json={"reason": "test"}).json()["request_id"]
        # within minutes (a loaded machine takes a while to start the fit's worker), not the 30 of the timeout
        first = wait_until("the first attempt failed", lambda: (f := fired()) and f[-1]["outcome"] and f[-1],
                           timeout_s=180)
        ended_after = time.monotonic() - started
        assert first["request_id"] == request_id
        assert first["outcome"].startswith("failed: FitTimeoutError: the fit ran past its timeout of 2s")

        # The policy retries after its backoff; the retry's fit starts at once (the first worker was
        # killed, not left running in the one slot) and times out too: then it gives up.
        retry = wait_until("the retry ended", lambda: len(f := fired()) == 2 and f[0]["outcome"] and f[0],
                           timeout_s=60)
        print(f"retry ended {time.monotonic() - started:.1f}s after the request")
        assert retry["retry_of"] == request_id and retry["kind"] == "manual"
        assert retry["evidence"]["failure"] == "timeout" and retry["evidence"]["attempt"] == 2
        state = wait_until("given up", lambda: (s := client.get(
            f"{monitor}/v1/models/digits/triggers").json())["in_flight"] is None and s)
        assert state["fired"][0]["outcome"] == "given up after 2 attempts (the last: training failed, timeout)"
        metrics = client.get(f"{monitor}/metrics").text
        assert 'refit_training_failures_total{failure="timeout",model="digits"} 2.0' in metrics
        assert trainer_stats(client, stack)["trainings"] == 0
        print(f"first failure ended the request {ended_after:.1f}s after it (fit timeout {FIT_TIMEOUT_S}s)")
