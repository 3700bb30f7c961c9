"""Every kind of record a consumer cannot use goes to dead letters with its bytes and the reason."""

from __future__ import annotations

import asyncio
import base64
import time

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from refit import topics
from refit.events import RetrainRequested, SampleIngested, parse_event

pytestmark = pytest.mark.integration


def sample(**changes: object) -> bytes:
    event = SampleIngested(model="digits", sample_id="s-1", features={f"p{i}": 0.0 for i in range(64)}, label="1")
    return orjson.dumps({**orjson.loads(event.to_bytes()), **changes})


BAD_SAMPLES = {
    b"{not json": "not JSON",
    sample(schema_version=99): "schema_version 99 is newer than this reader",
    sample(model="nope"): "no model named 'nope'",
    sample(features={"p0": 1.0}): "features: missing",
    sample(label="eleven"): "label: 'eleven' is not one of",
    sample(event_type="SampleDeleted"): "unknown event_type 'SampleDeleted'",
    sample(features=None, text="hello"): "features: expected",
}


async def publish_and_collect(bootstrap: str, expected: int, timeout_s: float = 60) -> list[SampleIngested]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in BAD_SAMPLES:
            await producer.send_and_wait(topics.SAMPLES, value, key=b"digits")
        await producer.send_and_wait(topics.RETRAIN_REQUESTS,
                                     RetrainRequested(model="ghost", kind="manual", reason="x").to_bytes(), key=b"ghost")
        await producer.send_and_wait(topics.CANDIDATES, b"\x00\x01 garbage", key=b"digits")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topics.DEAD_LETTERS, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(parse_event(r.value) for r in records)
    finally:
        await consumer.stop()
    return found


@pytest.mark.brokers("kafka", "embedded")
def test_each_kind_of_bad_record_is_dead_lettered_with_its_reason(stack_factory, specs_file) -> None:
    stack = stack_factory(specs_file(only=("digits",)))
    # trainer and monitor both read samples: each dead-letters each bad sample; plus one retrain
    # request for an unknown model (trainer) and one undecodable candidate (monitor).
    letters = asyncio.run(publish_and_collect(stack.bootstrap, 2 * len(BAD_SAMPLES) + 2))
    by_consumer: dict[str, list] = {}
    for letter in letters:
        by_consumer.setdefault(letter.consumer, []).append(letter)
    assert sorted(by_consumer) == ["monitor", "trainer"]
    for consumer in ("trainer", "monitor"):
        samples = [d for d in by_consumer[consumer] if d.source_topic == topics.SAMPLES]
        assert len(samples) == len(BAD_SAMPLES)
        for letter in samples:
            original = base64.b64decode(letter.original_value)
            assert BAD_SAMPLES[original] in letter.reason, (letter.reason, BAD_SAMPLES[original])
    (ghost,) = [d for d in by_consumer["trainer"] if d.source_topic == topics.RETRAIN_REQUESTS]
    assert "no model named 'ghost'" in ghost.reason
    (garbage,) = [d for d in by_consumer["monitor"] if d.source_topic == topics.CANDIDATES]
    assert base64.b64decode(garbage.original_value) == b"\x00\x01 garbage" and "not JSON" in garbage.reason

    stats = httpx.get(f"{stack.url('trainer')}/v1/stats").json()
    assert stats["consumer"]["dead_lettered"] == len(BAD_SAMPLES) + 1
    assert stats["samples"] == {}
    # Services stayed up and logged no traceback for any of it.
    for name in ("ingest", "trainer", "monitor", "inference-0"):
        assert httpx.get(f"{stack.url(name)}/healthz").status_code == 200
        log = (stack.state_dir / "logs" / f"{name}.log").read_text()
        assert "Traceback" not in log and '"exception"' not in log, name
