"""Kafka plumbing: topic creation, an acknowledged publisher, and a consume loop.

Correct on Apache Kafka first; the embedded broker is a stand-in, and what refit does for it is
decided in one place, the broker's profile (``refit.settings.BrokerProfile``). Producers use
``acks=all`` (idempotent on Kafka); consumers commit only after their handler made the work durable,
so delivery is at-least-once and handlers are idempotent. Records a handler
cannot use go to the dead-letter topic with the reason, and the loop moves on.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from refit import topics
from refit.errors import BrokerUnavailableError, EventDecodeError
from refit.events import DeadLettered, Event, parse_event
from refit.lifecycle import retry
from refit.metrics import Metrics
from refit.recovery import ClusterChanged, ClusterRecovery, EmbeddedBrokerRecovery
from refit.settings import CommonSettings

log = structlog.get_logger(__name__)


async def ensure_topics(settings: CommonSettings, names: Sequence[str] = topics.ALL) -> None:
    """Create the topics that do not exist yet (one attempt; callers retry)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                                request_timeout_ms=settings.kafka_request_timeout_ms)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            await admin.create_topics([NewTopic(n, settings.topic_partitions, settings.topic_replication,
                                                topic_configs=topic_configs(settings, n)) for n in missing])
            log.info("topics created", topics=missing)
    finally:
        await close_quietly(admin.close(), "topic admin")


def topic_configs(settings: CommonSettings, name: str) -> dict[str, str]:
    """The configs refit creates a topic with: min ISR on a cluster, no retention limit on a replayed topic."""
    configs = ({"min.insync.replicas": str(settings.topic_min_insync_replicas)}
               if settings.topic_min_insync_replicas > 1 else {})
    if name in topics.REPLAYED and settings.profile.keeps_log:
        configs["retention.ms"] = "-1"
    return configs


async def close_quietly(closing: Awaitable[None], what: str, timeout_s: float = 10.0) -> None:
    """Await one aiokafka client's close, bounded, without letting the close end the caller.

    aiokafka's close can raise a ``CancelledError`` of its own: the fetcher and the sender await
    request tasks they have just cancelled (aio-libs/aiokafka#647, still open in 0.14). Escaping
    a consumer's loop, that ended the task as *cancelled*, which a ``TaskGroup`` does not report:
    an inference replica stopped following decisions without a word. Only a cancellation of the
    caller itself goes on; anything else is logged.
    """
    try:
        await asyncio.wait_for(closing, timeout=timeout_s)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        log.warning("client close was cancelled from inside the client", client=what)
    except (KafkaError, OSError, asyncio.TimeoutError) as exc:
        log.info("client close failed", client=what, error=repr(exc))


_TRANSIENT = (KafkaError, OSError, asyncio.TimeoutError)


async def retry_forever(what: str, attempt: Callable[[], Awaitable[Any]], stop: asyncio.Event | None = None,
                        first_delay: float = 0.2, max_delay: float = 5.0) -> Any:
    """Call ``attempt`` until it succeeds, backing off exponentially; start order never matters.
    Stopping ends it as a cancellation."""
    try:
        return await retry(what, attempt, retry_on=_TRANSIENT, stop=stop, first=first_delay, cap=max_delay)
    except _TRANSIENT:
        raise asyncio.CancelledError from None  # only once stopped: retry gives up on nothing else


def cloudevent_source(client_id: str) -> str:
    """The CloudEvents ``source`` of a service instance: ``/refit/<client id>`` plus the host, e.g.
    ``/refit/refit-inference-0@host`` (a URI reference, as the spec asks)."""
    return f"/refit/{client_id}@{socket.gethostname()}"


