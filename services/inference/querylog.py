"""What a replica publishes off the request path: the query log, and the base it shares with the shadow.

A request only offers an item to a bounded queue (full: dropped and counted); a background task
encodes and publishes in batches, retrying a failed batch a few times before dropping it, so a
slow or absent broker costs predictions nothing.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

import structlog
from pydantic import ValidationError

from refit.errors import BrokerUnavailableError
from refit.events import PredictionServed
from refit.kafka import cloudevent_source
from refit.lifecycle import retry
from refit.onnx_model import Prediction
from services.inference.serving import Served

log = structlog.get_logger("inference")

# Below the producer's default max request size (1 MiB): a bigger event could never be sent.
MAX_EVENT_BYTES = 1_000_000
PUBLISH_TRIES = 3

Record = tuple[str, bytes, bytes, list[tuple[str, bytes]] | None]
Logged = tuple[Served, str, list[Any], Prediction]
Item = TypeVar("Item")


class RecordPublisher(Protocol):
    async def publish_many_raw(self, records: Sequence[Record]) -> None: ...


class Batches(ABC, Generic[Item]):
    """What is offered never waits; :meth:`run` takes batches, encodes them (in a worker thread),
    publishes them with a few retries, and counts what it drops. Subclasses say how items wait
    (:meth:`_take`, :meth:`queued`) and how they are encoded."""

    names = ("enqueued", "published", "dropped_queue_full", "dropped_unpublished", "dropped_too_large",
             "dropped_invalid")

    def __init__(self, publisher: RecordPublisher, replica_id: str, capacity: int, batch_size: int) -> None:
        self.publisher, self.replica_id, self.capacity, self.batch_size = publisher, replica_id, capacity, batch_size
        self.source = cloudevent_source(f"refit-{replica_id}")  # as the replica's Publisher
        self.counts: Counter[str] = Counter()
        self.broker_ok = True

    def stats(self) -> dict[str, Any]:
        return {"publishing": True, "queued": self.queued(), "capacity": self.capacity,
                **{n: self.counts[n] for n in self.names}}

    @abstractmethod
    def queued(self) -> int:
        """Requests waiting to be encoded."""

    @abstractmethod
    async def _take(self, stop: asyncio.Event) -> list[Item]:
        """The next batch, after waiting for a first item; empty when stopping (nothing left, or no broker)."""

    def requests_in(self, batch: list[Item]) -> int:
        return len(batch)

    @abstractmethod
    def encode(self, batch: list[Item]) -> list[Record]:
        """The records to publish for one batch."""

    def fits(self, value: bytes) -> bool:
        if len(value) > MAX_EVENT_BYTES:
            self.counts["dropped_too_large"] += 1
            return False
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop``; then flush what is queued if the broker answers, else drop it."""
        while batch := await self._take(stop):
            try:
                records = await asyncio.to_thread(self.encode, batch)
                if records:
                    await self._publish(records, stop)
            except Exception as exc:  # publishing must never take the replica (its task group) down
                self.counts["dropped_unpublished"] += self.requests_in(batch)
                log.error("events dropped", kind=type(self).__name__, events=len(batch), error=repr(exc))
        self.counts["dropped_unpublished"] += self.queued()

    async def _publish(self, records: list[Record], stop: asyncio.Event) -> None:
        async def attempt() -> None:
            try:
                await self.publisher.publish_many_raw(records)
            except BrokerUnavailableError:
                self.broker_ok = False
                raise

        try:
            await retry(type(self).__name__, attempt, retry_on=(BrokerUnavailableError,), stop=stop,
                        tries=PUBLISH_TRIES, cap=8.0)
        except BrokerUnavailableError:
            self.counts["dropped_unpublished"] += len(records)
        else:
            self.broker_ok = True
            self.counts["published"] += len(records)


class QueryLog(Batches[Logged]):
    """Predictions on their way to ``refit.predictions``: never in the request's way."""

    def __init__(self, publisher: RecordPublisher, replica_id: str, capacity: int, batch_size: int) -> None:
        super().__init__(publisher, replica_id, capacity, batch_size)
        self.queue: asyncio.Queue[Logged] = asyncio.Queue(capacity)

    def offer(self, served: Served, request_id: str, rows: list[Any], predicted: Prediction) -> None:
        try:
            self.queue.put_nowait((served, request_id, rows, predicted))
        except asyncio.QueueFull:
            self.counts["dropped_queue_full"] += 1
        else:
            self.counts["enqueued"] += 1

    def queued(self) -> int:
        return self.queue.qsize()

    async def _take(self, stop: asyncio.Event) -> list[Logged]:
        """Waits for a first prediction (or ``stop``), then takes what is already queued."""
        while True:
            if stop.is_set() and (self.queue.empty() or not self.broker_ok):
                return []
            try:
                first = await asyncio.wait_for(self.queue.get(), timeout=0.5)
                break
            except TimeoutError:
                continue
        batch = [first]
        while len(batch) < self.batch_size and not self.queue.empty():
            batch.append(self.queue.get_nowait())
        return batch

    def encode(self, batch: list[Logged]) -> list[Record]:
        records: list[Record] = []
        for served, request_id, rows, predicted in batch:
            try:
                event = PredictionServed(
                    model=served.name, request_id=request_id, version=served.version, digest=served.digest,
                    replica_id=self.replica_id, inputs=rows, classes=served.model.classes, labels=predicted.labels,
                    probabilities=predicted.probabilities.tolist() if predicted.probabilities is not None else None,
                    values=finite_or_none(predicted.values))
            except ValidationError:  # rows numpy accepted that the event cannot carry (e.g. booleans)
                self.counts["dropped_invalid"] += 1
                continue
            value = event.to_bytes()
            if self.fits(value):
                records.append((event.topic, event.key(), value, event.headers(self.source)))
        return records


def finite_or_none(values: list[float] | None) -> list[float | None] | None:
    """Regression values as an event carries them: a value the model could not make finite is null."""
    return [v if math.isfinite(v) else None for v in values] if values is not None else None
