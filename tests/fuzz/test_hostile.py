"""Hostile input, case by case, against a live stack: each is a clear 4xx or a refused decision,
quickly, and no service logs a traceback or an error for it (refused swaps excepted, by design).

One stack for the module (digits, diabetes, food-mood promoted); every test checks the log lines
written while it ran.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import socket
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import psutil
import pytest
from aiokafka import AIOKafkaProducer
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LogisticRegression

from refit import signing, topics
from refit.artifacts import LocalArtifactStore
from refit.datasets import sample_rows
from refit.demo import wait_for_decisions
from refit.events import ModelPromoted, SampleIngested
from refit.onnx_model import META_CLASSES, META_FEATURES, META_INPUT_KIND, META_TASK
from refit.settings import LOCAL_API_TOKEN
from refit.specs import ModelSpecs, load_specs
from refit.stack import Stack
from tests.chaos.helpers import wait_until
from tests.conftest import REPO, SPECS
from tests.fuzz.live import MODELS, SWAP_REFUSED, error_events, log_offsets, problems, promote, write_specs

EVERY = (*MODELS, "breast-cancer")  # this module's stack serves all four shipped models
SERVICES = ("ingest", "trainer", "monitor", "inference-0")

pytestmark = pytest.mark.integration

AUTH = {"authorization": f"Bearer {LOCAL_API_TOKEN}"}
JSON = {"content-type": "application/json"}
TIMEOUT = 30  # every answer below must come well within it: none of these may make a service work long
INGEST_LIMIT, MONITOR_LIMIT, INFERENCE_LIMIT = 8 * 1024 * 1024, 1024 * 1024, 16 * 1024 * 1024  # the defaults


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("hostile")
    live = Stack(state_dir=base / "stack", specs_path=write_specs(base / "models.yaml", SPECS, EVERY), broker="kafka")
    failed_before = request.session.testsfailed
    try:
        live.start()
        promote(live, EVERY)
        yield live
    finally:
        live.stop()
        if request.session.testsfailed > failed_before and (live.state_dir / "logs").exists():
            shutil.copytree(live.state_dir / "logs", REPO / "test-artifacts" / "test_hostile", dirs_exist_ok=True)


@pytest.fixture(autouse=True)
def quiet_logs(stack: Stack, request: pytest.FixtureRequest) -> Iterator[dict[str, int]]:
    """No traceback and no unexpected error in any service log while the test ran
    (a test marked as a known failure may log one: that is the failure it documents)."""
    before = log_offsets(stack)
    yield before
    if request.node.get_closest_marker("xfail"):
        return
    time.sleep(0.5)  # let the services flush what the last request made them log
    found = problems(stack, allowed=((SWAP_REFUSED, ""),), since=before)
    assert not found, "\n".join(found[:20])


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=TIMEOUT) as c:
        yield c


def body_routes(stack: Stack) -> list[tuple[str, str, dict[str, str], int]]:
    """Every operation that reads a request body: method, URL, the headers it needs to get that
    far, and its service's body limit."""
    ingest, monitor, inference = stack.url("ingest"), stack.url("monitor"), stack.url("inference-0")
    return [("POST", f"{ingest}/v1/samples", {}, INGEST_LIMIT),
            ("POST", f"{ingest}/v1/samples:batch", {}, INGEST_LIMIT),
            ("POST", f"{monitor}/v1/models/digits/retrain", AUTH, MONITOR_LIMIT),
            ("POST", f"{monitor}/v1/models/digits/rollback", AUTH, MONITOR_LIMIT),
            ("PUT", f"{monitor}/v1/models/digits/config", AUTH, MONITOR_LIMIT),
            ("POST", f"{inference}/v1/models/digits/predict", {}, INFERENCE_LIMIT),
            ("POST", f"{inference}/v1/models/food-mood/predict", {}, INFERENCE_LIMIT)]


def chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """A body sent without Content-Length (chunked), so only counting can find its size."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_a_body_over_the_limit_is_413_declared_or_streamed(stack: Stack, client: httpx.Client) -> None:
    for method, url, headers, limit in body_routes(stack):
        body = b"{" + b" " * limit + b"}"
        for content in (body, chunks(body)):
            response = client.request(method, url, content=content, headers={**headers, **JSON})
            assert response.status_code == 413, (url, response.status_code, response.text[:200])
            assert response.json() == {"detail": f"request body exceeds {limit} bytes"}


@pytest.mark.parametrize("depth", [500, 100_000])
@pytest.mark.parametrize("shape", ["array", "object", "in every field"])
def test_deeply_nested_json_is_a_quick_4xx(stack: Stack, client: httpx.Client, shape: str, depth: int) -> None:
    """Parsers stop near 1,000 levels (orjson, the standard library: a RecursionError); below that,
    a 500-level value is valid JSON that a validation error used to echo back recursively."""
    nest = "[" * depth + "]" * depth
    body = {"array": nest,
            "object": '{"reason":' * depth + "1" + "}" * depth,  # a key every route reads or refuses
            "in every field": "{" + ", ".join(f'"{field}": {nest}' for field in (
                "model", "label", "features", "samples", "reason", "to_version", "schedules", "inputs",
                "texts")) + "}"}[shape]
    for method, url, headers, _ in body_routes(stack):
        started = time.monotonic()
        response = client.request(method, url, content=body, headers={**headers, **JSON})
        assert 400 <= response.status_code < 500, (url, response.status_code, response.text[:200])
        assert time.monotonic() - started < 5, url  # refused at parsing or validation, not after a long walk


def test_a_batch_of_100000_rows_is_refused_whole(stack: Stack, client: httpx.Client) -> None:
    row = {"features": [0.0] * 10, "label": 1.0}
    response = client.post(f"{stack.url('ingest')}/v1/samples:batch",
                           json={"model": "diabetes", "samples": [row] * 100_000})
    assert response.status_code == 422, response.text[:300]
    assert response.json()["detail"][0]["msg"] == "at most 1000 samples per batch"
    response = client.post(f"{stack.url('inference-0')}/v1/models/diabetes/predict",
                           json={"inputs": [[0.0] * 10] * 100_000})
    assert response.status_code == 422, response.text[:300]
    assert response.json()["detail"][0]["msg"] == "at most 1024 rows per request"


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_are_refused_naming_the_field(stack: Stack, client: httpx.Client, token: str) -> None:
    features = "[" + ", ".join([token] + ["0.0"] * 9) + "]"
    ingest, monitor = stack.url("ingest"), stack.url("monitor")

    one = client.post(f"{ingest}/v1/samples", headers=JSON,
                      content=f'{{"model": "diabetes", "features": {features}, "label": 1}}')
    assert one.status_code == 422, one.text
    assert one.json()["detail"][0]["loc"] == ["body", "features", "age"]
    batch = client.post(f"{ingest}/v1/samples:batch", headers=JSON,
                        content=f'{{"model": "diabetes", "samples": [{{"features": {features}, "label": 1}}]}}')
    assert batch.status_code == 422, batch.text
    assert batch.json()["detail"][0]["loc"] == ["body", "samples", 0, "features", "age"]
    label = client.post(f"{ingest}/v1/samples", headers=JSON,
                        content=f'{{"model": "diabetes", "features": [{", ".join(["0.0"] * 10)}], "label": {token}}}')
    assert label.status_code == 422, label.text
    assert label.json()["detail"][0]["loc"] == ["body", "label"]

    # Not JSON (RFC 8259 has no NaN): inference's parser refuses the body as such.
    predict = client.post(f"{stack.url('inference-0')}/v1/models/diabetes/predict", headers=JSON,
                          content=f'{{"inputs": [{features}]}}')
    assert predict.status_code in (400, 422), predict.text
    assert "JSON" in predict.json()["detail"] or "finite" in predict.text

    # Echoed in a validation error, the value must not turn the 422 into a 500 (it did).
    confidence = client.post(f"{ingest}/v1/samples", headers=JSON, content=f'{{"model": "diabetes", '
                             f'"features": [{", ".join(["0.0"] * 10)}], "label": 1, "confidence": {token}}}')
    assert confidence.status_code == 422, confidence.text
    assert confidence.json()["detail"][0]["loc"] == ["body", "confidence"]
    rollback = client.post(f"{monitor}/v1/models/diabetes/rollback", headers={**AUTH, **JSON},
                           content=f'{{"to_version": {token}}}')
    assert rollback.status_code == 422, rollback.text
    assert rollback.json()["detail"][0]["loc"] == ["body", "to_version"]

    config = client.put(f"{monitor}/v1/models/diabetes/config", headers={**AUTH, **JSON},
                        content=f'{{"cooldown_minutes": {token}}}')
    assert config.status_code == 422, config.text
    assert config.json()["detail"][0]["loc"] == ["body", "cooldown_minutes"]
    assert client.get(f"{monitor}/v1/models/diabetes/config").json()["source"] == "spec"


def test_trigger_configuration_beyond_what_the_monitor_can_compute_is_refused(stack: Stack,
                                                                              client: httpx.Client) -> None:
    """A huge cooldown was accepted, then broke every evaluation of the triggers (found by the fuzzer)."""
    url = f"{stack.url('monitor')}/v1/models/diabetes/config"
    for config in ({"cooldown_minutes": 1e300}, {"timeout_minutes": 1e12, "backoff_minutes": 1e12},
                   {"drift_window": 10**30}, {"performance_window": 2**64}, {"max_age_days": 1e10}):
        response = client.put(url, json=config, headers=AUTH)
        assert response.status_code == 422, (config, response.text)
        assert response.json()["detail"][0]["loc"] == ["body", next(iter(config))]
    assert client.get(url).json()["source"] == "spec"
    # The monitor refreshes its champion gauges, then evaluates every model's triggers, on each
    # tick: two more refreshes of the model's age mean an evaluation ran after the refusals.
    ages = [wait_until("the champion gauges", lambda: _model_age(client, stack))]
    for _ in range(2):
        ages.append(wait_until("the monitor's next tick", lambda: (a := _model_age(client, stack)) != ages[-1] and a))
    assert client.get(f"{stack.url('monitor')}/v1/models/diabetes/triggers").status_code == 200


def _model_age(client: httpx.Client, stack: Stack) -> float | None:
    """The diabetes champion's age as the monitor's gauge has it (None before its first tick)."""
    text = client.get(f"{stack.url('monitor')}/metrics").text
    return next((float(line.rpartition(" ")[2]) for line in text.splitlines()
                 if line.startswith('refit_model_age_seconds{model="diabetes"}')), None)


@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data; boundary=refit",
                                          "application/x-www-form-urlencoded", "multipart (a real upload)"])
def test_wrong_content_types_are_4xx_and_nothing_is_accepted(stack: Stack, client: httpx.Client,
                                                             content_type: str) -> None:
    valid: dict[str, Any] = {"model": "diabetes", "features": [0.0] * 10, "label": 1.0}
    bodies = {"samples": valid, "samples:batch": {"model": "diabetes", "samples": [valid]},
              "retrain": {"reason": "x"}, "rollback": {"reason": "x"}, "config": {}}
    for method, url, headers, _ in body_routes(stack):
        name = url.rsplit("/", 1)[-1]
        body = bodies.get(name) or ({"texts": ["warm soup"]} if "food-mood" in url else {"inputs": [[0.0] * 64]})
        if content_type == "multipart (a real upload)":
            response = client.request(method, url, headers=headers,
                                      files={"body": ("body.json", json.dumps(body), "application/json")})
        else:
            response = client.request(method, url, content=json.dumps(body),
                                      headers={**headers, "content-type": content_type})
        assert 400 <= response.status_code < 500, (url, content_type, response.status_code, response.text[:200])


def test_undecodable_bytes_are_a_4xx(stack: Stack, client: httpx.Client) -> None:
    """Bytes that are neither JSON nor UTF-8 under a non-JSON type were echoed into a 422 that then failed (500)."""
    for content_type in ("multipart/form-data", "text/plain", "application/octet-stream", "application/json"):
        for method, url, headers, _ in body_routes(stack):
            response = client.request(method, url, content=b"0\xb6n\xe0\xf6\xff{",
                                      headers={**headers, "content-type": content_type})
            assert 400 <= response.status_code < 500, (url, content_type, response.status_code, response.text[:200])


def string_routes(stack: Stack) -> list[tuple[str, str, dict[str, str], str, int]]:
    """Every operation whose body carries a free string: method, URL, headers, a raw body with ``{s}``
    where a string goes, and the status that body gets with a valid string there."""
    ingest, monitor, inference = stack.url("ingest"), stack.url("monitor"), stack.url("inference-0")
    zeros = ", ".join(["0.0"] * 10)
    return [
        ("POST", f"{ingest}/v1/samples", JSON,
         f'{{"model": "diabetes", "features": [{zeros}], "label": 1.0, "source": "s{{s}}", '
         '"idempotency_key": "hostile-{s}", "request_id": "r-{s}"}', 202),
        ("POST", f"{ingest}/v1/samples:batch", JSON,
         '{"model": "food-mood", "samples": [{"text": "warm {s} soup", "label": "comfort", "source": "{s}"}]}', 202),
        ("POST", f"{monitor}/v1/models/food-mood/retrain", {**AUTH, **JSON}, '{"reason": "hostile {s}"}', 202),
        # diabetes has had one champion only: a valid rollback request is refused for that, not for its reason
        ("POST", f"{monitor}/v1/models/diabetes/rollback", {**AUTH, **JSON}, '{"reason": "{s}"}', 409),
        ("PUT", f"{monitor}/v1/models/diabetes/config", {**AUTH, **JSON},
         '{"schedules": [{"name": "{s}", "cron": {"hour": 3}}]}', 0),  # valid: changes the triggers; not sent
        ("POST", f"{inference}/v1/models/food-mood/predict", JSON, '{"texts": ["warm {s} soup"]}', 200),
    ]


def test_lone_surrogates_are_a_4xx_and_a_valid_pair_goes_all_the_way(stack: Stack, client: httpx.Client) -> None:
    """JSON may escape a lone surrogate ("\\ud800"); the standard library decodes it, and encoding it
    later (the event's bytes, SQLite) was a 500. A valid pair is an ordinary character."""
    monitor = stack.url("monitor")
    accepted = {}
    for method, url, headers, body, valid in string_routes(stack):
        for lone in ("\\ud800", "\\udfff"):
            response = client.request(method, url, headers=headers, content=body.replace("{s}", lone))
            assert 400 <= response.status_code < 500, (url, lone, response.status_code, response.text[:300])
            if not url.endswith("/predict"):  # inference reads bodies with orjson: a 400, not JSON
                assert response.status_code == 422 and "lone surrogate" in response.json()["detail"][0]["msg"], \
                    (url, response.text[:300])
        if valid:
            response = client.request(method, url, headers=headers, content=body.replace("{s}", "\\ud83d\\ude00"))
            assert response.status_code == valid, (url, response.status_code, response.text[:300])
            accepted[url.rsplit("/", 1)[1]] = response.json()
    assert client.get(f"{monitor}/v1/models/diabetes/config").json()["source"] == "spec"

    # The retrain request and its reason went through the broker, both stores and the trainer to a decision.
    request_id = accepted["retrain"]["request_id"]
    fired = client.get(f"{monitor}/v1/models/food-mood/triggers").json()["fired"]
    assert {"request_id": request_id, "reason": "hostile \U0001f600"}.items() <= \
        next(f for f in fired if f["request_id"] == request_id).items()
    deadline = time.monotonic() + 120
    while not [v for v in client.get(f"{monitor}/v1/models/food-mood/versions").json()
               if v["retrain_request_id"] == request_id and v["status"] != "pending"]:
        assert time.monotonic() < deadline, "no decision on the candidate of the request"
        time.sleep(0.5)


@pytest.mark.parametrize("target", [b"/v1/models/%ED%A0%80", b"/v1/models/\xed\xa0\x80",
                                    b"/v1/reports?days=%ED%BF%BF", b"/v1/reports?days=\xed\xbf\xbf"])
def test_surrogate_bytes_in_a_url_never_become_a_string(stack: Stack, target: bytes) -> None:
    """Percent-encoded, they are decoded as UTF-8 with replacement (U+FFFD: an unknown model, a bad
    number); raw in the request line, the HTTP server refuses the request (400)."""
    address = urllib.parse.urlsplit(stack.url("monitor"))
    with socket.create_connection((address.hostname, address.port), timeout=TIMEOUT) as connection:
        connection.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: refit\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 404, 422), answer[:300]