class Publisher:
    """An ``acks=all`` producer that (re)connects on demand and reports failures as 503-able errors."""

    # Up to ~500 records of a sample in one produce request (aiokafka's default is 16 KiB, ~15
    # records), and half of Kafka's default 1 MiB limit on a record batch.
    max_batch_bytes = 512 * 1024

    def __init__(self, settings: CommonSettings, client_id: str, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.client_id = client_id
        self.source = cloudevent_source(client_id)  # the CloudEvents ``source`` of what it publishes
        self.timeout_s = timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._enqueue = asyncio.Lock()

    async def _connected(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is None:
                await ensure_topics(self.settings)
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.settings.bootstrap_servers,
                    client_id=self.client_id,
                    acks="all",
                    enable_idempotence=self.settings.profile.idempotence,
                    request_timeout_ms=self.settings.kafka_request_timeout_ms,
                    linger_ms=2,
                    max_batch_size=self.max_batch_bytes,
                )
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def _reset(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await close_quietly(producer.stop(), f"{self.client_id} producer", timeout_s=5)

    async def publish_raw(self, topic: str, key: bytes, value: bytes,
                          headers: list[tuple[str, bytes]] | None = None) -> None:
        await self.publish_many_raw([(topic, key, value, headers)])

    async def publish_many_raw(self, records: Sequence[tuple[str, bytes, bytes, list[tuple[str, bytes]] | None]]) -> None:
        """Send every record and return once the broker acknowledged all of them."""
        try:
            async with asyncio.timeout(self.timeout_s):
                producer = await self._connected()
                await asyncio.gather(*await self._send_batches(producer, records))
        except (KafkaError, OSError, TimeoutError) as exc:
            await self._reset()
            raise BrokerUnavailableError(f"the broker did not acknowledge the write: {exc!r}") from None

    async def _send_batches(self, producer: AIOKafkaProducer,
                            records: Sequence[tuple[str, bytes, bytes, list[tuple[str, bytes]] | None]],
                            ) -> list[asyncio.Future[Any]]:
        """Queue the records as whole batches: one future per batch, not per record.

        ``producer.send`` runs the partitioner (pure-Python murmur2), checks and queues each
        record and resolves a future for each, which cost more than the write itself. Records
        go to the partition ``send`` would choose by key and keep their order within it.
        """
        by_partition: dict[tuple[str, int], list[tuple[bytes, bytes, list[tuple[str, bytes]]]]] = {}
        partition_of: dict[tuple[str, bytes], int] = {}
        for topic, key, value, headers in records:
            if (topic, key) not in partition_of:
                partitions = sorted(await producer.partitions_for(topic))
                partition_of[topic, key] = DefaultPartitioner()(key, partitions, partitions)
            by_partition.setdefault((topic, partition_of[topic, key]), []).append((key, value, headers or []))
        futures: list[asyncio.Future[Any]] = []
        # One caller at a time: send_batch waits until the partition's previous batch left the queue,
        # and aiokafka counts a waiter's time cumulatively, so many concurrent waiters would time out.
        async with self._enqueue:
            for (topic, partition), items in by_partition.items():
                batch = producer.create_batch()
                for key, value, headers in items:
                    if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:  # full
                        futures.append(await producer.send_batch(batch, topic, partition=partition))
                        batch = producer.create_batch()
                        batch.append(key=key, value=value, timestamp=None, headers=headers)  # the first fits
                batch.close()  # complete: nothing else will join it, so it need not linger
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    def record(self, event: Event, value: bytes | None = None,
               headers: list[tuple[str, bytes]] | None = None) -> tuple[str, bytes, bytes, list[tuple[str, bytes]]]:
        """The Kafka record of ``event`` (its bytes, or ``value`` when already made: a signed payload),
        with its CloudEvents headers, then ``headers``."""
        return event.topic, event.key(), value if value is not None else event.to_bytes(), \
            event.headers(self.source) + (headers or [])

    async def publish(self, event: Event, headers: list[tuple[str, bytes]] | None = None) -> None:
        await self.publish_many_raw([self.record(event, None, headers)])

    async def publish_many(self, events: Sequence[Event], headers: list[tuple[str, bytes]] | None = None) -> None:
        await self.publish_many_raw([self.record(e, None, headers) for e in events])

    async def ready(self) -> bool:
        try:
            await asyncio.wait_for(self._connected(), timeout=self.timeout_s)
            return True
        except (KafkaError, OSError, asyncio.TimeoutError):
            await self._reset()
            return False

    async def close(self) -> None:
        await self._reset()


@dataclass(frozen=True)
class Incoming:
    record: ConsumerRecord[bytes, bytes]
    event: Event

    def header(self, name: str) -> str | None:
        for key, value in self.record.headers or ():
            if key == name:
                return value.decode(errors="replace")
        return None


# A batch handler returns, per rejected item, the reason; everything else counts as done.
BatchHandler = Callable[[list[Incoming]], Awaitable[dict[int, str]]]


async def dead_letter(publisher: Publisher, consumer: str, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
    key = record.key.decode(errors="replace") if record.key else None
    event = DeadLettered(
        model=key or "", source_topic=record.topic, partition=record.partition, offset=record.offset,
        consumer=consumer, reason=reason, original_key=key,
        original_value=base64.b64encode(record.value or b"").decode(),
    )
    await publisher.publish(event)
    log.warning("dead-lettered", consumer=consumer, topic=record.topic, offset=record.offset, reason=reason)


class Placement(Protocol):
    """A handler's say in where a group consumer reads from and what it commits (the trainer's
    ownership of models, ``services/trainer/ownership.py``).

    ``assigned`` runs inside the rebalance, before anything is fetched, and may seek; ``committable``
    is asked for each assigned partition before every commit and may hold the committed offset back
    (never above ``position``), so work not yet done is redelivered to whoever holds the partition next.
    """

    async def assigned(self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition]) -> None: ...

    def revoked(self, partitions: set[TopicPartition]) -> None: ...

    def committable(self, tp: TopicPartition, position: int) -> int: ...


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: AIOKafkaConsumer, placement: Placement) -> None:
        self.consumer, self.placement = consumer, placement

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.placement.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.placement.assigned(self.consumer, set(assigned))


@dataclass(frozen=True)
class ConsumerConfig:
    """What one consume loop reads and how.

    ``group_id=None`` means no consumer group: the loop reads every partition from the earliest
    record each time it starts (inference follows every decision). ``fetch_max_wait_ms`` bounds how
    long the broker may hold a fetch with nothing new (the embedded broker holds it that long even
    when a record arrives meanwhile; a latency-sensitive reader asks for less). ``check_interval_s``
    is how often a recovery component, if any, looks at the cluster. ``placement`` (group consumers
    only) also assigns by range rather than round-robin: partition *p* of every subscribed topic goes
    to the same member, so a model's records on co-partitioned topics (same key, same partition
    count) all reach one consumer.
    """

    name: str
    subscribe: Sequence[str]
    group_id: str | None
    expected: type[Event] | tuple[type[Event], ...]
    max_records: int = 500
    fetch_max_wait_ms: int = 500
    check_interval_s: float = 1.0
    placement: Placement | None = None


def default_recovery(settings: CommonSettings, config: ConsumerConfig) -> ClusterRecovery | None:
    """The recovery component the broker's profile calls for: the embedded broker's, or none."""
    if not settings.profile.recovers_lost_cluster:
        return None
    return EmbeddedBrokerRecovery(settings.bootstrap_servers, f"{config.name}-watch", config.subscribe,
                                  lambda: ensure_topics(settings), settings.kafka_request_timeout_ms)


async def _commit(consumer: AIOKafkaConsumer, recovery: ClusterRecovery | None, timeout_s: float,
                  check_s: float, offsets: dict[TopicPartition, int] | None = None) -> None:
    """Commit the consumed offsets (or ``offsets``), giving up after ``timeout_s``. The client retries
    some errors forever (on the embedded broker: a commit to a topic the cluster no longer knows), so a
    recovery component watches the cluster while waiting."""
    commit = asyncio.ensure_future(consumer.commit(offsets) if offsets else consumer.commit())
    deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        while not commit.done():
            await asyncio.wait({commit}, timeout=check_s)
            if commit.done():
                break
            if recovery is not None:
                await recovery.check(consumer)
            if asyncio.get_running_loop().time() >= deadline:
                raise TimeoutError(f"an offset commit did not complete within {timeout_s}s")
        commit.result()
    finally:
        if not commit.done():
            commit.cancel()
            await asyncio.wait({commit})


def _consumer(settings: CommonSettings, config: ConsumerConfig) -> AIOKafkaConsumer:
    profile = settings.profile
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=config.group_id,
        client_id=config.name, enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=profile.session_timeout_ms, heartbeat_interval_ms=profile.heartbeat_interval_ms,
        request_timeout_ms=max(settings.kafka_request_timeout_ms, profile.session_timeout_ms + 1000),
        max_poll_records=config.max_records, fetch_max_wait_ms=config.fetch_max_wait_ms,
        **({"partition_assignment_strategy": (RangePartitionAssignor,)} if config.placement else {}),
    )
    listener = _Listener(consumer, config.placement) if config.placement else None
    consumer.subscribe(list(config.subscribe), listener=listener)
    return consumer


