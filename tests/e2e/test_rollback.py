"""A rollback through the API makes every inference replica answer with the previous champion."""

from __future__ import annotations

import time

import httpx
import pytest

from refit.demo import digits_waves, post_rows, wait_for_decisions

pytestmark = pytest.mark.e2e
TOKEN = {"authorization": "Bearer refit-local-token"}


def versions_served(client: httpx.Client, urls: list[str], row: dict[str, float]) -> list[int]:
    return [client.post(f"{u}/v1/models/digits/predict", json={"features": row}).json()["version"] for u in urls]


def wait_all_serve(client: httpx.Client, urls: list[str], row: dict[str, float], version: int,
                   timeout_s: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if versions_served(client, urls, row) == [version] * len(urls):
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"replicas did not all serve v{version}: {versions_served(client, urls, row)}")


def test_rollback_reaches_every_replica(stack_factory, specs_file) -> None:
    stack = stack_factory(specs_file(only=("digits",)), replicas=2)
    monitor = stack.url("monitor")
    replicas = [stack.url(r) for r in stack.replicas]
    waves = digits_waves(3)
    row = waves[0][0]["features"]
    with httpx.Client(timeout=30) as client:
        post_rows(client, stack.url("ingest"), "digits", waves[0])
        wait_for_decisions(client, monitor, "digits", 1)
        # Nothing to roll back to yet.
        assert client.post(f"{monitor}/v1/models/digits/rollback", json={}, headers=TOKEN).status_code == 409
        post_rows(client, stack.url("ingest"), "digits", waves[1])
        second = wait_for_decisions(client, monitor, "digits", 2)[0]
        if second["event_type"] != "ModelPromoted":  # make the second champion explicitly
            client.post(f"{monitor}/v1/models/digits/retrain", json={"reason": "second"}, headers=TOKEN)
            second = wait_for_decisions(client, monitor, "digits", 3)[0]
        assert second["event_type"] == "ModelPromoted", second["reasons"]
        current = second["version"]
        wait_all_serve(client, replicas, row, current)

        assert client.post(f"{monitor}/v1/models/digits/rollback", json={}).status_code == 401
        never = client.post(f"{monitor}/v1/models/digits/rollback", json={"to_version": 99}, headers=TOKEN)
        assert never.status_code == 409 and "never a champion" in never.json()["detail"]

        response = client.post(f"{monitor}/v1/models/digits/rollback", json={"reason": "bad feedback"},
                               headers=TOKEN)
        assert response.status_code == 200, response.text
        event = response.json()
        assert event["event_type"] == "ModelRolledBack"
        assert (event["version"], event["champion_version"]) == (1, current)
        seconds = wait_all_serve(client, replicas, row, 1)
        print(f"rollback reached {len(replicas)} replicas in {seconds:.3f}s")

        summary = client.get(f"{monitor}/v1/models/digits").json()
        assert summary["champion"]["version"] == 1 and summary["champion"]["decision"] == "ModelRolledBack"
        versions = client.get(f"{monitor}/v1/models/digits/versions").json()
        assert [v["version"] for v in versions if v["champion"]] == [1]
        assert all(v["training"]["spec_hash"] and v["training"]["code_version"] for v in versions)
        history = client.get(f"{monitor}/v1/models/digits/decisions").json()
        assert history[0]["event_type"] == "ModelRolledBack" and history[0]["reasons"][0].endswith("bad feedback")

        # Rolling forward again by name also reaches every replica.
        forward = client.post(f"{monitor}/v1/models/digits/rollback", json={"to_version": current}, headers=TOKEN)
        assert forward.status_code == 200
        wait_all_serve(client, replicas, row, current)
