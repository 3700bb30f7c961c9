"""A restart of the embedded broker (SIGKILL, then a new one on the same port: an empty cluster).

Without restarting any service: the topics are recreated, the consumers resume, ingest accepts
again, and new samples flow to a new decision that inference follows. Nothing the trainer or
the monitor had already stored is lost or doubled. Samples acknowledged before the crash that
no consumer had read yet are gone with the broker (it keeps nothing; Apache Kafka would keep
them): the test counts them; docs/reliability.md states the window.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from refit import topics
from refit.core.split import is_holdout
from refit.demo import digits_waves, post_rows, wait_for_decisions
from tests.chaos.helpers import (QUIET_TRIGGERS, assert_contiguous, decisions, served_version, stored_ids,
                                 topic_values, wait_until)

pytestmark = pytest.mark.integration


async def _topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        return set(await admin.list_topics())
    finally:
        await admin.close()


def post_until_accepted(client: httpx.Client, url: str, rows: list[dict], batch: int = 200) -> tuple[list[str], int]:
    """Post in batches; a 503 (nothing accepted) is retried. Returns the acknowledged ids and the 503s."""
    ids, refused = [], 0
    for start in range(0, len(rows), batch):
        for _ in range(50):
            response = client.post(f"{url}/v1/samples:batch", json={"model": "digits",
                                                                    "samples": rows[start:start + batch]})
            if response.status_code == 202:
                ids.extend(response.json()["sample_ids"])
                break
            assert response.status_code == 503, response.text
            refused += 1
            time.sleep(0.2)
        else:
            raise AssertionError("ingest kept answering 503")
    return ids, refused


def settled(read, quiet_s: float = 1.5, timeout_s: float = 30):
    """``read()`` once it returned the same value for ``quiet_s``."""
    deadline = time.monotonic() + timeout_s
    last, since = read(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, "never settled"
        time.sleep(0.1)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
    return last


@pytest.mark.brokers("embedded")
def test_embedded_broker_restart_is_survived_without_restarting_a_service(stack_factory, specs_file) -> None:
    # Without the replica's periodic check against the monitor, which would catch up a decision
    # the topic lost and hide a consumer that stopped: here the decisions topic alone must do it.
    stack = stack_factory(specs_file(only=("digits",), digits={"triggers": QUIET_TRIGGERS}),
                          env={"REFIT_INFERENCE_RECONCILE_S": "0"})
    waves = digits_waves(3)
    row = waves[0][0]["features"]
    pids = {name: proc.pid for name, proc in stack.procs.items() if name != "broker"}
    with httpx.Client(timeout=30) as client:
        post_rows(client, stack.url("ingest"), "digits", waves[0])
        first = wait_for_decisions(client, stack.url("monitor"), "digits", 1, timeout_s=90)[0]
        assert first["event_type"] == "ModelPromoted", first["reasons"]
        wait_until("inference serves v1", lambda: served_version(client, stack.url("inference-0"), row) == 1)
        swaps_before = client.get(f"{stack.url('inference-0')}/v1/stats").json()["swaps_by_source"]

        # Acknowledged just before the crash: some may not have been read by anyone yet.
        burst, _ = post_until_accepted(client, stack.url("ingest"), waves[2][:100], batch=25)
        stack.stop_process("broker", signal.SIGKILL)
        # Records fetched before the kill may still be being written: wait until both stores are still.
        training_before, holdout_before, monitor_holdout_before = settled(lambda: (
            *stored_ids(stack), client.get(f"{stack.url('monitor')}/v1/models/digits").json()["holdout_size"]))

        # Same port, an empty cluster, and no help from the fixture: the services recreate the topics.
        stack.start_broker(create_topics=False)
        wait_until("the services recreated the topics",
                   lambda: set(topics.ALL) <= asyncio.run(_topics(stack.bootstrap)), timeout_s=30)
        new_ids, refused = post_until_accepted(client, stack.url("ingest"), waves[1])
        posted = time.monotonic()
        second = wait_for_decisions(client, stack.url("monitor"), "digits", 2, timeout_s=120)[0]
        if second["event_type"] == "ModelPromoted":
            wait_until(f"inference follows to v{second['version']}",
                       lambda: served_version(client, stack.url("inference-0"), row) == second["version"])
        wait_until("the trainer stored every new row", lambda: set(new_ids) <= {
            i for ids in stored_ids(stack) for i in ids}, timeout_s=60, interval_s=0.5)
        all_stored_s = time.monotonic() - posted
        training_after, holdout_after = stored_ids(stack)
        new_holdout = [i for i in new_ids if is_holdout(i, 0.2, "digits")]
        monitor_holdout_after = wait_until("the monitor holds every new holdout row", lambda: h if (h := client.get(
            f"{stack.url('monitor')}/v1/models/digits").json()["holdout_size"]) >= monitor_holdout_before + len(
            new_holdout) else None, timeout_s=60, interval_s=0.5)
        history = decisions(client, stack)
        served = served_version(client, stack.url("inference-0"), row)
        swaps = client.get(f"{stack.url('inference-0')}/v1/stats").json()["swaps_by_source"]

    on_topic = [json.loads(v) for v in topic_values(stack.bootstrap, topics.DECISIONS, lambda vs: len(vs) >= 1)]
    stored_before = set(training_before) | set(holdout_before)
    burst_lost = [i for i in burst if i not in stored_before]
    print(f"before the crash: trainer stored {len(training_before)} training + {len(holdout_before)} holdout rows, "
          f"monitor holdout {monitor_holdout_before}; burst of {len(burst)} acknowledged right before the kill: "
          f"{len(burst) - len(burst_lost)} read by the trainer, {len(burst_lost)} lost with the broker; after the "
          f"restart: {len(new_ids)} rows accepted ({refused} answers 503 first), all stored by the trainer "
          f"{all_stored_s:.1f}s later, decision {second['sequence']} "
          f"{second['event_type']} v{second['version']}, inference serves v{served}; trainer "
          f"{len(training_after)} + {len(holdout_after)}, monitor holdout {monitor_holdout_after}; "
          f"decisions topic after the restart holds sequences {[d['sequence'] for d in on_topic]}")
    assert {n: p.pid for n, p in stack.procs.items() if n != "broker"} == pids  # no service was restarted
    # Nothing already stored is lost or doubled, and the new rows are stored exactly once.
    assert set(training_after) | set(holdout_after) == stored_before | set(new_ids)
    assert len(training_after) + len(holdout_after) == len(stored_before | set(new_ids))
    assert monitor_holdout_after == monitor_holdout_before + len(new_holdout)
    assert_contiguous(history)
    assert len(history) == 2 and all(d["published"] for d in history)
    assert [d["sequence"] for d in on_topic] == [2]  # the old topic is gone; the new decision is on the new one
    assert served == (second["version"] if second["event_type"] == "ModelPromoted" else 1)
    promoted = second["event_type"] == "ModelPromoted"
    assert swaps == {**swaps_before, "topic": swaps_before.get("topic", 0) + promoted}  # v2 came on the topic
