"""One owner pauses automatic retraining: the monitor's stop pauses the trainer's own path too (issue 17, defect 3)."""

from __future__ import annotations

import httpx
import pytest

from refit.demo import digits_waves, post_rows
from tests.chaos.helpers import QUIET_TRIGGERS, TOKEN, trainer_stats, wait_until

pytestmark = pytest.mark.e2e


def test_a_stopped_scheduler_stops_the_trainers_own_sample_count_path(stack_factory, specs_file) -> None:
    # The spec's training.min_new_samples (300 training rows) makes the trainer train on its own;
    # the monitor's triggers are quiet, so that path is the only one that could train.
    stack = stack_factory(specs_file(only=("digits",), digits={"training": {"min_new_samples": 300},
                                                               "triggers": QUIET_TRIGGERS}))
    monitor = stack.url("monitor")
    rows = digits_waves(3)[0]
    with httpx.Client(timeout=30) as client:
        assert client.post(f"{monitor}/v1/scheduler/stop", headers=TOKEN).json() == {"running": False}
        post_rows(client, stack.url("ingest"), "digits", rows)
        # The monitor counted every sample...
        wait_until("the monitor counted the samples", lambda: client.get(
            f"{monitor}/v1/models/digits/triggers").json()["new_samples"] == len(rows))
        # ...and the trainer stored them and either held its training (paused) or trained (the defect).
        def held_or_trained() -> dict | None:
            stats = trainer_stats(client, stack)
            return stats if stats["held"].get("digits") or stats["trainings"] else None

        stats = wait_until("the trainer held or trained", held_or_trained)
        assert stats["trainings"] == 0 and "automatic retraining is paused" in stats["held"]["digits"]
        assert client.get(f"{monitor}/v1/models/digits/versions").json() == []

        assert client.post(f"{monitor}/v1/scheduler/start", headers=TOKEN).json() == {"running": True}
        versions = wait_until("a candidate after the start", lambda: client.get(
            f"{monitor}/v1/models/digits/versions").json(), timeout_s=90)
        assert versions[0]["trigger"] == "sample_count"
        assert trainer_stats(client, stack)["held"] == {}
