"""Inference follows only decisions it can authenticate, and only bytes whose digest matches.

What it cannot use it refuses, counts and dead-letters with the reason; the monitor's signed answer
wins over the topic, so one signed decision numbered far ahead freezes nothing (issue 17, defects
13 and 17).
"""

from __future__ import annotations

import asyncio
import base64

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from refit import signing, topics
from refit.demo import digits_waves, post_rows, wait_for_decisions
from refit.events import DeadLettered, ModelPromoted, parse_event
from tests.chaos.helpers import log_events, topic_values, wait_until

pytestmark = pytest.mark.integration


def forged(sequence: int, digest: str, model: str = "digits") -> bytes:
    return ModelPromoted(model=model, sequence=sequence, candidate_id="forged", version=999, digest=digest,
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


def test_forged_unsigned_and_mismatched_decisions_are_refused_counted_and_dead_lettered(stack_factory,
                                                                                       specs_file) -> None:
    stack = stack_factory(specs_file(only=("digits",)), env={"REFIT_INFERENCE_RECONCILE_S": "0.5"})
    inference = stack.url("inference-0")
    key = stack.signing_key.encode()
    with httpx.Client(timeout=30) as client:
        post_rows(client, stack.url("ingest"), "digits", digits_waves(3)[0])
        champion = wait_for_decisions(client, stack.url("monitor"), "digits", 1)[0]
        # The replica has heard the monitor's signed answer about this champion.
        wait_until("the monitor's answer", lambda: client.get(f"{inference}/v1/stats").json()[
            "monitor_sequences"].get("digits") == champion["sequence"])

        real_digest = champion["digest"]
        body = forged(100, real_digest)
        signed_but_missing = forged(101, "0" * 64)
        unconfigured = forged(1, real_digest, model="ghost")
        far_ahead = forged(1_000_000, real_digest)  # signed with the real key, as a leaked local key allowed
        genuine_bytes = forged(102, real_digest)
        tampered = genuine_bytes + b" "
        records = [
            (body, []),                                                                   # unsigned
            (body, [(signing.HEADER, signing.sign(b"not the key", body).encode())]),      # another key
            (tampered, [(signing.HEADER, signing.sign(key, genuine_bytes).encode())]),
            (signed_but_missing, [(signing.HEADER, signing.sign(key, signed_but_missing).encode())]),  # no such bytes
            (unconfigured, [(signing.HEADER, signing.sign(key, unconfigured).encode())]),
            (far_ahead, [(signing.HEADER, signing.sign(key, far_ahead).encode())]),
        ]
        asyncio.run(publish(stack.bootstrap, records))
        stats = wait_until("every decision handled", lambda: (s := client.get(f"{inference}/v1/stats").json())[
            "refused"]["signature"] + s["refused"]["load"] + s["refused"]["unconfigured"] + s["refused"]["sequence"]
            >= 6 and s)
        answer = client.post(f"{inference}/v1/models/digits/predict",
                             json={"features": digits_waves(3)[0][0]["features"]}).json()
        metrics = client.get(f"{inference}/metrics").text

        assert stats["refused"] == {"signature": 3, "load": 1, "decode": 0, "memory": 0, "unconfigured": 1,
                                    "sequence": 1}
        assert answer["version"] == champion["version"]  # still the real champion, never 999
        for reason, count in (("signature", 3), ("unconfigured", 1), ("sequence", 1)):
            assert f'refit_decisions_refused_total{{reason="{reason}"}} {count}.0' in metrics
        log = (stack.state_dir / "logs" / "inference-0.log").read_text()
        assert "decision signature does not verify" in log and "decision is not signed" in log
        assert "no model named 'ghost' is configured here" in log

        # Each refused decision is a dead letter with its bytes and the reason; a swap that failed to
        # load is not (the periodic check retries it).
        letters = [e for e in map(parse_event, topic_values(stack.bootstrap, topics.DEAD_LETTERS,
                                                            lambda values: len(values) >= 5))
                   if isinstance(e, DeadLettered) and e.consumer == "inference-0"]
        reasons = {base64.b64decode(e.original_value): e.reason for e in letters}
        assert len(letters) == 5 and set(reasons) == {body, tampered, unconfigured, far_ahead}
        assert reasons[unconfigured] == "no model named 'ghost' is configured here"
        assert reasons[far_ahead] == (f"sequence 1000000 is more than 1000 ahead of the monitor's champion decision "
                                      f"({champion['sequence']})")
        assert reasons[tampered] == "decision signature does not verify"

        # A restarted replica reads the forged decision again: whichever comes first, it ends up
        # serving the monitor's champion (refused as far ahead, or replaced at the next check).
        stack.restart("inference-0")

        def settled() -> bool:
            stats = client.get(f"{inference}/v1/stats").json()
            seen = stats["refused"]["sequence"] == 1 or log_events(
                stack, "inference-0", "the monitor's champion replaces a decision it did not make")
            served = client.get(f"{inference}/v1/models").json()[0]
            return bool(seen) and served["version"] == champion["version"]

        wait_until("the restarted replica serves the monitor's champion", settled)
        answer = client.post(f"{inference}/v1/models/digits/predict",
                             json={"features": digits_waves(3)[0][0]["features"]}).json()
        assert answer["version"] == champion["version"]
