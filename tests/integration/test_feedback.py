"""Query log and feedback: predictions published by inference join labels posted later (or earlier).

Real processes on the real embedded broker: v1 is promoted from the digits demo, then
predictions with known request ids are labeled (some wrongly on purpose) and the
monitor's live view must report exactly what was joined.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from refit import topics
from refit.demo import digits_waves, post_rows, wait_for_decisions
from refit.events import PredictionServed, parse_event
from refit.stack import Stack
from tests.chaos.helpers import wait_until

pytestmark = pytest.mark.integration

# One candidate from the first wave (about 480 of its 599 rows are training rows), none from the
# few feedback labels after it.
ONE_TRAINING = {"digits": {"training": {"min_new_samples": 400}}}
PUBLISH = {"REFIT_INFERENCE_PUBLISH_PREDICTIONS": "true"}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def promoted_stack(stack_factory: Callable[..., Stack], specs_file: Callable[..., Any],
                   env: dict[str, str]) -> tuple[Stack, dict[str, Any]]:
    """A stack serving v1 of digits, and the decision that promoted it."""
    stack = stack_factory(specs_file(only=("digits",), **ONE_TRAINING), env=env)
    with httpx.Client(timeout=30) as client:
        post_rows(client, stack.url("ingest"), "digits", digits_waves(3)[0])
        decision = wait_for_decisions(client, stack.url("monitor"), "digits", 1)[0]
        assert decision["event_type"] == "ModelPromoted" and decision["version"] == 1, decision["reasons"]
        deadline = time.monotonic() + 60
        while client.get(f"{stack.url('inference-0')}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "inference never served v1"
            time.sleep(0.2)
    return stack, decision


def wait_live(client: httpx.Client, monitor: str, done: Callable[[dict[str, Any]], bool],
              timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        live = client.get(f"{monitor}/v1/models/digits/live").json()
        if done(live) or time.monotonic() > deadline:
            return live  # type: ignore[no-any-return]
        time.sleep(0.3)


def label(row: dict[str, Any], value: str, request_id: str, key: str) -> dict[str, Any]:
    return {"features": row["features"], "label": value, "request_id": request_id, "idempotency_key": key}


def wrong(value: str) -> str:
    return str((int(value) + 1) % 10)


async def published_predictions(bootstrap: str, wanted: set[str], timeout_s: float = 30) -> dict[str, PredictionServed]:
    consumer = AIOKafkaConsumer(topics.PREDICTIONS, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found: dict[str, PredictionServed] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while not wanted <= set(found) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    event = parse_event(record.value or b"", PredictionServed)
                    assert isinstance(event, PredictionServed)
                    found[event.request_id] = event
    finally:
        await consumer.stop()
    return found


def test_labels_join_predictions_in_either_order_and_live_reports_exact_accuracy(stack_factory, specs_file) -> None:
    stack, decision = promoted_stack(stack_factory, specs_file, PUBLISH)
    monitor, predict = stack.url("monitor"), f"{stack.url('inference-0')}/v1/models/digits/predict"
    rows = digits_waves(3)[1][:20]  # never posted before: unseen by v1
    outcomes: list[bool] = []  # per joined row, whether its label matches what was predicted
    with httpx.Client(timeout=30) as client:
        # A label that arrives before its prediction waits for it.
        early = rows[0]
        assert client.post(f"{stack.url('ingest')}/v1/samples:batch", json={
            "model": "digits", "samples": [label(early, early["label"], "early", "fb-early")]}).status_code == 202
        assert wait_live(client, monitor, lambda live: live["pending_labels"] == 1)["pending_labels"] == 1
        response = client.post(predict, json={"features": early["features"]}, headers={"X-Request-ID": "early"})
        assert response.status_code == 200 and response.headers["x-request-id"] == "early"
        outcomes.append(response.json()["predictions"][0]["label"] == early["label"])

        # Single-row predictions, labeled with what was predicted except three labeled wrong on purpose.
        labels = []
        for i in range(1, 11):
            response = client.post(predict, json={"features": rows[i]["features"]}, headers={"X-Request-ID": f"one-{i}"})
            body = response.json()
            assert response.status_code == 200 and body["request_id"] == f"one-{i}" and body["version"] == 1
            predicted = body["predictions"][0]["label"]
            value = wrong(predicted) if i in (2, 5, 7) else predicted
            labels.append(label(rows[i], value, f"one-{i}", f"fb-one-{i}"))
            outcomes.append(value == predicted)

        # A batch of three rows: rows join as "<id>#<row>"; row 1 stays unlabeled.
        instances = [rows[i]["features"] for i in (11, 12, 13)]
        response = client.post(predict, json={"instances": instances}, headers={"X-Request-ID": "many"})
        batch = [p["label"] for p in response.json()["predictions"]]
        labels += [label(rows[11], batch[0], "many#0", "fb-many-0"), label(rows[13], wrong(batch[2]), "many#2", "fb-many-2")]
        outcomes += [True, False]

        # Pending: a prediction never labeled, and one without a client request id (a UUID is made).
        assert client.post(predict, json={"features": rows[14]["features"]},
                           headers={"X-Request-ID": "lonely"}).status_code == 200
        anonymous = client.post(predict, json={"inputs": [list(rows[15]["features"].values())]})
        assert UUID.match(anonymous.json()["request_id"]) and anonymous.headers["x-request-id"] == \
            anonymous.json()["request_id"]

        # Redeliveries and a second, contradicting label of a joined row change nothing; a label
        # for a prediction that never happened waits. All in one batch, in order, on one partition.
        labels += [labels[1], label(rows[1], wrong(labels[0]["label"]), "one-1", "fb-one-1-again"),
                   label(rows[16], "3", "never-predicted", "fb-never")]
        assert client.post(f"{stack.url('ingest')}/v1/samples:batch",
                           json={"model": "digits", "samples": labels}).status_code == 202

        # The three predictions left unlabeled travel on another topic than the labels: wait for them too.
        live = wait_live(client, monitor, lambda live: live["joined"] >= len(outcomes) and live["pending_labels"] == 1
                         and live["conflicting_labels"] >= 1 and live["pending_predictions"] >= 3)
        # The contradicting label is not silently dropped: counted, in the API and the metrics.
        metric = 'refit_feedback_conflicting_labels{model="digits"} 1.0'
        wait_until("the conflict in the metrics", lambda: metric in client.get(f"{monitor}/metrics").text)
        # Nothing more may arrive: a later label (for a prediction that never happened) on the same
        # partition is counted only after everything before it was handled; then nothing else joined.
        assert client.post(f"{stack.url('ingest')}/v1/samples", json={
            "model": "digits", **label(rows[17], "4", "never-predicted-either", "fb-sentinel")}).status_code == 202
        after = wait_live(client, monitor, lambda later: later["pending_labels"] == 2)
        assert after["pending_labels"] == 2 and after["joined"] == live["joined"]

    accuracy = sum(outcomes) / len(outcomes)
    assert len(outcomes) == 13
    assert (live["joined"], live["pending_predictions"], live["pending_labels"], live["conflicting_labels"]) == \
        (13, 3, 1, 1)
    assert [(v["version"], v["champion"], v["joined"], v["window"], v["live_scores"]) for v in live["versions"]] == [
        (1, True, 13, 13, {"accuracy": pytest.approx(accuracy)})]
    assert live["champion"] == {"version": 1, "holdout_scores": decision["candidate_scores"],
                                "live_scores": {"accuracy": pytest.approx(accuracy)}}

    # What inference published: model, version, digest, request id, the rows as sent, the outputs.
    anonymous_id = anonymous.json()["request_id"]
    events = asyncio.run(published_predictions(stack.bootstrap, {"many", "lonely", anonymous_id}))
    assert set(events) == {"early", *(f"one-{i}" for i in range(1, 11)), "many", "lonely", anonymous_id}
    stats = httpx.get(f"{stack.url('inference-0')}/v1/stats", timeout=10).json()["predictions"]
    assert (stats["enqueued"], stats["published"], stats["dropped_queue_full"]) == (14, 14, 0)
    many = events["many"]
    assert (many.model, many.version, many.digest, many.replica_id) == ("digits", 1, decision["digest"], "inference-0")
    assert many.inputs == instances and many.labels == batch and many.values is None
    assert many.classes == [str(d) for d in range(10)] and len(many.probabilities or []) == 3
    assert orjson.loads(many.to_bytes())["event_type"] == "PredictionServed"


def test_a_bad_request_id_is_a_400_and_errors_carry_the_request_id(stack_factory, specs_file) -> None:
    stack = stack_factory(specs_file(only=("digits",)))
    predict = f"{stack.url('inference-0')}/v1/models/digits/predict"
    with httpx.Client(timeout=30) as client:
        for bad in ("x" * 201, "tab\there"):
            response = client.post(predict, json={"features": [0.0] * 64}, headers={"X-Request-ID": bad})
            assert response.status_code == 400 and "X-Request-ID" in response.json()["detail"]
        no_champion = client.post(predict, json={"features": [0.0] * 64}, headers={"X-Request-ID": "r-1"})
        assert no_champion.status_code == 503 and no_champion.headers["x-request-id"] == "r-1"
        assert client.get(f"{stack.url('inference-0')}/v1/stats").json()["predictions"] == {"publishing": False}


def test_predictions_neither_fail_nor_wait_when_the_broker_is_gone(stack_factory, specs_file) -> None:
    stack, _ = promoted_stack(stack_factory, specs_file, {**PUBLISH, "REFIT_INFERENCE_PREDICTIONS_QUEUE_SIZE": "5"})
    predict = f"{stack.url('inference-0')}/v1/models/digits/predict"
    row = digits_waves(3)[1][0]["features"]
    stack.stop_process("broker")
    statuses, slowest = [], 0.0
    with httpx.Client(timeout=30) as client:
        for i in range(40):
            started = time.monotonic()
            response = client.post(predict, json={"features": row}, headers={"X-Request-ID": f"offline-{i}"})
            slowest = max(slowest, time.monotonic() - started)
            statuses.append(response.status_code)
        stats = client.get(f"{stack.url('inference-0')}/v1/stats").json()["predictions"]
    assert statuses == [200] * 40
    # Not a benchmark: a request that waited on Kafka would take the publish timeout (10 s).
    assert slowest < 2.0
    # The queue holds 5 and at most 5 more are in flight: everything else was dropped and counted.
    assert stats["dropped_queue_full"] >= 30 and stats["queued"] <= 5
