"""What the fault tests share: polling, the services' state as seen from outside, a topic reader."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from refit import demo
from refit.stack import Stack

TOKEN = {"authorization": "Bearer refit-local-token"}
# No automatic retrain requests from the monitor: every candidate in these tests is one we caused.
QUIET_TRIGGERS = {"drift": False, "performance": False, "max_age_days": None}
T = TypeVar("T")
BENCH = Path(__file__).resolve().parents[2] / "bench" / "swap_under_load.py"


def swap_bench() -> ModuleType:
    """bench/swap_under_load.py: its load generator and serving-interval check, shared with the tests."""
    if "swap_under_load" not in sys.modules:
        spec = importlib.util.spec_from_file_location("swap_under_load", BENCH)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up while being built
        spec.loader.exec_module(module)
    return sys.modules["swap_under_load"]


def wait_until(what: str, check: Callable[[], T], timeout_s: float = 60, interval_s: float = 0.1) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s}s (last: {value!r})")
        time.sleep(interval_s)


def trainer_stats(client: httpx.Client, stack: Stack) -> dict[str, Any]:
    return client.get(f"{stack.url('trainer')}/v1/stats").json()  # type: ignore[no-any-return]


def stored_count(stats: dict[str, Any], model: str = "digits") -> int:
    """Samples the trainer stored: training rows plus the holdout rows it saw and skipped."""
    return int(stats["samples"].get(model, 0)) + int(stats["holdout_skipped"].get(model, 0))


def stored_ids(stack: Stack, model: str = "digits") -> tuple[list[str], list[str]]:
    """Every sample id the trainer stored (training rows, holdout rows it skipped), read from its SQLite."""
    db = sqlite3.connect(f"file:{stack.state_dir / 'trainer' / 'trainer.sqlite'}?mode=ro", uri=True)
    try:
        training = [r[0] for r in db.execute("SELECT sample_id FROM samples WHERE model = ?", (model,))]
        holdout = [r[0] for r in db.execute("SELECT sample_id FROM holdout_seen WHERE model = ?", (model,))]
    finally:
        db.close()
    return training, holdout


def monitor_rows(stack: Stack, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    """Read the monitor's registry directly (read-only): used while the monitor is down."""
    db = sqlite3.connect(f"file:{stack.state_dir / 'monitor' / 'monitor.sqlite'}?mode=ro", uri=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def decisions(client: httpx.Client, stack: Stack, model: str = "digits") -> list[dict[str, Any]]:
    """The model's decision history, oldest first."""
    return list(reversed(client.get(f"{stack.url('monitor')}/v1/models/{model}/decisions",
                                    params={"limit": 1000}).json()))


def assert_contiguous(history: list[dict[str, Any]]) -> None:
    """Decision sequences are 1..n: none missing, none twice."""
    sequences = [d["sequence"] for d in history]
    assert sequences == list(range(1, len(history) + 1)), sequences


def log_events(stack: Stack, name: str, event: str) -> list[dict[str, Any]]:
    """The service's JSON log lines with this event name (the log survives its restarts)."""
    found = []
    for line in (stack.state_dir / "logs" / f"{name}.log").read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event:
                found.append(record)
    return found


def retrain(client: httpx.Client, stack: Stack, reason: str, model: str = "digits") -> str:
    response = client.post(f"{stack.url('monitor')}/v1/models/{model}/retrain", json={"reason": reason},
                           headers=TOKEN)
    assert response.status_code == 202, response.text
    return str(response.json()["request_id"])


def served_version(client: httpx.Client, url: str, row: dict[str, float]) -> int | None:
    try:
        response = client.post(f"{url}/v1/models/digits/predict", json={"features": row})
    except httpx.HTTPError:
        return None
    return int(response.json()["version"]) if response.status_code == 200 else None


def two_champions(client: httpx.Client, stack: Stack) -> tuple[int, int, dict[str, float]]:
    """Two promoted versions of digits, serving on every replica; and a probe row."""
    (first, second), row = champions(client, stack, 2)
    return first, second, row


def champions(client: httpx.Client, stack: Stack, count: int) -> tuple[list[int], dict[str, float]]:
    """``count`` promoted versions of digits, the last serving on every replica; and a probe row."""
    return demo.champions(client, stack.url("ingest"), stack.url("monitor"),  # type: ignore[return-value]
                          [stack.url(r) for r in stack.replicas], TOKEN["authorization"].split()[1], count)


def read_topics(bootstrap: str, names: list[str], until: Callable[[list[Message]], bool], timeout_s: float = 30,
                quiet_s: float = 1.0) -> list[Message]:
    """Every record of the topics from the beginning, read with a third-party client (librdkafka).

    The embedded broker reports wrong end offsets after multi-record batches, so instead of
    watermarks: read until ``until`` holds and nothing new came for ``quiet_s``.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"refit-test-reader-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, "log_level": 3})
    records: list[Message] = []
    try:
        metadata = consumer.list_topics(timeout=10)
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in names for p in metadata.topics[t].partitions])
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=1000, timeout=0.2)
            errors = [m.error() for m in batch if m.error() is not None]
            assert all(e.code() == KafkaError._PARTITION_EOF for e in errors), errors
            fresh = [m for m in batch if m.error() is None]
            if fresh:
                records.extend(fresh)
                last_new = time.monotonic()
            if until(records) and time.monotonic() - last_new >= quiet_s:
                break
    finally:
        consumer.close()
    return records


def topic_values(bootstrap: str, topic: str, until: Callable[[list[bytes]], bool], timeout_s: float = 30,
                 quiet_s: float = 1.0) -> list[bytes]:
    """Every record value of one topic from the beginning (``read_topics``)."""
    return [m.value() for m in read_topics(bootstrap, [topic], lambda ms: until([m.value() for m in ms]),
                                           timeout_s, quiet_s)]
