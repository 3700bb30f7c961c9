"""OpenTelemetry across real processes: one trace from an ingest request to the swap it caused on
every replica, each process's spans written by the SDK's own exporter to a file."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from refit.demo import digits_waves, post_rows, wait_for_decisions

pytestmark = pytest.mark.e2e

SERVICES = ("ingest", "trainer", "monitor", "inference")


def spans(directory: Path) -> list[dict[str, Any]]:
    found = []
    for service in SERVICES:
        path = directory / f"{service}.jsonl"
        if path.exists():
            found += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return found


def test_one_trace_runs_from_an_ingest_request_to_every_replicas_swap(stack_factory, specs_file, tmp_path) -> None:
    traces = tmp_path / "traces"
    env = {f"REFIT_{s.upper()}_TRACE_FILE": str(traces / f"{s}.jsonl") for s in SERVICES}
    stack = stack_factory(specs_file(only=("digits",)), replicas=2, env=env)
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    rows = digits_waves(3)[0][:400]
    with httpx.Client(timeout=30, headers={"traceparent": f"00-{trace_id}-{caller}-01"}) as client:
        post_rows(client, stack.url("ingest"), "digits", rows, batch=500)  # one request, one ingest span
    with httpx.Client(timeout=30) as client:
        decision = wait_for_decisions(client, stack.url("monitor"), "digits", 1)[0]
        assert decision["event_type"] == "ModelPromoted"
        for replica in stack.replicas:
            url = f"{stack.url(replica)}/v1/models/digits/predict"
            deadline = time.monotonic() + 60
            while client.post(url, json={"features": rows[0]["features"]}).status_code != 200:
                assert time.monotonic() < deadline, f"{replica} never served v1"
                time.sleep(0.1)
        sampled, unsampled = secrets.token_hex(16), secrets.token_hex(16)
        for tid, flags in ((sampled, "01"), (unsampled, "00")):
            client.post(f"{stack.url('inference-0')}/v1/models/digits/predict", json={"features": rows[0]["features"]},
                        headers={"traceparent": f"00-{tid}-{secrets.token_hex(8)}-{flags}"}).raise_for_status()

    def chain() -> dict[str, list[dict[str, Any]]]:
        by_name: dict[str, list[dict[str, Any]]] = {}
        for s in spans(traces):
            if s["context"]["trace_id"] == f"0x{trace_id}":
                by_name.setdefault(s["name"], []).append(s)
        return by_name

    deadline = time.monotonic() + 30
    while len((found := chain()).get("swap", [])) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert {"POST /v1/samples:batch", "ingest samples", "train", "judge", "swap"} <= set(found), sorted(found)
    (request,), (ingest,) = found["POST /v1/samples:batch"], found["ingest samples"]
    (train,), (judge,) = found["train"], found["judge"]  # the first (and only) training: v1
    assert request["parent_id"] == f"0x{caller}" and request["kind"] == "SpanKind.SERVER"  # FastAPI's own span
    by_id = {s["context"]["span_id"]: s for group in found.values() for s in group}
    up, hops = ingest, 0
    while up["parent_id"] in by_id and hops < 5:  # within the request's span (FastAPI's endpoint span)
        up, hops = by_id[up["parent_id"]], hops + 1
    assert up is request and hops >= 1
    assert ingest["resource"]["attributes"]["service.name"] == "refit-ingest"
    assert train["parent_id"] == ingest["context"]["span_id"]  # the sample that made it due
    assert train["resource"]["attributes"]["service.name"] == "refit-trainer"
    assert judge["parent_id"] == train["context"]["span_id"]  # the candidate carried it
    assert judge["attributes"]["version"] == decision["version"]
    swaps = found["swap"]
    assert len(swaps) == 2 and {s["parent_id"] for s in swaps} == {judge["context"]["span_id"]}  # every replica
    assert {s["attributes"]["source"] for s in swaps} == {"topic"}
    def of(trace: str) -> list[str]:
        return [s["name"] for s in spans(traces) if s["context"]["trace_id"] == f"0x{trace}"]

    while not of(sampled) and time.monotonic() < deadline:  # spans are written in batches, every 0.2 s
        time.sleep(0.2)
    assert of(sampled) == ["predict"]  # a sampled caller's prediction is a span; an unsampled one is not
    assert of(unsampled) == []