async def _committable(consumer: AIOKafkaConsumer, placement: Placement) -> dict[TopicPartition, int]:
    """What may be committed of each assigned partition: its position, unless the placement holds it back."""
    return {tp: placement.committable(tp, await consumer.position(tp)) for tp in consumer.assignment()}


async def consume(settings: CommonSettings, config: ConsumerConfig, *, handler: BatchHandler,
                  publisher: Publisher, stop: asyncio.Event, counts: Counter[str] | None = None,
                  metrics: Metrics | None = None, recovery: ClusterRecovery | None = None) -> None:
    """Consume until ``stop`` is set; commit each batch after ``handler`` made it durable.

    A handler exception is treated as transient: the consumer is rebuilt and resumes from the
    last commit, so nothing is skipped. So is a commit that does not complete within the request
    timeout. ``recovery`` (unset: what the broker's profile calls for, see ``default_recovery``;
    none on Apache Kafka) is checked every ``config.check_interval_s``: when it
    finds the cluster is not the one the consumer was reading, it recovers (the embedded broker's
    recreates the topics at once) and a new consumer resumes from the committed offsets, or from
    the earliest record where there are none. ``counts`` (if given) counts records consumed and
    dead-lettered.
    """
    watch = recovery if recovery is not None else default_recovery(settings, config)
    counts = counts if counts is not None else Counter()
    commit_timeout_s = max(settings.kafka_request_timeout_ms, settings.profile.session_timeout_ms) / 1000
    name = config.name
    while not stop.is_set():
        consumer = _consumer(settings, config)
        positions: dict[TopicPartition, int] = {}  # the next offset to read, per partition read so far
        try:
            await retry_forever(f"{name}: topics", lambda: ensure_topics(settings), stop)
            cluster = await retry_forever(f"{name}: connect", watch.attach, stop) if watch is not None else None
            await retry_forever(f"{name}: connect", consumer.start, stop)
            log.info("consuming", consumer=name, topics=list(config.subscribe), group=config.group_id,
                     cluster=cluster)
            next_check = asyncio.get_running_loop().time() + config.check_interval_s
            committed: dict[TopicPartition, int] | None = None
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=config.max_records)
                for tp, records in batches.items():
                    await _handle(records, name, config.expected, handler, publisher, counts, metrics)
                    if watch is not None:
                        watch.consumed(tp, records[-1].offset + 1)
                    positions[tp] = records[-1].offset + 1
                if metrics is not None:
                    _observe_lag(consumer, name, positions, metrics)
                if config.placement is not None and config.group_id is not None:
                    # Also without new records: what a placement held back may be released (a request answered).
                    offsets = await _committable(consumer, config.placement)
                    if offsets and (batches or offsets != committed):
                        await _commit(consumer, watch, commit_timeout_s, config.check_interval_s, offsets)
                        committed = offsets
                elif batches and config.group_id is not None:
                    await _commit(consumer, watch, commit_timeout_s, config.check_interval_s)
                if watch is not None and asyncio.get_running_loop().time() >= next_check:
                    await watch.check(consumer)
                    next_check = asyncio.get_running_loop().time() + config.check_interval_s
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
        except ClusterChanged as exc:  # what was handled is durable; redelivery changes nothing
            log.warning("consumer rebuilding: not the cluster it was reading", consumer=name, reason=str(exc))
            if watch is not None:
                await watch.recover()
        except Exception as exc:  # transient by contract: rebuild and resume from the last commit
            log.warning("consumer restarting", consumer=name, error=repr(exc))
            await asyncio.sleep(1.0)
        finally:
            await close_quietly(consumer.stop(), f"{name} consumer")
            if watch is not None:
                await watch.close()


