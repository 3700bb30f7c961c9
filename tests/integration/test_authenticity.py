"""Inference follows only decisions it can authenticate, and only bytes whose digest matches."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from refit import signing, topics
from refit.demo import digits_waves, post_rows, wait_for_decisions
from refit.events import ModelPromoted
from refit.settings import LOCAL_SIGNING_KEY

pytestmark = pytest.mark.integration


def forged(sequence: int, digest: str) -> bytes:
    return ModelPromoted(model="digits", sequence=sequence, candidate_id="forged", version=999, digest=digest,
                         artifact_uri="http://attacker.invalid/model.onnx", task="classification",
                         reasons=["trust me"]).to_bytes()


async def publish(bootstrap: str, records: list[tuple[bytes, list[tuple[str, bytes]]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value, headers in records:
            await producer.send_and_wait(topics.DECISIONS, value, key=b"digits", headers=headers)
    finally:
        await producer.stop()


def test_forged_unsigned_and_mismatched_decisions_are_ignored_and_counted(stack_factory, specs_file) -> None:
    stack = stack_factory(specs_file(only=("digits",)))
    inference = stack.url("inference-0")
    with httpx.Client(timeout=30) as client:
        post_rows(client, stack.url("ingest"), "digits", digits_waves(3)[0])
        champion = wait_for_decisions(client, stack.url("monitor"), "digits", 1)[0]
        deadline = time.monotonic() + 30
        while client.get(f"{inference}/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)

        real_digest = champion["digest"]
        unknown_digest = "0" * 64
        body = forged(100, real_digest)
        wrong_key = signing.sign(b"not the key", body)
        signed_but_missing = forged(101, unknown_digest)
        asyncio.run(publish(stack.bootstrap, [
            (body, []),                                                    # unsigned
            (body, [(signing.HEADER, wrong_key.encode())]),                # signed with another key
            (forged(102, real_digest) + b" ", [(signing.HEADER, signing.sign(LOCAL_SIGNING_KEY.encode(),
                                                                              forged(102, real_digest)).encode())]),
            (signed_but_missing, [(signing.HEADER, signing.sign(LOCAL_SIGNING_KEY.encode(),
                                                                 signed_but_missing).encode())]),  # bytes don't exist
        ]))
        deadline = time.monotonic() + 30
        stats = {}
        while time.monotonic() < deadline:
            stats = client.get(f"{inference}/v1/stats").json()
            if stats["refused"]["signature"] >= 3 and stats["refused"]["load"] >= 1:
                break
            time.sleep(0.2)
        answer = client.post(f"{inference}/v1/models/digits/predict",
                             json={"features": digits_waves(3)[0][0]["features"]}).json()
        metrics = client.get(f"{inference}/metrics").text

    assert stats["refused"] == {"signature": 3, "load": 1, "decode": 0, "memory": 0}
    assert answer["version"] == champion["version"]  # still the real champion, never 999
    assert 'refit_decisions_refused_total{reason="signature"} 3.0' in metrics
    log = (stack.state_dir / "logs" / "inference-0.log").read_text()
    assert "decision signature does not verify" in log and "decision is not signed" in log
