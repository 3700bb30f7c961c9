"""Which models this trainer trains, when several share the work (``refit.kafka.Placement``).

Trainers form one consumer group. A model's samples and retrain requests carry its name as key,
so on co-partitioned topics (refit creates every topic with the same partition count) they sit on
the same partition *p*, and the range assignment gives partition *p* of both topics to one trainer:
that trainer owns the model.

A trainer that takes a partition over rebuilds the dataset of its models by replaying the
partition of ``refit.samples`` (kept forever, see docs/operations.md) from where its own store
stops, and trains none of them until it has read as far as the group had committed. Requests
are committed only up to the oldest one not yet answered, so a request whose trainer died is
read again, and answered, by the next owner.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from refit import topics
from services.trainer.store import DatasetStore

log = structlog.get_logger("trainer")


def partition_of(model: str, partitions: int) -> int:
    """The partition a model's events go to: what the producer's default partitioner picks for its key."""
    return (murmur2(model.encode()) & 0x7FFFFFFF) % partitions


class Ownership:
    """The partitions this trainer holds, and how far it has read each partition of refit.samples.

    Before the first assignment it owns every model (a trainer driven without a group, as in the
    service tests); once in the group, only those whose partition it holds and has caught up on.
    """

    def __init__(self, store: DatasetStore, models: Iterable[str]) -> None:
        self.store, self.models = store, list(models)
        self.partitions = 0  # of refit.samples; 0: not in a group yet
        self.held: set[int] = set()
        self.targets: dict[int, int] = {}  # partition -> offset to reach before its models train
        self.reached: dict[int, int] = {}

    def owns(self, model: str) -> bool:
        if not self.partitions:
            return True
        p = partition_of(model, self.partitions)
        return p in self.held and self.reached.get(p, 0) >= self.targets.get(p, 0)

    def owned(self) -> list[str]:
        return [m for m in self.models if self.owns(m)]

    async def assigned(self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition]) -> None:
        samples = consumer.partitions_for_topic(topics.SAMPLES) or set()
        requests = consumer.partitions_for_topic(topics.RETRAIN_REQUESTS) or set()
        if len(samples) != len(requests):
            log.error("topics not co-partitioned: a model's requests may reach another trainer than its samples",
                      samples=len(samples), requests=len(requests))
        self.partitions = len(samples)
        for tp in sorted(partitions):
            committed = await consumer.committed(tp)
            if tp.topic == topics.SAMPLES:
                # Replay what this store lacks, from the oldest of its own position and the group's.
                stored = self.store.position(tp.partition)
                start = 0 if committed is None else min(committed, stored if stored is not None else 0)
                consumer.seek(tp, start)
                self.targets[tp.partition] = committed or 0
                self.reached[tp.partition] = start
                self.held.add(tp.partition)
                log.info("partition assigned", partition=tp.partition, replay_from=start, committed=committed)
            elif tp.topic == topics.RETRAIN_REQUESTS and committed is not None:
                self.store.forget_requests(tp.partition, committed, datetime.now(UTC))

    def revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            if tp.topic == topics.SAMPLES:
                self.held.discard(tp.partition)

    def committable(self, tp: TopicPartition, position: int) -> int:
        if tp.topic == topics.SAMPLES:
            self.reached[tp.partition] = position
            # Never below what the group had: the next owner must catch up on all of it.
            return max(position, self.targets.get(tp.partition, 0))
        if tp.topic == topics.RETRAIN_REQUESTS:
            oldest = self.store.oldest_pending(tp.partition)
            return position if oldest is None else min(position, oldest)
        return position
