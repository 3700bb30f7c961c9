"""A consumer outlives aiokafka's close raising a ``CancelledError`` of its own (aio-libs/aiokafka#647).

Seen in CI: after a broker restart an inference replica rebuilt its decisions consumer, the old
consumer's close raised ``CancelledError`` (its fetcher awaited a request task it had just
cancelled), and the consumer task ended as *cancelled*, silently: the replica never followed
another decision. Here the real consumer's close is made to do exactly that, on a real broker.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer

from refit.events import RetrainRequested
from refit.kafka import ConsumerConfig, Incoming, Publisher, consume
from refit.settings import CommonSettings
from refit.stack import Stack
from tests.conftest import SPECS

pytestmark = pytest.mark.integration


def test_a_consumer_whose_close_cancels_itself_resumes_and_delivers(tmp_path, monkeypatch, broker) -> None:
    real_stop = AIOKafkaConsumer.stop
    closes = 0

    async def stop_like_647(self: AIOKafkaConsumer) -> None:
        nonlocal closes
        closes += 1
        await real_stop(self)
        pending = asyncio.ensure_future(asyncio.sleep(30))  # a fetch request still in flight
        await asyncio.sleep(0)
        pending.cancel()
        await pending  # raises CancelledError, as aiokafka's Fetcher.close does

    monkeypatch.setattr(AIOKafkaConsumer, "stop", stop_like_647)
    stack = Stack(state_dir=tmp_path, specs_path=SPECS, broker=broker)
    (stack.state_dir / "logs").mkdir(parents=True)
    stack.start_broker()
    settings = CommonSettings(bootstrap_servers=stack.bootstrap, broker=broker)

    async def run() -> list[str]:
        publisher = Publisher(settings, client_id="test")
        for reason in ("first", "second"):
            await publisher.publish(RetrainRequested(model="digits", kind="manual", reason=reason))
        stop = asyncio.Event()
        delivered: list[str] = []
        failures = iter([RuntimeError("transient, once"), RuntimeError("transient, twice")])

        async def handler(items: list[Incoming]) -> dict[int, str]:
            failure = next(failures, None)
            if failure is not None:
                raise failure  # the consumer is rebuilt: the old one is closed
            delivered.extend(item.event.reason for item in items)  # type: ignore[attr-defined]
            stop.set()
            return {}

        try:
            config = ConsumerConfig(name="test", subscribe=["refit.retrain-requests"], group_id=None,
                                    expected=RetrainRequested)
            await asyncio.wait_for(consume(settings, config, handler=handler, publisher=publisher, stop=stop),
                                   timeout=60)
        finally:
            await publisher.close()
        return delivered

    try:
        assert asyncio.run(run()) == ["first", "second"]
    finally:
        stack.stop()
    assert closes == 3  # two rebuilds and the final stop, each close raising CancelledError