TRAVERSALS = ["..%2F..%2Fetc%2Fpasswd", "../../x", "../../../../../../etc/passwd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
              "..%5C..%5Cetc%5Cpasswd", "sha256%2F00%2F" + "0" * 64, "%2Fetc%2Fpasswd", "." * 64, "0" * 64 + "%00",
              "....//....//etc/passwd", "0" * 64 + "%2F..%2F..%2F..%2Fetc%2Fpasswd", "A" * 64]


@pytest.mark.parametrize("digest", TRAVERSALS)
def test_path_traversal_in_an_artifact_digest_reads_no_file(stack: Stack, digest: str) -> None:
    # Raw request line: an HTTP client would normalise the dot segments away before sending.
    address = urllib.parse.urlsplit(stack.url("monitor"))
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=TIMEOUT)
    try:
        connection.request("GET", f"/v1/artifacts/{digest}")
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status in (400, 404), (response.status, body[:200])
    assert b"root:" not in body and response.getheader("content-type") == "application/json"


# -- models that must never be served -----------------------------------------------------------------------------


def three_feature_model(metadata_features: list[str], classes: list[str]) -> bytes:
    """A valid ONNX classifier over 3 inputs, with refit's metadata claiming ``metadata_features``."""
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    y = np.array(classes * (40 // len(classes)))[:40]
    proto = to_onnx(LogisticRegression().fit(x, y), initial_types=[("input", FloatTensorType([None, 3]))],
                    options={LogisticRegression: {"zipmap": False}})
    onnx.helper.set_model_props(proto, {META_TASK: "classification", META_INPUT_KIND: "numeric",
                                        META_FEATURES: json.dumps(metadata_features),
                                        META_CLASSES: json.dumps(classes)})
    return proto.SerializeToString()


async def publish(bootstrap: str, decisions: list[bytes], key: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in decisions:
            signature = signing.sign(key.encode(), value)  # authentic: only the bytes are bad
            await producer.send_and_wait(topics.DECISIONS, value, key=b"digits",
                                         headers=[(signing.HEADER, signature.encode())])
    finally:
        await producer.stop()


def test_unloadable_models_are_refused_and_the_champion_keeps_serving(stack: Stack, client: httpx.Client,
                                                                      quiet_logs: dict[str, int]) -> None:
    monitor, inference = stack.url("monitor"), stack.url("inference-0")
    champion = client.get(f"{monitor}/v1/models/digits/decisions", params={"limit": 1}).json()[0]
    digits = [f"p{i}" for i in range(64)]
    store = LocalArtifactStore(stack.state_dir / "artifacts")
    bad = {
        "garbage bytes": store.put(b"\x08\x07 this is not an ONNX model " * 64),
        "a valid model with another signature": store.put(three_feature_model(["a", "b", "c"], ["0", "1"])),
        "metadata claiming digits over a 3-input graph": store.put(three_feature_model(digits, [str(d) for d in
                                                                                               range(10)])),
        "a traversal instead of a digest": "../../../../etc/passwd",
    }
    decisions = [ModelPromoted(model="digits", sequence=champion["sequence"] + 100 + i, candidate_id=f"hostile-{i}",
                               version=900 + i, digest=digest, artifact_uri=f"{monitor}/v1/artifacts/{digest}",
                               task="classification", reasons=[name]).to_bytes()
                 for i, (name, digest) in enumerate(bad.items())]
    before = client.get(f"{inference}/v1/stats").json()
    asyncio.run(publish(stack.bootstrap, decisions, stack.signing_key))

    deadline = time.monotonic() + 60
    stats = before
    while stats["refused"]["load"] < before["refused"]["load"] + len(bad) and time.monotonic() < deadline:
        time.sleep(0.2)
        stats = client.get(f"{inference}/v1/stats").json()
    assert stats["refused"] == {**before["refused"], "load": before["refused"]["load"] + len(bad)}
    assert stats["swaps"] == before["swaps"]

    row = sample_rows("digits")[0]["features"]
    answer = client.post(f"{inference}/v1/models/digits/predict", json={"features": row})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["version"], answer.json()["digest"]) == (champion["version"], champion["digest"])

    refused = error_events(stack, SWAP_REFUSED, since=quiet_logs)
    assert len(refused) == len(bad), refused  # exactly one error line per refused swap, and nothing else
    assert {r["version"] for r in refused} == {900 + i for i in range(len(bad))}
    assert all(r["serving"] == champion["version"] for r in refused)
    reasons = " | ".join(r["reason"] for r in refused)
    assert "onnxruntime cannot load the model" in reasons and "does not match the spec of digits" in reasons
    assert "inference failed" in reasons and "not a SHA-256 hex digest" in reasons


@pytest.mark.parametrize("where", ["feature", "label"])
def test_numbers_beyond_float32_are_refused_at_ingest(stack: Stack, client: httpx.Client, where: str) -> None:
    features, label = ([1e39] + [0.0] * 9, 1.0) if where == "feature" else ([0.0] * 10, 1e39)
    response = client.post(f"{stack.url('ingest')}/v1/samples",
                           json={"model": "diabetes", "features": features, "label": label})
    assert response.status_code == 422, response.text


POISON = [3e38, -3e38, 1e38, 1e16, -1.5e15, 10**20, 2**63]
WIDTH = {"digits": 64, "diabetes": 10, "breast-cancer": 30}
LABEL = {"digits": "3", "diabetes": 150.0, "breast-cancer": "benign"}
# Peak resident memory (VmHWM) a process of this stack may reach through the poison test and the whole
# module before it (its bodies up to the 8 and 16 MiB limits included). Measured 2026-12-05: with the
# fuzz tests alone, trainer 230 MiB, monitor 220, ingest 200, inference 192, a fit worker 189; in the
# whole suite, trainer 344, monitor 328, a fit worker 300. The bound leaves 50% above the worst, far
# below what one poisoned request took before (gigabytes, for a 1 MB text).
PEAK_MIB = 512


def stack_specs(stack: Stack) -> ModelSpecs:
    return load_specs(stack.specs_path)


def peak_mib(pid: int) -> float:
    """The process's peak resident set size (VmHWM), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


async def publish_samples(bootstrap: str, samples: list[SampleIngested]) -> None:
    """Straight to refit.samples, as a producer that skipped ingest would."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for sample in samples:
            await producer.send_and_wait(topics.SAMPLES, sample.to_bytes(), key=sample.model.encode())
    finally:
        await producer.stop()


def dead_lettered(client: httpx.Client, url: str) -> float:
    """The service's refit_dead_lettered_total, over its consumers."""
    text = client.get(f"{url}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("refit_dead_lettered_total{"))


def test_extreme_values_at_every_numeric_edge_are_refused_and_judging_goes_on(stack: Stack,
                                                                              client: httpx.Client) -> None:
    """Issue 17, defects 10-12: every feature of a diabetes sample at 3e38 was accepted and, in the holdout,
    killed the monitor's judging for good; a label of 1e38 blocked retraining; a 1 MB text took gigabytes.
    Every such value is refused at both edges (HTTP, and Kafka past ingest) for every model, then every model
    is retrained and judged, no data API answers 500, and no process grew past ``PEAK_MIB``."""
    ingest, monitor, inference = stack.url("ingest"), stack.url("monitor"), stack.url("inference-0")
    for model, n in WIDTH.items():
        for value in POISON:
            for features in ([value] * n, [0.0] * (n - 1) + [value]):
                row = {"features": features, "label": LABEL[model]}
                for url, body in ((f"{ingest}/v1/samples", {"model": model, **row}),
                                  (f"{ingest}/v1/samples:batch", {"model": model, "samples": [row]}),
                                  (f"{inference}/v1/models/{model}/predict", {"inputs": [features]})):
                    response = client.post(url, json=body)
                    assert response.status_code == 422, (url, value, response.text[:300])
                    assert "outside the model's bounds" in response.text, response.text[:300]
    for value in POISON:
        for model in WIDTH:  # a regression label beyond its bounds; a classification label no class has
            response = client.post(f"{ingest}/v1/samples", json={"model": model, "features": [0.0] * WIDTH[model],
                                                                 "label": value if model == "diabetes" else str(value)})
            assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "label"], \
                (model, response.text)
    long_text = {"model": "food-mood", "text": "warm soup " * 100_000, "label": "comfort"}
    assert client.post(f"{ingest}/v1/samples", json=long_text).status_code == 422
    food = f"{inference}/v1/models/food-mood/predict"
    for body in ({"texts": ["warm soup " * 100_000] + ["tea"] * 255}, {"texts": ["warm soup " * 100] * 1024}):
        response = client.post(food, json=body)
        assert response.status_code == 422, response.text[:300]

    # Past ingest, straight onto the topic: the trainer dead-letters every one with the reason.
    trainer = stack.url("trainer")
    letters = dead_lettered(client, trainer)
    poison = [SampleIngested(model=model, sample_id=f"poison-{model}-{i}", features=dict(
        zip(stack_specs(stack).get(model).input.features, [value] * n, strict=True)), label=LABEL[model])
        for model, n in WIDTH.items() for i, value in enumerate(POISON)]
    poison += [SampleIngested(model="diabetes", sample_id=f"poison-label-{i}", features=dict.fromkeys(
        stack_specs(stack).get("diabetes").input.features, 0.0), label=value) for i, value in enumerate(POISON)]
    asyncio.run(publish_samples(stack.bootstrap, poison))
    wait_until("the trainer dead-letters every poisoned sample",
               lambda: dead_lettered(client, trainer) >= letters + len(poison), timeout_s=60)

    models = (*WIDTH, "food-mood")
    before = {m: len(client.get(f"{monitor}/v1/models/{m}/decisions").json()) for m in models}
    for model in models:
        retrain = client.post(f"{monitor}/v1/models/{model}/retrain", headers=AUTH, json={"reason": "after poison"})
        assert retrain.status_code == 202, retrain.text
    for model in models:
        wait_for_decisions(client, monitor, model, before[model] + 1)
        for path in ("", "/champion", "/versions", "/decisions", "/live", "/triggers", "/prior", "/config",
                     "/quarantine", "/dataset"):
            response = client.get(f"{monitor}/v1/models/{model}{path}")
            assert response.status_code == 200, (model, path, response.text[:300])
    assert client.get(f"{monitor}/v1/models").status_code == 200
    peaks = {name: peak_mib(proc.pid) for name, proc in stack.procs.items() if name in SERVICES}
    peaks |= {f"trainer worker {p.pid}": peak_mib(p.pid) for p in psutil.Process(stack.procs["trainer"].pid).children(
        recursive=True)}
    assert max(peaks.values()) <= PEAK_MIB, peaks
    print("peak resident memory (MiB):", {k: round(v) for k, v in peaks.items()})
