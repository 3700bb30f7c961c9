"""Feedback: the pure live-metrics core, the monitor's join store, and inference's query log."""

from __future__ import annotations

import asyncio
import doctest
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest

from refit import topics
from refit.core import live
from refit.core.live import Outcome, live_scores, outcome, row_keys
from refit.errors import SchemaError
from refit.events import PredictionServed, SampleIngested
from refit.kafka import cloudevent_source
from refit.onnx_model import Prediction
from services.inference.querylog import QueryLog, Record
from services.inference.serving import Served
from services.monitor.feedback import FeedbackStore, LabeledRow, PredictedRow, labeled_row, predicted_rows
from tests.support.fakes import RecordingPublisher

# -- the pure core ----------------------------------------------------------------------------


def test_the_module_examples_hold() -> None:
    assert doctest.testmod(live).failed == 0


def test_a_single_row_joins_by_its_request_id_and_batch_rows_by_id_and_row() -> None:
    assert row_keys("r", 1) == ["r"]
    assert row_keys("r", 3) == ["r#0", "r#1", "r#2"]
    assert row_keys("a#b", 2) == ["a#b#0", "a#b#1"]


def test_outcomes_compare_as_stored() -> None:
    assert outcome("classification", "7", "7") == Outcome(correct=True)
    assert outcome("classification", "7", "1") == Outcome(correct=False)
    assert outcome("regression", "150.5", "151.0") == Outcome(error=0.5)
    assert outcome("regression", "-2", "3") == Outcome(error=5.0)


def test_live_scores_are_exact() -> None:
    right, wrong = Outcome(correct=True), Outcome(correct=False)
    assert live_scores("classification", [right, right, wrong, right]) == {"accuracy": 0.75}
    scores = live_scores("regression", [Outcome(error=1.0), Outcome(error=3.0)])
    assert scores == {"mae": 2.0, "rmse": math.sqrt(5.0)}
    assert live_scores("classification", []) == {} and live_scores("regression", []) == {}


# -- the join store ---------------------------------------------------------------------------

StoreFactory = Callable[..., FeedbackStore]


@pytest.fixture
def make_store(tmp_path: Path) -> Any:
    made: list[FeedbackStore] = []

    def make(max_rows: int = 1000, name: str = "feedback.sqlite") -> FeedbackStore:
        store = FeedbackStore(tmp_path / name, {"digits": "classification", "diabetes": "regression"}, max_rows)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def pred(key: str, label: str, version: int = 1, model: str = "digits") -> PredictedRow:
    return PredictedRow(model, key, version, label)


def lab(key: str, label: str, model: str = "digits") -> LabeledRow:
    return LabeledRow(model, key, label)


