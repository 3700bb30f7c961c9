"""SIGKILL of the trainer in the middle of a training run: the request survives, a candidate still
arrives, and the dataset is exactly what it was (nothing lost, nothing doubled)."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from refit.demo import digits_waves, post_rows
from tests.chaos.helpers import (QUIET_TRIGGERS, log_events, retrain, stored_count, stored_ids, trainer_stats,
                                 wait_until)

pytestmark = pytest.mark.integration

# Slow enough to be killed in the middle of (about 4 s to fit and convert on 2 cores), trained
# only on request.
SLOW = {"estimator": {"class": "sklearn.ensemble.RandomForestClassifier",
                      "params": {"n_estimators": 300, "random_state": 0}, "scale": False},
        "training": {"min_new_samples": None}, "triggers": QUIET_TRIGGERS}


def test_sigkill_during_training_loses_neither_the_request_nor_a_row(stack_factory, specs_file) -> None:
    stack = stack_factory(specs_file(only=("digits",), digits=SLOW))
    rows = [row for wave in digits_waves(3) for row in wave]
    with httpx.Client(timeout=30) as client:
        post_rows(client, stack.url("ingest"), "digits", rows)
        stats = wait_until("the trainer stored every row",
                           lambda: s if stored_count(s := trainer_stats(client, stack)) == len(rows) else None)
        training_ids, holdout_ids = stored_ids(stack)
        assert stats["trainings"] == 0

        request_id = retrain(client, stack, "chaos: kill me while I train")
        started = wait_until("the trainer started fitting",
                             lambda: [e for e in log_events(stack, "trainer", "training")
                                      if e.get("request_id") == request_id], interval_s=0.02)
        assert trainer_stats(client, stack)["trainings"] == 0  # no new training finished yet
        killed_at = time.monotonic()
        stack.stop_process("trainer", signal.SIGKILL)
        # The kill landed in the middle of the run: nothing was published.
        assert log_events(stack, "trainer", "candidate published") == []
        assert client.get(f"{stack.url('monitor')}/v1/models/digits/versions").json() == []

        stack.restart("trainer")  # already dead: starts it and waits until it answers
        version = wait_until("a candidate for the request", lambda: [
            v for v in client.get(f"{stack.url('monitor')}/v1/models/digits/versions").json()
            if v["retrain_request_id"] == request_id], timeout_s=120)[0]
        recovered_s = time.monotonic() - killed_at
        after = trainer_stats(client, stack)
        versions = client.get(f"{stack.url('monitor')}/v1/models/digits/versions").json()

    print(f"rows posted {len(rows)}; trainer stored {len(training_ids)} training + {len(holdout_ids)} holdout "
          f"before the kill, {after['samples']['digits']} + {after['holdout_skipped']['digits']} after; "
          f"killed {started[0]['rows']}-row fit mid-run, candidate v{version['version']} "
          f"({version['training']['rows_seen']} rows seen) {recovered_s:.1f}s after the kill; "
          f"trainings after restart {after['trainings']}, versions {len(versions)}")
    assert (after["samples"]["digits"], after["holdout_skipped"]["digits"]) == (
        stats["samples"]["digits"], stats["holdout_skipped"]["digits"])
    assert [sorted(ids) for ids in stored_ids(stack)] == [sorted(training_ids), sorted(holdout_ids)]
    assert len(set(training_ids) | set(holdout_ids)) == len(rows)
    assert version["training"]["rows_seen"] == len(training_ids)  # the whole dataset, once
    assert len(versions) == 1 and after["trainings"] == 1  # one request, one candidate

