"""A third-party client (confluent-kafka, librdkafka) reads every refit topic of a real run, and
jsonschema validates every record against the published schema (docs/asyncapi.json): no refit
code decodes what is audited.

The run makes every event type appear: samples of two models, retrain requests, candidates, two
promotions and a rollback of digits, a rejection of diabetes (an impossible r2 gate), the query
log, a request shadow-scored by the champion digits' second promotion replaced, the scheduler paused
and resumed, a training that fails (breast-cancer has no rows), a quarantined sample, a configuration
changed at run time, and dead letters from two bad records we publish ourselves. Set ``REFIT_AUDIT_DUMP=<path>``
to keep every validated record as JSON lines (the source of the examples in docs/events.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary_event
from confluent_kafka import Producer
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from refit import topics
from refit.asyncapi import SIGNATURE_PATTERN, topic_schemas
from refit.datasets import sample_rows
from refit.demo import digits_waves, post_rows, wait_for_decisions
from refit.events import EVENT_TYPES
from refit.stack import Stack
from tests.chaos.helpers import read_topics, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
REPO = Path(__file__).resolve().parents[2]
TOKEN = {"authorization": "Bearer refit-local-token"}
# Records we publish ourselves to provoke dead letters; by design they match no schema.
FUTURE_SAMPLE = json.dumps({"event_id": str(uuid.UUID(int=7)), "event_type": "SampleIngested",
                            "schema_version": 99, "occurred_at": "2030-01-01T00:00:00Z", "model": "digits",
                            "sample_id": "from-the-future", "label": "1"}).encode()
BAD_RECORDS = (b"{not json", FUTURE_SAMPLE)


def produce_bad_records(bootstrap: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False,
                         "message.timeout.ms": 10_000, "log_level": 3})
    failures: list[str] = []
    for value in BAD_RECORDS:
        producer.produce(topics.SAMPLES, value=value, key=b"digits",
                         on_delivery=lambda err, _msg: failures.append(str(err)) if err else None)
    assert producer.flush(15) == 0 and failures == [], failures


def retrain(client: httpx.Client, stack: Stack, model: str, reason: str) -> None:
    response = client.post(f"{stack.url('monitor')}/v1/models/{model}/retrain", json={"reason": reason},
                           headers=TOKEN)
    assert response.status_code == 202, response.text


def drive(stack: Stack) -> dict[str, int]:
    """Make every event type appear; return the least number of records each topic must hold."""
    digits = digits_waves(3)[0]
    diabetes = sample_rows("diabetes")
    monitor, ingest, inference = stack.url("monitor"), stack.url("ingest"), stack.url("inference-0")
    with httpx.Client(timeout=30) as client:
        post_rows(client, ingest, "digits", digits)
        post_rows(client, ingest, "diabetes", diabetes)
        produce_bad_records(stack.bootstrap)

        def trainer_has_all() -> bool:  # training rows + skipped holdout rows = every row posted
            stats = client.get(f"{stack.url('trainer')}/v1/stats").json()
            seen = Counter(stats["samples"]) + Counter(stats["holdout_skipped"])
            return seen["digits"] == len(digits) and seen["diabetes"] == len(diabetes)

        wait_until("the trainer stored every sample", trainer_has_all)
        retrain(client, stack, "digits", "new labels")
        retrain(client, stack, "diabetes", "weekly refresh")
        first = wait_for_decisions(client, monitor, "digits", 1, timeout_s=60)[0]
        assert first["event_type"] == "ModelPromoted", first["reasons"]
        rejected = wait_for_decisions(client, monitor, "diabetes", 1, timeout_s=60)[0]
        assert rejected["event_type"] == "CandidateRejected", rejected["reasons"]

        row = digits[0]["features"]
        predict = f"{inference}/v1/models/digits/predict"
        wait_until("inference serves digits", lambda: client.post(predict, json={"features": row}).status_code == 200)
        bodies = [{"instances": [row, digits[1]["features"]]}, {"inputs": [list(row.values())]}]
        for body in bodies:
            assert client.post(predict, json=body, headers={"x-request-id": f"audit-{uuid.uuid4()}"}).status_code == 200

        # Same rows, same fit: the second candidate scores exactly like the champion and passes.
        retrain(client, stack, "digits", "retrain on the same rows")
        second = wait_for_decisions(client, monitor, "digits", 2, timeout_s=60)[0]
        assert (second["event_type"], second["version"]) == ("ModelPromoted", 2), second["reasons"]
        # v1, the champion v2 replaced, challenges it: a request served now is scored by v1 in the shadow.
        wait_until("inference shadow-scores digits with v1", lambda: client.get(f"{inference}/v1/stats").json()[
            "shadow"]["models"].get("digits", {}).get("challengers") == [{"version": 1, "role": "previous"}])
        assert client.post(predict, json={"features": row}, headers={"x-request-id": f"audit-{uuid.uuid4()}"}
                           ).status_code == 200
        wait_until("the shadow scores published", lambda: client.get(f"{inference}/v1/stats").json()["shadow"][
            "published"] >= 1)
        back = client.post(f"{monitor}/v1/models/digits/rollback", json={"reason": "bad feedback"}, headers=TOKEN)
        assert back.status_code == 200, back.text

        # The pause and its end, one event per model; and a training that fails: breast-cancer has no rows.
        for action in ("stop", "start"):
            assert client.post(f"{monitor}/v1/scheduler/{action}", headers=TOKEN).status_code == 200
        retrain(client, stack, "breast-cancer", "no data yet")
        # An operator quarantines a diabetes sample (its id from the trainer's export).
        first_row = client.get(f"{stack.url('trainer')}/v1/models/diabetes/dataset").text.splitlines()[0]
        quarantine = client.post(f"{monitor}/v1/models/diabetes/quarantine", headers=TOKEN, json={
            "sample_ids": [json.loads(first_row)["sample_id"]], "reason": "audit: a mislabelled row"})
        assert quarantine.status_code == 200, quarantine.text
        # An operator changes the diabetes safeguard at run time (ModelConfigured).
        safeguard = client.get(f"{monitor}/v1/models/diabetes/config").json()["safeguard"]
        configured = client.put(f"{monitor}/v1/models/diabetes/config/safeguard", headers=TOKEN,
                                json={**safeguard, "min_holdout": 40})
        assert configured.status_code == 200, configured.text
        # New scans of digits labelled by another convention: the champion is wrong on each, a detector on its
        # live error finds the change, and the monitor publishes it for the trainer (ConceptChanged).
        shifted = [{**r, "label": str((int(r["label"]) + 1) % 10)} for r in digits_waves(3)[1][:300]]
        post_rows(client, ingest, "digits", shifted)
        wait_until("the monitor records the change of concept", lambda: client.get(
            f"{monitor}/v1/models/digits/triggers").json()["changes"] != [], timeout_s=60)
    return {topics.SAMPLES: len(digits) + len(diabetes) + len(shifted) + len(BAD_RECORDS),
            topics.RETRAIN_REQUESTS: 4 + 2 * 3 + 2 + 1,
            topics.CANDIDATES: 3 + 1, topics.DECISIONS: 4, topics.PREDICTIONS: 1 + len(bodies) + 2,
            topics.DEAD_LETTERS: 2 * len(BAD_RECORDS)}  # trainer and monitor each dead-letter each


def consume_everything(bootstrap: str, expected: dict[str, int], timeout_s: float = 30,
                       quiet_s: float = 1.5) -> list[Any]:
    """Every record of every refit topic, from the beginning, once each topic holds what the run produced."""
    def enough(records: list[Any]) -> bool:
        counts = Counter(m.topic() for m in records)
        return all(counts[t] >= n for t, n in expected.items())

    return read_topics(bootstrap, list(topics.ALL), enough, timeout_s, quiet_s)


def audit(records: list[Any], schemas: dict[str, dict[str, Any]],
          key: bytes) -> tuple[Counter[str], Counter[str], list[str]]:
    """Counts of valid records by topic and by event type, and every problem found."""
    validators = {t: Draft202012Validator(s, format_checker=Draft202012Validator.FORMAT_CHECKER)
                  for t, s in schemas.items()}
    by_topic: Counter[str] = Counter()
    by_type: Counter[str] = Counter()
    problems: list[str] = []
    for msg in records:
        topic, value, where = msg.topic(), msg.value(), f"{msg.topic()}@{msg.partition()}:{msg.offset()}"
        if topic == topics.SAMPLES and value in BAD_RECORDS:
            assert not_valid(validators[topic], value), f"{where}: a bad record we sent passed the schema"
            by_type["(our bad records)"] += 1
            continue
        try:
            data = json.loads(value)
        except ValueError as exc:
            problems.append(f"{where}: not JSON: {exc}")
            continue
        if (error := best_match(validators[topic].iter_errors(data))) is not None:
            problems.append(f"{where}: {data.get('event_type')} /{'/'.join(map(str, error.absolute_path))}: "
                            f"{error.message[:300]}")
        if msg.key() != str(data.get("model")).encode():
            problems.append(f"{where}: key {msg.key()!r} is not the model {data.get('model')!r}")
        if topic == topics.DECISIONS:
            problems += signature_problems(where, value, dict(msg.headers() or []), key)
        problems += cloudevent_problems(where, msg, data)
        by_topic[topic] += 1
        by_type[str(data.get("event_type"))] += 1
    return by_topic, by_type, problems


def cloudevent_problems(where: str, msg: Any, data: dict[str, Any]) -> list[str]:
    """Read the record as a CloudEvent with the ``cloudevents`` SDK's Kafka binding (binary content
    mode) and check its attributes against the event it carries."""
    try:
        event = from_binary_event(KafkaMessage(headers=dict(msg.headers() or []), key=msg.key(), value=msg.value()))
    except Exception as exc:  # the SDK's own error types: any of them is a finding
        return [f"{where}: not a CloudEvent in binary mode: {exc!r}"]
    want = {"specversion": "1.0", "id": data["event_id"], "subject": data["model"] or None,
            "type": f"io.refit.{data['event_type']}.v{data['schema_version']}", "datacontenttype": "application/json",
            "time": datetime.fromisoformat(data["occurred_at"])}
    found = {k: getattr(event, f"get_{k}")() for k in want}
    problems = [f"{where}: CloudEvents {k} {found[k]!r}, expected {v!r}" for k, v in want.items() if found[k] != v]
    if not re.fullmatch(r"/refit/refit-[a-z0-9-]+@\S+", event.get_source()):
        problems.append(f"{where}: CloudEvents source {event.get_source()!r}")
    if event.get_data() != data:
        problems.append(f"{where}: the CloudEvent's data is not the record's event")
    return problems


def not_valid(validator: Draft202012Validator, value: bytes) -> bool:
    try:
        return not validator.is_valid(json.loads(value))
    except ValueError:
        return True


def signature_problems(where: str, value: bytes, headers: dict[str, bytes], key: bytes) -> list[str]:
    signature = headers.get("refit-signature")
    if signature is None:
        return [f"{where}: decision without a refit-signature header"]
    expected = "hmac-sha256=" + hmac.new(key, value, hashlib.sha256).hexdigest()
    if not re.fullmatch(SIGNATURE_PATTERN, signature.decode()) or signature.decode() != expected:
        return [f"{where}: refit-signature {signature!r} is not the HMAC-SHA256 of the value"]
    return []


def test_every_record_of_every_topic_matches_the_published_schema(stack_factory, specs_file) -> None:
    specs = specs_file(
        only=("digits", "diabetes", "breast-cancer"),
        # Candidates only on request, so the run is exactly what drive() asks for.
        digits={"training": {"min_new_samples": None}},
        **{"breast-cancer": {"training": {"min_new_samples": None}}},
        diabetes={"training": {"min_new_samples": None},
                  "safeguard": {"metrics": [{"name": "r2", "min": 0.99}]}},
    )
    started = time.monotonic()
    stack = stack_factory(specs, env={"REFIT_INFERENCE_PUBLISH_PREDICTIONS": "true"})
    expected = drive(stack)
    records = consume_everything(stack.bootstrap, expected)
    schemas = topic_schemas(json.loads((REPO / "docs" / "asyncapi.json").read_text()))
    assert sorted(schemas) == sorted(topics.ALL)
    by_topic, by_type, problems = audit(records, schemas, stack.signing_key.encode())

    print(f"audited in {time.monotonic() - started:.1f}s: "
          + ", ".join(f"{t} {by_topic[t]}" for t in topics.ALL) + f"; by event type {dict(sorted(by_type.items()))}")
    if dump := os.environ.get("REFIT_AUDIT_DUMP"):
        Path(dump).write_text("".join(m.value().decode() + "\n" for m in records if m.value() not in BAD_RECORDS))
    assert problems == []
    expected[topics.SAMPLES] -= len(BAD_RECORDS)  # seen, but audited as the bad records they are
    assert [t for t in topics.ALL if by_topic[t] < expected[t]] == [], (dict(by_topic), expected)
    assert by_type.pop("(our bad records)") == len(BAD_RECORDS)  # seen, and refused by the schema
    assert set(by_type) == set(EVENT_TYPES)  # every event type was on the wire, and nothing else
