"""Every service exports Prometheus metrics whose values agree with what happened."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from refit.demo import digits_waves, post_rows, wait_for_decisions
from tests.chaos.helpers import wait_until

pytestmark = pytest.mark.integration


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_tell_the_story_of_a_promotion(stack_factory, specs_file) -> None:
    stack = stack_factory(specs_file(only=("digits",)))
    rows = digits_waves(3)[0]
    with httpx.Client(timeout=30) as client:
        post_rows(client, stack.url("ingest"), "digits", rows)
        wait_for_decisions(client, stack.url("monitor"), "digits", 1)
        inference = stack.url("inference-0")
        deadline = time.monotonic() + 30
        while client.get(f"{inference}/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        for row in rows[:7]:
            assert client.post(f"{inference}/v1/models/digits/predict", json={"features": row["features"]}
                               ).status_code == 200
        assert client.post(f"{inference}/v1/models/digits/predict", json={"features": [1]}).status_code == 422
        stored = client.get(f"{stack.url('trainer')}/v1/stats").json()["samples"]["digits"]

        bad = client.post(f"{stack.url('ingest')}/v1/samples:batch",
                          json={"model": "digits", "samples": [{"features": [0.0], "label": "1"}] * 3})
        assert bad.status_code == 422

    # The monitor's gauges are refreshed on its periodic tick: wait for the tick that follows the promotion.
    monitor = wait_until("the monitor's gauges show the champion", lambda: (
        found if value(found := samples(stack.url("monitor")), "refit_champion_version", model="digits") == 1
        and value(found, "refit_model_age_seconds", model="digits") > 0 else None))
    ingest, trainer, served = (samples(stack.url(n)) for n in ("ingest", "trainer", "inference-0"))
    assert value(ingest, "refit_samples_ingested_total", model="digits") == len(rows)
    assert value(ingest, "refit_samples_rejected_total", model="digits") == 3
    assert value(trainer, "refit_samples_stored_total", model="digits") == stored
    assert value(trainer, "refit_trainings_total", model="digits", outcome="success") >= 1
    assert value(trainer, "refit_training_duration_seconds_count", model="digits") >= 1
    assert value(trainer, "refit_records_consumed_total", consumer="trainer") >= len(rows)
    lag = ("refit_consumer_lag_records", (("consumer", "trainer"), ("topic", "refit.samples")))
    assert trainer.get(lag) == 0  # exported, and the trainer read every sample
    assert value(monitor, "refit_decisions_total", model="digits", decision="promoted") == 1
    assert value(monitor, "refit_decisions_total", model="digits", decision="rejected") == 0
    assert 0 < value(monitor, "refit_model_age_seconds", model="digits") < 600
    assert value(served, "refit_inference_requests_total", model="digits", version="1", status="200") == 7
    assert value(served, "refit_inference_latency_seconds_count", model="digits", version="1") == 7
    assert value(served, "refit_inference_requests_total", model="digits", version="none", status="422") == 1
    assert value(served, "refit_swaps_total", model="digits") == 1
    assert value(served, "refit_swap_duration_seconds_count", model="digits") == 1
    assert value(served, "refit_swap_duration_seconds_sum", model="digits") > 0
    # nothing refused, nothing unacknowledged: present, and zero
    assert ("refit_broker_unavailable_total", ()) in ingest and value(ingest, "refit_broker_unavailable_total") == 0
    assert not [k for k in served if k[0] == "refit_decisions_refused_total" and served[k]]
    assert not [k for k in trainer if k[0] == "refit_dead_lettered_total" and trainer[k]]
