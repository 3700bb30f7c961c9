"""SIGKILL of one inference replica while champions swap: the other replica keeps answering with
no failed request and only versions being served, and the killed one comes back ready on the
current champion, whatever swaps happened while it was down or starting."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from tests.chaos.helpers import (QUIET_TRIGGERS, TOKEN, served_version, swap_bench, two_champions,
                                 wait_until)

pytestmark = pytest.mark.integration
ROLLBACKS = 12
KILL_AFTER = (2, 7)   # rollback calls after which the second replica is SIGKILLed, its swap under way


def test_a_replica_killed_during_swaps_fails_nothing_elsewhere_and_returns_on_the_champion(
        stack_factory, specs_file) -> None:
    bench = swap_bench()
    stack = stack_factory(specs_file(only=("digits",), digits={"triggers": QUIET_TRIGGERS}), replicas=2)
    survivor, victim = stack.url("inference-0"), stack.url("inference-1")
    monitor = stack.url("monitor")
    with httpx.Client(timeout=30) as client:
        first, second, row = two_champions(client, stack)
        steady = bench.Load([survivor], row, clients=2, max_requests=50_000, max_seconds=90).start()
        doomed = bench.Load([victim], row, clients=1, max_requests=50_000, max_seconds=90).start()
        swaps, restarts, restart_errors = [], [], []
        try:
            time.sleep(0.5)
            for n in range(1, ROLLBACKS + 1):
                requested = time.monotonic()
                response = client.post(f"{monitor}/v1/models/digits/rollback", json={"reason": "chaos"},
                                       headers=TOKEN)
                assert response.status_code == 200, response.text
                event = response.json()
                swap = bench.Swap(int(event["version"]), requested, time.monotonic(), str(event["occurred_at"]))
                swaps.append(swap)
                if n in KILL_AFTER:
                    for thread in restarts:  # the previous restart is complete: kill a replica that is back
                        thread.join(60)
                    stack.stop_process("inference-1", signal.SIGKILL)
                    # Restart while the next rollbacks happen: it bootstraps from the monitor and
                    # follows the decisions topic at the same time.
                    restarts.append(threading.Thread(target=_restart, args=(stack, "inference-1", restart_errors)))
                    restarts[-1].start()
                wait_until(f"the survivor serves v{swap.version}",
                           lambda v=swap.version: served_version(client, survivor, row) == v, interval_s=0.01)
                swap.everywhere = time.monotonic()  # the survivor is every replica the check is about
                time.sleep(0.25)
            for thread in restarts:
                thread.join(60)
            champion = swaps[-1].version
            wait_until("the restarted replica is ready", lambda: client.get(f"{victim}/readyz").status_code == 200)
            wait_until(f"the restarted replica serves the champion v{champion}",
                       lambda: served_version(client, victim, row) == champion, timeout_s=30)
            models = client.get(f"{victim}/v1/models").json()
        finally:
            outcomes = steady.stop()
            victim_outcomes = doomed.stop()
        summary = client.get(f"{monitor}/v1/models/digits").json()

    intervals = bench.serving_intervals(second, swaps)
    refused = [o for o in victim_outcomes if not o.ok]
    print(f"champions v{first}/v{second}; {len(swaps)} rollbacks, the second replica SIGKILLed after calls "
          f"{KILL_AFTER} and restarted during the next ones; surviving replica: {len(outcomes)} requests, "
          f"{sum(not o.ok for o in outcomes)} failed, versions {sorted({o.version for o in outcomes})}; "
          f"killed replica: {len(victim_outcomes)} requests, {len(refused)} refused or cut while down; "
          f"back ready on v{models[0]['version']} = champion v{summary['champion']['version']}")
    assert restart_errors == []
    assert all(o.ok for o in outcomes), [o for o in outcomes if not o.ok][:5]
    assert bench.wrong_versions(outcomes, intervals) == []
    assert {o.version for o in outcomes} == {first, second}
    assert models == [{"name": "digits", "version": champion, "digest": models[0]["digest"], "fallback": None}]
    assert summary["champion"]["version"] == champion
    assert len(refused) > 0  # the kills did land while it was being asked


def _restart(stack, name: str, errors: list[Exception]) -> None:
    try:
        stack.restart(name)
    except Exception as exc:  # reported by the test, not lost in a thread
        errors.append(exc)
