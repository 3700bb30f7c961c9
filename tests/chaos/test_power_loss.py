"""Every process SIGKILLed at once, Apache Kafka included, mid-stream; then the stack starts again on
the same state (issue 13's user story: on the embedded broker 71% of acknowledged samples were gone).

Clients post batches with idempotency keys, so every row's id is known before it is sent. After
the restart every row answered 202 is in the trainer's dataset exactly once, and on
``refit.samples`` exactly once. Rows of requests in flight at the kill may be stored (published,
no answer came back) or not: all or none per request.
"""

from __future__ import annotations

import json
import signal
import threading
from collections import Counter

import httpx
import pytest

from refit import topics
from refit.datasets import sample_rows
from tests.chaos.helpers import QUIET_TRIGGERS, read_topics, stored_count, stored_ids, trainer_stats, wait_until
from tests.chaos.test_ingest_kill import BATCH, MAX_REQUESTS, Producer

pytestmark = pytest.mark.integration
CLIENTS = 4
ACKED_BEFORE_KILL = 60  # requests answered 202 before the power goes


@pytest.mark.parametrize("nodes", [1, 3], ids=["one-node", "three-brokers"])
def test_killing_every_process_brokers_included_loses_and_duplicates_no_acknowledged_sample(
        stack_factory, specs_file, nodes) -> None:
    stack = stack_factory(specs_file(only=("digits",), digits={"training": {"min_new_samples": None},
                                                               "triggers": QUIET_TRIGGERS}), kafka_nodes=nodes)
    rows = [{k: v for k, v in r.items() if k != "idempotency_key"} for r in sample_rows("digits")]
    halt, budget = threading.Event(), [MAX_REQUESTS]
    producers = [Producer(n, stack.url("ingest"), rows, halt, budget) for n in range(CLIENTS)]
    for p in producers:
        p.start()
    try:
        wait_until("the load is flowing", lambda: sum(s.outcome == "202" for p in producers for s in p.sent)
                   >= ACKED_BEFORE_KILL, timeout_s=60, interval_s=0.01)
        procs = list(stack.procs.values())
        for proc in procs:  # the power goes: no shutdown code runs anywhere
            proc.send_signal(signal.SIGKILL)
        for proc in procs:
            proc.wait()
        stack.procs.clear()
    finally:
        halt.set()
        for p in producers:
            p.join(60)
    sent = [s for p in producers for s in p.sent]
    outcomes = Counter(s.outcome for s in sent)
    acked = {i for s in sent if s.outcome == "202" for i in s.ids}
    in_flight = [s for s in sent if s.outcome == "cut"]

    stack.start()  # the same state dir: Kafka on the log it had, the services on their SQLite
    wait_until("the trainer stored every acknowledged sample",
               lambda: acked <= {i for ids in stored_ids(stack) for i in ids}, timeout_s=120, interval_s=0.5)
    # Rows of requests cut at the kill may be on the topic too, and reach the trainer after the
    # acknowledged ones: compare the dataset with the topic once the trainer has read all of it.
    on_topic = Counter(json.loads(m.value())["sample_id"] for m in read_topics(
        stack.bootstrap, [topics.SAMPLES], lambda ms: len(ms) >= len(acked)))
    wait_until("the trainer stored every sample on the topic",
               lambda: set(on_topic) <= {i for ids in stored_ids(stack) for i in ids}, timeout_s=60, interval_s=0.5)
    with httpx.Client(timeout=30) as client:
        stats = trainer_stats(client, stack)
    training, holdout = stored_ids(stack)
    stored = set(training) | set(holdout)
    lost = acked - stored
    duplicated_stored = len(training) + len(holdout) - len(stored)
    duplicated_on_topic = sum(n - 1 for n in on_topic.values())
    doubtful_stored = [sum(i in stored for i in s.ids) for s in in_flight]

    print(f"{stack.broker} ({stack.kafka_nodes} node(s)): requests {len(sent)} of {BATCH} rows by {CLIENTS} clients "
          f"{dict(outcomes)}; acknowledged {len(acked)}, stored {len(stored)} ({len(training)} training + "
          f"{len(holdout)} holdout), lost {len(lost)}, duplicated {duplicated_stored} stored / "
          f"{duplicated_on_topic} on the topic; in flight at the kill {len(in_flight)} (rows stored per request: "
          f"{doubtful_stored})")
    assert len(acked) >= ACKED_BEFORE_KILL * BATCH and outcomes["cut"] + outcomes["refused"] > 0  # it hit the load
    assert set(outcomes) <= {"202", "refused", "cut"}
    assert not lost
    assert duplicated_stored == 0 and duplicated_on_topic == 0
    assert stored - acked <= {i for s in in_flight for i in s.ids}  # the only rows stored without a 202
    assert all(n in (0, BATCH) for n in doubtful_stored)
    assert set(on_topic) == stored and len(stored) == stored_count(stats)
