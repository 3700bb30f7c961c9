"""Fakes of refit's collaborators, for tests that run one service without a broker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from refit import topics
from refit.errors import BrokerUnavailableError
from refit.events import Event
from refit.kafka import Publisher, cloudevent_source

Record = tuple[str, bytes, bytes, Any]  # topic, key, value, headers


class RecordingPublisher:
    """A publisher that acknowledges every write, or refuses the first ``fail_times`` as an
    unreachable broker does, and keeps what it acknowledged: one batch per write."""

    source = cloudevent_source("refit-test")
    record = Publisher.record  # the records the real one writes: CloudEvents headers, then the caller's

    def __init__(self, fail_times: int = 0) -> None:
        self.fail_times = fail_times
        self.batches: list[list[Record]] = []

    def _write(self, records: Sequence[Record]) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise BrokerUnavailableError("the broker did not acknowledge the write")
        self.batches.append(list(records))

    async def publish(self, event: Event, headers: Any = None) -> None:
        self._write([self.record(event, None, headers)])

    async def publish_many(self, events: Sequence[Event], headers: Any = None) -> None:
        self._write([self.record(e, None, headers) for e in events])

    async def publish_raw(self, topic: str, key: bytes, value: bytes, headers: Any = None) -> None:
        self._write([(topic, key, value, headers)])

    async def publish_many_raw(self, records: Sequence[Record]) -> None:
        self._write(records)

    async def ready(self) -> bool:
        return True

    @property
    def records(self) -> list[Record]:
        return [record for batch in self.batches for record in batch]

    @property
    def sent(self) -> list[tuple[str, bytes]]:
        """(topic, value) of every record, in order."""
        return [(topic, value) for topic, _, value, _ in self.records]

    def decisions(self) -> list[dict[str, Any]]:
        return [orjson.loads(value) for topic, value in self.sent if topic == topics.DECISIONS]
