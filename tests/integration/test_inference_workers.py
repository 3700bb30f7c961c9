"""One inference replica with a worker per core (REFIT_INFERENCE_WORKERS): every worker follows
every decision and swaps on its own, the kernel spreads connections over the workers, and
/metrics answers with the sums of all of them. Ingest runs two workers in the same stack
(REFIT_INGEST_WORKERS): every sample of the test goes through them."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.chaos.helpers import QUIET_TRIGGERS, TOKEN, two_champions, wait_until

pytestmark = pytest.mark.integration


def serving(url: str, connections: int = 40) -> dict[str, int]:
    """Worker → the digits version it serves, seen over ``connections`` new connections."""
    seen: dict[str, int] = {}
    for _ in range(connections):
        with httpx.Client(base_url=url, timeout=10) as client:  # a new connection, then kept alive
            worker = client.get("/v1/stats").json()["replica_id"]
            versions = {m["name"]: m["version"] for m in client.get("/v1/models").json()}
            seen[worker] = versions["digits"]
    return seen


def requests_counted(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r'^refit_inference_requests_total\{[^}]*status="200"[^}]*\} (\S+)$',
                                            text, re.M))


def samples_counted(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r'^refit_samples_ingested_total\{[^}]*\} (\S+)$', text, re.M))


def test_every_worker_swaps_and_metrics_are_summed(stack_factory, specs_file) -> None:
    stack = stack_factory(specs_file(only=("digits",), digits={"triggers": QUIET_TRIGGERS}),
                          env={"REFIT_INFERENCE_WORKERS": "2", "REFIT_INGEST_WORKERS": "2"})
    url = stack.url("inference-0")
    with httpx.Client(timeout=30) as client:
        first, second, row = two_champions(client, stack)
        workers = wait_until("both workers serving v2", lambda: (s := serving(url)) and set(s.values()) == {second}
                             and len(s) == 2 and s)
        print(f"workers after promotion: {workers}")
        assert set(workers) == {"inference-0-w0", "inference-0-w1"}

        response = client.post(f"{stack.url('monitor')}/v1/models/digits/rollback", json={"reason": "workers"},
                               headers=TOKEN)
        response.raise_for_status()
        back = wait_until("both workers serving the rolled-back version",
                          lambda: (s := serving(url)) and set(s.values()) == {first} and len(s) == 2 and s)
        print(f"workers after rollback: {back}")

        before = requests_counted(url)
        sent = 60
        for _ in range(sent):  # new connections: both workers answer some of them
            with httpx.Client(timeout=10) as fresh:
                assert fresh.post(f"{url}/v1/models/digits/predict", json={"features": row}).json()["version"] == first
        assert requests_counted(url) - before == sent

        # Ingest's two workers: each sample, posted on a new connection, accepted once and counted in the sum.
        ingest, before = stack.url("ingest"), samples_counted(stack.url("ingest"))
        for i in range(40):
            with httpx.Client(timeout=10) as fresh:
                response = fresh.post(f"{ingest}/v1/samples", json={"model": "digits", "features": row, "label": "3",
                                                                    "idempotency_key": f"workers-{i}"})
                assert response.status_code == 202, response.text
        assert samples_counted(ingest) - before == 40