def _observe_lag(consumer: AIOKafkaConsumer, name: str, positions: dict[TopicPartition, int],
                 metrics: Metrics) -> None:
    """Records not read yet, per topic: the high watermark of the latest fetch minus the next offset to
    read, over the assigned partitions read so far (what a consumer-lag alert reads)."""
    lag: Counter[str] = Counter()
    for tp in consumer.assignment():
        high, position = consumer.highwater(tp), positions.get(tp)
        if high is not None and position is not None:
            lag[tp.topic] += max(high - position, 0)
    for topic, value in lag.items():
        metrics.consumer_lag.labels(name, topic).set(value)


async def _handle(records: list[ConsumerRecord[bytes, bytes]], name: str,
                  expected: type[Event] | tuple[type[Event], ...], handler: BatchHandler,
                  publisher: Publisher, counts: Counter[str], metrics: Metrics | None) -> None:
    items: list[Incoming] = []
    dead: list[tuple[ConsumerRecord[bytes, bytes], str]] = []
    for record in records:
        try:
            items.append(Incoming(record, parse_event(record.value or b"", expected)))
        except EventDecodeError as exc:
            dead.append((record, str(exc)))
    rejected = await handler(items) if items else {}
    dead.extend((items[i].record, reason) for i, reason in rejected.items())
    for record, reason in dead:
        await dead_letter(publisher, name, record, reason)
    counts["consumed"] += len(records)
    counts["dead_lettered"] += len(dead)
    if metrics is not None:
        metrics.records_consumed.labels(name).inc(len(records))
        if dead:
            metrics.dead_lettered.labels(name).inc(len(dead))
