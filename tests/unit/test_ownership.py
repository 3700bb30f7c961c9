"""A trainer's share of the models: the partition a model's events go to, and what it commits."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from refit import topics
from refit.events import RetrainRequested
from services.trainer.ownership import Ownership, partition_of
from services.trainer.store import DatasetStore

MODELS = ("digits", "diabetes", "breast-cancer", "food-mood")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_models_partition_is_the_one_the_producer_picks_for_its_key() -> None:
    for n in (1, 3, 6, 12):
        partitions = list(range(n))
        assert [partition_of(m, n) for m in MODELS] == [
            DefaultPartitioner()(m.encode(), partitions, partitions) for m in MODELS]


def test_requests_are_committed_up_to_the_oldest_unanswered_one(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path / "t.sqlite")
    ownership = Ownership(store, MODELS)
    tp = TopicPartition(topics.RETRAIN_REQUESTS, 1)
    assert ownership.committable(tp, 7) == 7
    store.add_request(RetrainRequested(model="digits", kind="manual", reason="r"), (1, 4))
    store.add_request(RetrainRequested(model="digits", kind="manual", reason="r"), (1, 5))
    assert ownership.committable(tp, 7) == 4  # redelivered to the next owner if this trainer dies
    assert ownership.committable(TopicPartition(topics.RETRAIN_REQUESTS, 0), 7) == 7
    store.finish_requests("digits", "candidate c", datetime.now(UTC))  # a training that started after both
    assert ownership.committable(tp, 7) == 7
    store.add_request(RetrainRequested(model="digits", kind="manual", reason="r"), (1, 8))
    store.forget_requests(1, 9, NOW)  # the group committed past it: another trainer answered it
    assert ownership.committable(tp, 9) == 9
    store.close()


def test_a_taken_over_partition_trains_only_once_caught_up_and_never_commits_below(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path / "t.sqlite")
    ownership = Ownership(store, MODELS)
    assert ownership.owned() == list(MODELS)  # not in a group: every model
    digits = partition_of("digits", 6)
    ownership.partitions, ownership.held = 6, {digits}
    ownership.targets[digits], ownership.reached[digits] = 500, 0  # the previous owner had read 500
    assert ownership.owned() == []
    tp = TopicPartition(topics.SAMPLES, digits)
    assert ownership.committable(tp, 200) == 500 and ownership.owned() == []
    assert ownership.committable(tp, 500) == 500 and "digits" in ownership.owned()
    ownership.revoked({tp})
    assert "digits" not in ownership.owned()
    store.close()
