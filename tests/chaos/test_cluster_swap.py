"""A broker restart during hot swaps under load, on the three-broker cluster (replication 3, min ISR 2).

Two inference replicas serve digits under a load of 4 client threads while the monitor makes 40
rollback decisions cycling over three champions (each swap fetches, verifies, loads and warms a
session: bench/swap_under_load.py, as in test_swap_under_load.py). Once the first decision is
out, the broker that leads ``refit.decisions`` is SIGKILLed and started again on its log; decisions
go on while it is down and while it comes back. No request fails, every response names a version
being served during it, and every decision reaches every replica. Prints requests / failed.
"""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from refit import topics
from tests.chaos.helpers import QUIET_TRIGGERS, champions, served_version, swap_bench, wait_until
from tests.chaos.test_cluster_faults import leader_of

pytestmark = pytest.mark.integration
ROLLBACKS = 40


def test_a_broker_restart_during_swaps_under_load_fails_no_request(stack_factory, specs_file) -> None:
    bench = swap_bench()
    stack = stack_factory(specs_file(only=("digits",), digits={"triggers": QUIET_TRIGGERS}), replicas=2,
                          kafka_nodes=3)
    assert stack.kafka is not None
    with httpx.Client(timeout=30) as client:
        versions, row = champions(client, stack, 3)
    restart: dict[str, float] = {}

    def restart_the_decisions_leader() -> None:
        with httpx.Client(timeout=30) as client:  # the first swap: a replica serves another champion
            wait_until("the first swap", lambda: served_version(client, stack.url("inference-0"), row) not in (
                None, versions[-1]), timeout_s=120, interval_s=0.05)
        node = leader_of(stack.bootstrap, topics.DECISIONS)
        restart["node"], restart["killed"] = node, time.monotonic()
        stack.stop_process(stack.broker_name(node), signal.SIGKILL)
        wait_until("another broker leads refit.decisions", lambda: leader_of(stack.bootstrap, topics.DECISIONS) not in (
            node, -1), timeout_s=60, interval_s=0.1)
        restart["moved"] = time.monotonic()
        stack.kafka.start_node(node, wait=False)  # on the log it had
        stack.procs[stack.broker_name(node)] = stack.kafka.procs[node]
        wait_until("the restarted broker answers", lambda: stack.kafka.node_answers(node), timeout_s=120,
                   interval_s=0.2)
        restart["back"] = time.monotonic()

    restarter = threading.Thread(target=restart_the_decisions_leader, daemon=True)
    restarter.start()
    result = bench.measure(stack.url("monitor"), [stack.url(r) for r in stack.replicas], row, rollbacks=ROLLBACKS,
                           clients=4, steady_s=2.0, gap_s=0.3, max_seconds=240, max_requests=200_000,
                           targets=versions)
    restarter.join(120)
    assert not restarter.is_alive()
    during = [s for s in result.swaps if restart["killed"] <= s.requested <= restart["back"]]
    first, last = result.swaps[0].requested, result.swaps[-1].answered

    print(f"3 brokers, leader {restart['node']:.0f} of {topics.DECISIONS} SIGKILLed after the first of {ROLLBACKS} "
          f"swaps and started again ({restart['back'] - restart['killed']:.1f} s down, leader moved after "
          f"{restart['moved'] - restart['killed']:.1f} s, "
          f"{len(during)} swaps meanwhile; swaps from 0 to {last - first:.1f} s, killed at {restart['killed'] - first:.1f} s, "
          f"back at {restart['back'] - first:.1f} s); 2 replicas, 4 clients: requests {len(result.outcomes)}, "
          f"failed {len(result.failures)}, wrong version {len(result.wrong_version)}\n{bench.report(result)}")
    assert result.failures == []
    assert result.wrong_version == []
    assert [s.version for s in result.swaps] == (versions * ROLLBACKS)[:ROLLBACKS]  # every decision served
    assert during, "no swap happened while the broker was down or rejoining"
    assert len(result.swapping) > 100