def test_prediction_then_label_and_label_then_prediction_both_join(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.record([pred("a", "3"), pred("b", "4")], []) == 0
    assert store.record([], [lab("a", "3"), lab("c", "9")]) == 1      # c waits for its prediction
    assert store.record([pred("c", "8", version=2)], []) == 1          # ... which comes later, from v2
    result = store.live("digits", window=10)
    assert (result.joined, result.pending_predictions, result.pending_labels) == (2, 1, 0)
    assert [(v.version, v.joined, v.window, v.scores) for v in result.versions] == [
        (2, 1, 1, {"accuracy": 0.0}), (1, 1, 1, {"accuracy": 1.0})]


def test_redeliveries_and_later_duplicates_change_nothing(make_store: StoreFactory) -> None:
    store = make_store()
    store.record([pred("a", "3")], [lab("a", "3")])                   # same batch: joins
    assert store.record([pred("a", "5")], [lab("a", "5"), lab("a", "3")]) == 0
    store.record([], [lab("b", "1"), lab("b", "2")])                  # first label of a key wins
    store.record([pred("b", "2"), pred("b", "2")], [])
    result = store.live("digits", window=10)
    assert (result.joined, result.pending_predictions, result.pending_labels) == (2, 0, 0)
    assert result.versions[0].scores == {"accuracy": 0.5}
    # "a" got a 5 after its 3 was joined, "b" a 2 after its waiting 1: each conflict is counted.
    assert result.conflicting_labels == 2


def test_a_label_that_disagrees_with_the_first_is_counted_not_silently_dropped(make_store: StoreFactory) -> None:
    """Issue 17, defect 14: someone else's label arriving first used to make the true one vanish."""
    store = make_store()
    store.record([pred("a", "3"), pred("b", "3")], [lab("a", "7")])   # a forged label, first
    store.record([], [lab("a", "3"), lab("a", "3"), lab("b", "3"), lab("b", "3"), lab("c", "1"), lab("c", "2")])
    # Both true labels of a (joined with the 7) and the 2 of c (its 1 waits): b agrees with itself.
    assert store.live("digits", window=10).conflicting_labels == 3
    assert store.live("diabetes", window=10).conflicting_labels == 0
    store.close()
    again = make_store()  # reopened on the same file: the count is kept
    assert again.conflicting_labels("digits") == 3


def test_scores_cover_the_newest_window_but_joined_counts_everything(make_store: StoreFactory) -> None:
    store = make_store()
    store.record([pred(f"k{i}", "1") for i in range(6)], [lab(f"k{i}", "1" if i >= 2 else "0") for i in range(6)])
    (version,) = store.live("digits", window=4).versions
    assert (version.joined, version.window, version.scores) == (6, 4, {"accuracy": 1.0})
    assert store.live("digits", window=6).versions[0].scores == {"accuracy": 4 / 6}


def test_regression_outcomes_and_models_apart(make_store: StoreFactory) -> None:
    store = make_store()
    store.record([pred("x", "100.0", model="diabetes"), pred("x", "1")],
                 [lab("x", "110.0", model="diabetes"), lab("y", "90.0", model="diabetes")])
    diabetes = store.live("diabetes", window=10)
    assert (diabetes.joined, diabetes.pending_predictions, diabetes.pending_labels) == (1, 0, 1)
    assert diabetes.versions[0].scores == {"mae": 10.0, "rmse": 10.0}
    assert store.live("digits", window=10).pending_predictions == 1


def test_every_table_stays_bounded_and_counts_survive_pruning(make_store: StoreFactory) -> None:
    store = make_store(max_rows=10)
    for start in range(0, 100, 5):
        store.record([pred(f"p{i}", "1") for i in range(start, start + 5)],
                     [lab(f"l{i}", "1") for i in range(start, start + 5)])
    store.record([pred(f"j{i}", "1") for i in range(30)], [lab(f"j{i}", "1") for i in range(30)])
    result = store.live("digits", window=100)
    assert result.pending_predictions <= 11 and result.pending_labels <= 11
    assert result.joined == 30 and result.versions[0].window <= 30


def test_the_store_is_durable(make_store: StoreFactory) -> None:
    first = make_store(name="same.sqlite")
    first.record([pred("a", "1")], [lab("b", "2")])
    first.close()
    again = make_store(name="same.sqlite")
    assert again.record([pred("b", "2")], [lab("a", "1")]) == 2


def served_event(**changes: Any) -> PredictionServed:
    fields: dict[str, Any] = {"model": "digits", "request_id": "r", "version": 3, "digest": "ab" * 32,
                              "replica_id": "inference-0", "inputs": [[0.0] * 4, [1.0] * 4],
                              "classes": ["0", "1"], "labels": ["0", "1"], "probabilities": [[0.9, 0.1], [0.2, 0.8]]}
    return PredictionServed(**{**fields, **changes})


def test_a_prediction_event_becomes_one_entry_per_row() -> None:
    assert predicted_rows("classification", served_event()) == [
        PredictedRow("digits", "r#0", 3, "0"), PredictedRow("digits", "r#1", 3, "1")]
    single = served_event(inputs=[[0.0] * 4], labels=["1"], probabilities=[[0.4, 0.6]])
    assert predicted_rows("classification", single) == [PredictedRow("digits", "r", 3, "1")]
    regression = served_event(model="diabetes", classes=None, labels=None, probabilities=None, values=[1.5, None])
    assert predicted_rows("regression", regression) == [PredictedRow("diabetes", "r#0", 3, "1.5")]


@pytest.mark.parametrize(("task", "changes", "reason"), [
    ("classification", {"labels": ["0"]}, "2 inputs but 1 outputs"),
    ("classification", {"labels": None}, "without its outputs"),
    ("regression", {}, "without its outputs"),
])
def test_a_prediction_that_does_not_fit_its_task_is_refused(task: str, changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(SchemaError, match=reason):
        predicted_rows(task, served_event(**changes))


def test_only_samples_with_a_request_id_are_feedback() -> None:
    sample = SampleIngested(model="diabetes", sample_id="s", features={"a": 1.0}, label=151.0, request_id="r#2")
    assert labeled_row(sample) == LabeledRow("diabetes", "r#2", "151.0")
    assert labeled_row(sample.model_copy(update={"request_id": None})) is None


# -- the query log on inference ----------------------------------------------------------------


SERVED = Served("digits", 2, "cd" * 32, 5, SimpleNamespace(classes=["0", "1"]))  # type: ignore[arg-type]
PREDICTED = Prediction(labels=["1"], probabilities=np.array([[0.25, 0.75]], dtype=np.float32), values=None)


async def test_a_full_queue_drops_and_counts_without_waiting() -> None:
    log = QueryLog(RecordingPublisher(), "inference-0", capacity=3, batch_size=10)
    for i in range(5):
        log.offer(SERVED, f"r{i}", [{"a": 1.0}], PREDICTED)
    assert log.stats() == {"publishing": True, "queued": 3, "capacity": 3, "enqueued": 3, "published": 0,
                           "dropped_queue_full": 2, "dropped_unpublished": 0, "dropped_too_large": 0,
                           "dropped_invalid": 0}


async def run_log(log: QueryLog, offered: int) -> None:
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(log.run(stop))
        for i in range(offered):
            log.offer(SERVED, f"r{i}", [[0.0, 1.0]], PREDICTED)
        while log.counts["published"] + log.counts["dropped_unpublished"] < offered:
            await asyncio.sleep(0.01)
        stop.set()


async def test_predictions_are_published_in_batches_as_events() -> None:
    publisher = RecordingPublisher()
    log = QueryLog(publisher, "inference-0", capacity=100, batch_size=4)
    await run_log(log, 10)
    assert sum(len(b) for b in publisher.batches) == 10 and max(len(b) for b in publisher.batches) <= 4
    topic, key, value, headers = publisher.batches[0][0]
    assert (topic, key) == (topics.PREDICTIONS, b"digits")
    event = PredictionServed.model_validate(orjson.loads(value))
    assert dict(headers) | {"ce_time": b""} == {  # its CloudEvents attributes, as the replica's Publisher writes them
        "ce_specversion": b"1.0", "ce_id": str(event.event_id).encode(), "ce_type": b"io.refit.PredictionServed.v1",
        "ce_source": cloudevent_source("refit-inference-0").encode(), "ce_time": b"", "ce_subject": b"digits",
        "content-type": b"application/json"}
    assert datetime.fromisoformat(dict(headers)["ce_time"].decode()) == event.occurred_at
    assert (event.request_id, event.version, event.digest, event.replica_id) == ("r0", 2, "cd" * 32, "inference-0")
    assert (event.inputs, event.classes, event.labels, event.probabilities) == (
        [[0.0, 1.0]], ["0", "1"], ["1"], [[0.25, 0.75]])
    assert log.stats()["published"] == 10


async def test_a_batch_the_broker_refuses_is_retried_then_dropped_and_counted() -> None:
    publisher = RecordingPublisher(fail_times=1)
    log = QueryLog(publisher, "inference-0", capacity=100, batch_size=100)
    await run_log(log, 3)
    assert log.stats()["published"] == 3 and len(publisher.batches) == 1    # the retry succeeded

    gone = RecordingPublisher(fail_times=1000)
    log = QueryLog(gone, "inference-0", capacity=100, batch_size=100)
    await run_log(log, 3)
    assert (log.stats()["published"], log.stats()["dropped_unpublished"]) == (0, 3)


def test_an_event_too_big_for_the_broker_is_dropped_not_retried() -> None:
    log = QueryLog(RecordingPublisher(), "inference-0", capacity=10, batch_size=10)
    huge = [[0.123456789] * 1000] * 200
    records = log.encode([(SERVED, "big", huge, PREDICTED), (SERVED, "small", [[0.0]], PREDICTED)])
    assert [orjson.loads(r[2])["request_id"] for r in records] == ["small"]
    assert log.counts["dropped_too_large"] == 1


async def test_an_unexpected_publisher_failure_drops_the_batch_and_keeps_the_log_running() -> None:
    class Broken(RecordingPublisher):
        async def publish_many_raw(self, records: Sequence[Record]) -> None:
            raise RuntimeError("a bug in the client")

    log = QueryLog(Broken(), "inference-0", capacity=100, batch_size=100)
    await run_log(log, 3)
    assert (log.stats()["published"], log.stats()["dropped_unpublished"]) == (0, 3)
