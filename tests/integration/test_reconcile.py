"""A replica that never reads a decision from the topic still follows the champion, through the monitor.

What the periodic check (``REFIT_INFERENCE_RECONCILE_S``) is for: a decision lost to a broker that
came back empty, a consumer that stopped, a swap refused for memory or a failed fetch. Here the
follower runs in-process with no consumer at all, against a real stack's monitor: it picks up the
current champion, then a rollback it was never sent.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from refit.artifacts import HttpArtifactStore
from refit.demo import champions as make_champions
from refit.settings import InferenceSettings
from refit.specs import load_specs
from services.inference.app import follow_monitor
from services.inference.serving import Champions
from tests.chaos.helpers import QUIET_TRIGGERS

pytestmark = pytest.mark.integration
TOKEN = "refit-local-token"


async def served_version(champions: Champions, version: int, timeout_s: float = 15) -> float:
    started = time.monotonic()
    while (served := champions.served.get("digits")) is None or served.version != version:
        assert time.monotonic() - started < timeout_s, f"not serving v{version}: {served}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def test_a_replica_without_a_decisions_consumer_follows_through_the_monitor(stack_factory, specs_file) -> None:
    specs_path = specs_file(only=("digits",), digits={"triggers": QUIET_TRIGGERS})
    stack = stack_factory(specs_path)
    monitor = stack.url("monitor")
    with httpx.Client(timeout=30) as client:
        versions, _ = make_champions(client, stack.url("ingest"), monitor, [stack.url("inference-0")], TOKEN, 2)

    settings = InferenceSettings(monitor_url=monitor, reconcile_s=0.2, decision_signing_key=stack.signing_key)
    store = HttpArtifactStore(monitor)
    champions = Champions(load_specs(specs_path), store, settings.decision_signing_key.get_secret_value().encode())

    async def follow() -> tuple[float, float]:
        stop = asyncio.Event()
        task = asyncio.create_task(follow_monitor(settings, champions, stop))
        try:
            await served_version(champions, versions[-1])
            async with httpx.AsyncClient(timeout=30) as client:
                response = await client.post(f"{monitor}/v1/models/digits/rollback", json={"reason": "test"},
                                             headers={"authorization": f"Bearer {TOKEN}"})
            assert response.status_code == 200, response.text
            caught_up_s = await served_version(champions, versions[0])
        finally:
            stop.set()
            stopping = time.monotonic()
            await asyncio.wait_for(task, timeout=5)
        return caught_up_s, time.monotonic() - stopping

    try:
        caught_up_s, stop_s = asyncio.run(follow())
    finally:
        store.close()
    print(f"caught up the rollback {caught_up_s:.2f}s after it, checking every 0.2s; stopped in {stop_s:.3f}s")
    assert dict(champions.swaps_by_source) == {"monitor": 2}
    assert champions.refused == {"signature": 0, "load": 0, "decode": 0, "memory": 0, "unconfigured": 0,
                                 "sequence": 0}
    assert stop_s < 1

    # reconcile_s=0: the start-up round only, then the follower is done (the topic does the rest).
    once = Champions(load_specs(specs_path), store := HttpArtifactStore(monitor), champions.key)
    try:
        asyncio.run(asyncio.wait_for(follow_monitor(settings.model_copy(update={"reconcile_s": 0}), once,
                                                    asyncio.Event()), timeout=30))
    finally:
        store.close()
    assert once.served["digits"].version == versions[0] and dict(once.swaps_by_source) == {"monitor": 1}

