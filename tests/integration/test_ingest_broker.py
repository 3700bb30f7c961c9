"""Invariant 1: a 2xx means the broker acknowledged; with the broker gone ingest answers 503, then recovers."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from refit.stack import Stack, free_port, wait_http
from tests.conftest import SPECS

pytestmark = pytest.mark.integration


def sample(i: int) -> dict[str, object]:
    return {"model": "digits", "features": [float(i % 16)] * 64, "label": str(i % 10)}


@pytest.mark.brokers("kafka", "embedded")
def test_broker_down_means_503_and_recovery_without_restarting_ingest(tmp_path, broker) -> None:
    stack = Stack(state_dir=tmp_path, specs_path=SPECS, broker=broker)
    stack.state_dir.mkdir(parents=True, exist_ok=True)
    (stack.state_dir / "logs").mkdir()
    stack.start_broker()
    stack.ports["ingest"] = free_port()
    stack.start_service("ingest")
    try:
        url = stack.url("ingest")
        wait_http(f"{url}/healthz")
        with httpx.Client(timeout=30) as client:
            assert client.post(f"{url}/v1/samples", json=sample(1)).status_code == 202
            stack.stop_process("broker", signal.SIGKILL)
            outcomes = [client.post(f"{url}/v1/samples", json=sample(i)) for i in range(5)]
            assert [r.status_code for r in outcomes] == [503] * 5
            assert "broker unavailable" in outcomes[0].json()["detail"]
            batch = client.post(f"{url}/v1/samples:batch", json={"model": "digits", "samples": [sample(2)]})
            assert batch.status_code == 422  # 'model' is not a row field: validation still comes first
            assert client.get(f"{url}/readyz").status_code == 503

            stack.start_broker()  # same port: Kafka on the log it had, or an empty embedded cluster
            deadline = time.monotonic() + 30
            status = None
            while time.monotonic() < deadline:
                status = client.post(f"{url}/v1/samples", json=sample(3)).status_code
                if status == 202:
                    break
                assert status == 503
                time.sleep(0.5)
            assert status == 202
            assert client.get(f"{url}/readyz").status_code == 200
    finally:
        stack.stop()
