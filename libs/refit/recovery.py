"""Recovery from a lost cluster: what a consumer needs on the embedded broker only.

A topic never disappears and a log never shrinks on Apache Kafka unless someone deleted it; a
restarted embedded broker is an empty cluster. ``refit.kafka.consume`` is given this component
when the broker's profile says so (``BrokerProfile.recovers_lost_cluster``); on Kafka it runs
without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from refit.errors import RefitError


class ClusterChanged(RefitError):
    """The consumer no longer matches the cluster (a new cluster, or its topics vanished): start a new one."""


class ClusterRecovery(Protocol):
    """What ``consume`` asks of a recovery component, once per consumer it builds."""

    async def attach(self) -> str | None: ...  # connect; returns the cluster id
    def consumed(self, tp: TopicPartition, next_offset: int) -> None: ...
    async def check(self, consumer: AIOKafkaConsumer) -> None: ...  # raises ClusterChanged
    async def recover(self) -> None: ...  # after ClusterChanged, before the next consumer
    async def close(self) -> None: ...


class EmbeddedBrokerRecovery:
    """Notices that the cluster a consumer reads is gone, and recreates the topics at once.

    Three signs, all from public client calls: the cluster id changed (the local stack gives every
    embedded broker start its own id); a subscribed topic is missing (offset commits to it would be
    retried forever); a partition's high watermark is below the next offset already consumed (the
    topic was recreated: the embedded broker answers such a fetch with nothing instead of Kafka's
    OFFSET_OUT_OF_RANGE, so the client alone would wait there, then skip the first records of the
    new log). An unreachable broker is no sign: the client reconnects by itself.
    """

    def __init__(self, bootstrap_servers: str, client_id: str, subscribe: Sequence[str],
                 recreate_topics: Callable[[], Awaitable[None]], request_timeout_ms: int = 10_000) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.subscribe = tuple(subscribe)
        self.recreate_topics = recreate_topics
        self.request_timeout_ms = request_timeout_ms
        self.cluster_id: str | None = None
        self.consumed_up_to: dict[TopicPartition, int] = {}
        self._admin: AIOKafkaAdminClient | None = None

    async def attach(self) -> str | None:
        await self.close()
        self.consumed_up_to = {}
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=self.client_id,
                                          request_timeout_ms=self.request_timeout_ms)
        await self._admin.start()
        self.cluster_id = (await self._admin.describe_cluster()).get("cluster_id")
        return self.cluster_id

    def consumed(self, tp: TopicPartition, next_offset: int) -> None:
        self.consumed_up_to[tp] = next_offset

    async def check(self, consumer: AIOKafkaConsumer) -> None:
        for tp, next_offset in self.consumed_up_to.items():
            if tp in consumer.assignment():
                highwater = consumer.highwater(tp)
                if highwater is not None and highwater < next_offset:
                    raise ClusterChanged(f"{tp.topic}[{tp.partition}] ends at {highwater}, {next_offset} were consumed")
        if self._admin is None:
            return
        try:
            async with asyncio.timeout(5):
                cluster_id = (await self._admin.describe_cluster()).get("cluster_id")
                existing = set(await self._admin.list_topics())
        except (KafkaError, OSError, TimeoutError):
            return
        if cluster_id != self.cluster_id:
            raise ClusterChanged(f"the cluster id changed from {self.cluster_id!r} to {cluster_id!r}")
        missing = sorted(set(self.subscribe) - existing)
        if missing:
            raise ClusterChanged(f"topics {missing} are gone")

    async def recover(self) -> None:
        """Recreate the topics at once: until then the embedded broker acknowledges writes to topics
        it does not list, and what it later does with those records is not defined."""
        try:
            await self.recreate_topics()
        except (KafkaError, OSError, asyncio.TimeoutError):
            pass  # the next round retries

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            from refit.kafka import close_quietly

            await close_quietly(admin.close(), f"{self.client_id} recovery")
