"""Faults on a three-broker Apache Kafka cluster (KRaft, replication 3, ``min.insync.replicas=2``).

SIGKILL of the broker that leads ``refit.samples`` while ingest takes 20,000 samples from
concurrent clients: every sample answered 202 is in the trainer's dataset exactly once, and on the
topic exactly once. The test prints acknowledged / stored / lost / duplicated.
"""

from __future__ import annotations

import json
import signal
import threading
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from refit import topics
from refit.datasets import sample_rows
from services.ingest.app import _sample_id
from tests.chaos.helpers import QUIET_TRIGGERS, read_topics, stored_count, stored_ids, trainer_stats, wait_until

pytestmark = pytest.mark.integration
CLIENTS, BATCH, TOTAL = 4, 100, 20_000
KILL_AT = TOTAL // 3  # rows acknowledged when the leader dies


@dataclass(frozen=True)
class Request:
    ids: tuple[str, ...]
    outcome: str  # "202", another status code, or "cut" (no answer)


def post_share(n: int, url: str, rows: list[dict], requests: list[Request]) -> None:
    """Client ``n`` posts its share of TOTAL rows in batches, once each (no retry: a 503 is counted)."""
    with httpx.Client(timeout=60) as client:
        for i in range(n, TOTAL // BATCH, CLIENTS):
            keys = [f"cluster-{i}-{j}" for j in range(BATCH)]
            body = {"model": "digits", "samples": [
                {**rows[(i * BATCH + j) % len(rows)], "idempotency_key": k} for j, k in enumerate(keys)]}
            ids = tuple(_sample_id("digits", k) for k in keys)
            try:
                outcome = str(client.post(f"{url}/v1/samples:batch", json=body).status_code)
            except httpx.TransportError:
                outcome = "cut"
            requests.append(Request(ids, outcome))


def leader_of(bootstrap: str, topic: str) -> int:
    metadata = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(topic, timeout=10)
    return int(metadata.topics[topic].partitions[0].leader)


def test_sigkill_of_the_samples_leader_under_load_loses_and_duplicates_nothing(stack_factory, specs_file) -> None:
    stack = stack_factory(specs_file(only=("digits",), digits={"training": {"min_new_samples": None},
                                                               "triggers": QUIET_TRIGGERS}), kafka_nodes=3)
    rows = [{k: v for k, v in r.items() if k != "idempotency_key"} for r in sample_rows("digits")]
    requests: list[Request] = []
    clients = [threading.Thread(target=post_share, args=(n, stack.url("ingest"), rows, requests), daemon=True)
               for n in range(CLIENTS)]
    for c in clients:
        c.start()
    wait_until("a third of the rows acknowledged", lambda: sum(
        len(r.ids) for r in list(requests) if r.outcome == "202") >= KILL_AT, timeout_s=300, interval_s=0.01)
    leader = leader_of(stack.bootstrap, topics.SAMPLES)
    stack.stop_process(stack.broker_name(leader), signal.SIGKILL)
    for c in clients:
        c.join(600)
    assert not any(c.is_alive() for c in clients)

    outcomes = Counter(r.outcome for r in requests)
    acked = {i for r in requests if r.outcome == "202" for i in r.ids}
    wait_until("the trainer stored every acknowledged sample",
               lambda: acked <= {i for ids in stored_ids(stack) for i in ids}, timeout_s=180, interval_s=0.5)
    on_topic = Counter(json.loads(m.value())["sample_id"] for m in read_topics(
        stack.bootstrap, [topics.SAMPLES], lambda ms: len(ms) >= len(acked), timeout_s=60))
    wait_until("the trainer stored every sample on the topic",  # unanswered rows too, if they were published
               lambda: set(on_topic) <= {i for ids in stored_ids(stack) for i in ids}, timeout_s=60, interval_s=0.5)
    with httpx.Client(timeout=30) as client:
        stats = trainer_stats(client, stack)
    training, holdout = stored_ids(stack)
    stored = set(training) | set(holdout)
    lost = acked - stored
    duplicated_stored = len(training) + len(holdout) - len(stored)
    duplicated_on_topic = sum(n - 1 for n in on_topic.values())
    unanswered = {i for r in requests if r.outcome != "202" for i in r.ids}

    print(f"3 brokers, leader {leader} of {topics.SAMPLES} SIGKILLed after {KILL_AT} rows: requests "
          f"{dict(outcomes)} of {BATCH} rows; acknowledged {len(acked)}, stored {len(stored)} ({len(training)} "
          f"training + {len(holdout)} holdout), lost {len(lost)}, duplicated {duplicated_stored} stored / "
          f"{duplicated_on_topic} on the topic; stored without a 202 {len(stored - acked)}")
    assert len(requests) == TOTAL // BATCH and len(acked) >= KILL_AT
    assert not lost
    assert duplicated_stored == 0 and duplicated_on_topic == 0
    assert stored - acked <= unanswered  # only a request that got no 202 may have been stored without one
    assert set(on_topic) == stored and len(stored) == stored_count(stats)
