"""Event contracts: round trips, clear decode errors, compatible additions and upcasting."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from refit import topics
from refit.errors import EventDecodeError
from refit.events import (
    EVENT_TYPES,
    UPCASTERS,
    ArtifactRef,
    CandidateRejected,
    CandidateTrained,
    Check,
    ConceptChanged,
    ConversionCheck,
    DeadLettered,
    DifferenceInterval,
    Event,
    HoldoutInfo,
    InputSignature,
    ModelConfigured,
    ModelPromoted,
    ModelRolledBack,
    PredictionServed,
    RetrainingPaused,
    RetrainingResumed,
    SamplesQuarantined,
    RetrainRequested,
    SampleIngested,
    ShadowOutputs,
    ShadowScored,
    TrainingFailed,
    TrainingStats,
    check_upcasters,
    parse_event,
)

WHEN = datetime(2024, 6, 1, 12, 30, 15, 123456, tzinfo=UTC)
EVENT_ID = uuid.UUID("0b5e1a3c-6a7f-4c2e-9f1d-1c2b3a4d5e6f")
DIGEST = "ab" * 32


def _decision_fields() -> dict[str, Any]:
    return {
        "sequence": 7, "candidate_id": "cand-7", "version": 3, "digest": DIGEST,
        "artifact_uri": f"file:///artifacts/sha256/ab/{DIGEST}", "task": "classification",
        "champion_version": 2, "holdout": HoldoutInfo(size=120, fingerprint="f" * 64),
        "candidate_scores": {"accuracy": 0.95}, "champion_scores": {"accuracy": 0.94},
        "intervals": {"accuracy": DifferenceInterval(observed=0.01, low=-0.005, high=0.025, confidence=0.95,
                                                     resamples=1000)},
        "checks": [Check(metric="accuracy", kind="tolerance", candidate=0.95, champion=0.94, difference=0.01,
                         threshold=0.9306, passed=True, detail="accuracy 0.95 vs champion 0.94"),
                   Check(metric="accuracy", kind="significance", candidate=0.01, difference=0.01, threshold=0.0,
                         passed=True, detail="accuracy difference +0.01: not significantly worse")],
        "reasons": ["every check passed"],
    }


BUILDERS: dict[type[Event], Callable[[], dict[str, Any]]] = {
    ShadowScored: lambda: {
        "replica_id": "inference-0", "version": 3, "digest": DIGEST, "keys": ["req-1", "req-2#0"],
        "labels": ["x", "y"], "challengers": [ShadowOutputs(version=4, digest=DIGEST, role="candidate",
                                                            labels=["y", "y"])]},
    PredictionServed: lambda: {
        "request_id": "req-1", "version": 3, "digest": DIGEST, "replica_id": "inference-0",
        "inputs": [{"a": 1.5, "b": -2.0}], "classes": ["x", "y"], "labels": ["y"], "probabilities": [[0.2, 0.8]]},
    SampleIngested: lambda: {
        "sample_id": "s-1", "features": {"a": 1.5, "b": -2.0}, "label": "setosa", "confidence": 0.9,
        "source": "test", "idempotency_key": "k-1", "event_time": WHEN,
    },
    ConceptChanged: lambda: {"changed_at": WHEN, "detector": "ADWIN on the champion's live error"},
    RetrainRequested: lambda: {
        "kind": "drift", "reason": "feature a drifted", "evidence": {"p_value": 0.001, "feature": "a"},
        "requested_by": "monitor",
    },
    RetrainingPaused: lambda: {"requested_by": "api"},
    RetrainingResumed: lambda: {"requested_by": "api"},
    SamplesQuarantined: lambda: {"sample_ids": ["s-1", "s-2"], "reason": "a unit error", "requested_by": "api"},
    ModelConfigured: lambda: {"config_version": 3, "sections": {"safeguard": {"min_holdout": 50}},
                              "requested_by": "api"},
    TrainingFailed: lambda: {"failure": "timeout", "reason": "the fit ran past its timeout", "trigger": "manual",
                             "retrain_request_id": "r-1", "duration_s": 2.5},
    CandidateTrained: lambda: {
        "candidate_id": "cand-7", "task": "classification",
        "artifact": ArtifactRef(digest=DIGEST, size_bytes=2048, uri="http://monitor/v1/artifacts/" + DIGEST),
        "signature": InputSignature(kind="numeric", features=["a", "b"]), "classes": ["x", "y"],
        "training": TrainingStats(rows_seen=500, rows_trained=400, rows_held_back=50, filters={"duplicate": 3},
                                  last_sample_at=WHEN, duration_s=1.25, estimator="sklearn.svm.SVC",
                                  spec_hash="0123456789abcdef", code_version="0.1.0"),
        "conversion": ConversionCheck(rows=50, label_agreement=1.0, max_abs_diff=1e-6, tolerance=1e-4, passed=True),
        "retrain_request_id": str(EVENT_ID), "trigger": "drift",
    },
    ModelPromoted: _decision_fields,
    CandidateRejected: lambda: {**_decision_fields(), "reasons": ["accuracy dropped"]},
    ModelRolledBack: lambda: {**_decision_fields(), "requested_by": "ops"},
    DeadLettered: lambda: {
        "source_topic": topics.SAMPLES, "partition": 2, "offset": 99, "consumer": "trainer",
        "reason": "not JSON", "original_key": "iris", "original_value": "e25vdA==",
    },
}


@pytest.fixture
def make_event() -> Callable[..., Event]:
    """Build a fully populated event of ``cls``; keyword arguments override fields."""

    def make(cls: type[Event], **overrides: Any) -> Event:
        fields = {"event_id": EVENT_ID, "occurred_at": WHEN, "model": "iris", **BUILDERS[cls](), **overrides}
        return cls(**fields)

    return make


_DROP = object()  # a change that removes the field


def _payload(event: Event, **changes: Any) -> bytes:
    data = orjson.loads(event.to_bytes())
    for key, value in changes.items():
        if value is _DROP:
            del data[key]
        else:
            data[key] = value
    return orjson.dumps(data)


ALL_EVENTS = list(BUILDERS)


def test_every_event_class_is_registered_and_has_a_builder():
    assert set(EVENT_TYPES.values()) == set(BUILDERS)
    assert EVENT_TYPES == {cls.model_fields["event_type"].default: cls for cls in BUILDERS}


@pytest.mark.parametrize(
    ("cls", "topic"),
    [
        (SampleIngested, topics.SAMPLES),
        (RetrainRequested, topics.RETRAIN_REQUESTS),
        (RetrainingPaused, topics.RETRAIN_REQUESTS),
        (RetrainingResumed, topics.RETRAIN_REQUESTS),
        (ConceptChanged, topics.RETRAIN_REQUESTS),
        (SamplesQuarantined, topics.RETRAIN_REQUESTS),
        (ModelConfigured, topics.RETRAIN_REQUESTS),
        (CandidateTrained, topics.CANDIDATES),
        (TrainingFailed, topics.CANDIDATES),
        (ModelPromoted, topics.DECISIONS),
        (CandidateRejected, topics.DECISIONS),
        (ModelRolledBack, topics.DECISIONS),
        (DeadLettered, topics.DEAD_LETTERS),
        (PredictionServed, topics.PREDICTIONS),
    ],
)
def test_each_event_is_bound_to_its_topic(cls, topic):
    assert cls.topic == topic
    assert cls.model_fields["schema_version"].default == 1


# --- round trips --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_round_trip(make_event, cls):
    event = make_event(cls)

    parsed = parse_event(event.to_bytes())

    assert type(parsed) is cls
    assert parsed == event
    assert parse_event(event.to_bytes(), cls) == event
    assert parse_event(event.to_bytes(), (cls, DeadLettered)) == event


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_wire_format_carries_the_common_fields(make_event, cls):
    data = orjson.loads(make_event(cls).to_bytes())

    assert data["event_id"] == str(EVENT_ID)
    assert data["event_type"] == cls.__name__
    assert data["schema_version"] == 1
    assert data["model"] == "iris"
    assert datetime.fromisoformat(data["occurred_at"]) == WHEN
    assert "topic" not in data


def test_defaults_give_a_fresh_id_and_a_utc_time():
    a = SampleIngested(model="iris", sample_id="s", label=1.5)
    b = SampleIngested(model="iris", sample_id="s", label=1.5)

    assert a.event_id != b.event_id
    assert a.occurred_at.utcoffset().total_seconds() == 0
    assert parse_event(a.to_bytes()) == a


def test_the_kafka_key_is_the_model_name(make_event):
    assert make_event(SampleIngested, model="digits").key() == b"digits"


@pytest.mark.parametrize(("label", "kind"), [("3", str), (2.5, float)])
def test_labels_keep_their_kind(make_event, label, kind):
    parsed = parse_event(make_event(SampleIngested, label=label).to_bytes())

    assert parsed.label == label and type(parsed.label) is kind


def test_events_are_frozen(make_event):
    event = make_event(SampleIngested)

    with pytest.raises(Exception, match="frozen"):
        event.model = "other"  # type: ignore[misc]


# --- decode errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [b"", b"{not json", b"\xff\xfe", b'{"event_type": "SampleIngested",}'], ids=["empty", "broken", "binary",
                                                                                        "trailing-comma"])
def test_non_json_is_refused(raw):
    with pytest.raises(EventDecodeError, match=r"^not JSON: "):
        parse_event(raw)


@pytest.mark.parametrize("raw", [b"[]", b"[{}]", b"3", b'"SampleIngested"', b"null", b"true"])
def test_non_object_is_refused(raw):
    with pytest.raises(EventDecodeError, match=r"^not a JSON object$"):
        parse_event(raw)


@pytest.mark.parametrize(
    ("event_type", "shown"),
    [("Nope", "'Nope'"), ("sampleingested", "'sampleingested'"), (5, "5"), (None, "None"), (["x"], r"\['x'\]"),
     (_DROP, "None")],
    ids=["unknown", "lowercase", "int", "null", "list", "missing"],
)
def test_unknown_event_type_is_refused(make_event, event_type, shown):
    raw = _payload(make_event(SampleIngested), event_type=event_type)

    with pytest.raises(EventDecodeError, match=rf"^unknown event_type {shown}$"):
        parse_event(raw)


@pytest.mark.parametrize("version", [_DROP, None, True, False, "1", 1.0, [1]],
                         ids=["missing", "null", "true", "false", "string", "float", "list"])
def test_schema_version_must_be_an_integer(make_event, version):
    raw = _payload(make_event(SampleIngested), schema_version=version)

    with pytest.raises(EventDecodeError, match=r"^schema_version is missing or not an integer$"):
        parse_event(raw)


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_a_newer_schema_version_is_refused(make_event, cls):
    raw = _payload(make_event(cls), schema_version=2)

    with pytest.raises(EventDecodeError, match=rf"^{cls.__name__} schema_version 2 is newer than this reader \(1\)$"):
        parse_event(raw)


def test_an_old_version_without_an_upcaster_is_refused(make_event):
    raw = _payload(make_event(SampleIngested), schema_version=0)

    with pytest.raises(EventDecodeError, match=r"^SampleIngested schema_version 0 is no longer readable$"):
        parse_event(raw)


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (SampleIngested, CandidateTrained),
        (SampleIngested, (ModelPromoted, CandidateRejected, ModelRolledBack)),
        (CandidateRejected, (ModelPromoted, ModelRolledBack)),  # a rejection is no serving decision
        (DeadLettered, SampleIngested),
    ],
)
def test_an_event_on_the_wrong_topic_is_refused(make_event, cls, expected):
    with pytest.raises(EventDecodeError, match=rf"^{cls.__name__} does not belong on this topic$"):
        parse_event(make_event(cls).to_bytes(), expected)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sample_id": _DROP}, r"^invalid SampleIngested: sample_id: Field required$"),
        ({"label": _DROP}, r"^invalid SampleIngested: label: Field required$"),
        ({"model": _DROP}, r"^invalid SampleIngested: model: Field required$"),
        ({"event_id": "not-a-uuid"}, r"^invalid SampleIngested: event_id: Input should be a valid UUID"),
        ({"occurred_at": "yesterday"}, r"^invalid SampleIngested: occurred_at: Input should be a valid datetime"),
        ({"features": {"a": "high"}}, r"^invalid SampleIngested: features\.a: Input should be a valid number"),
        ({"features": [1.0, 2.0]}, r"^invalid SampleIngested: features: Input should be a valid dictionary"),
        ({"confidence": "sure"}, r"^invalid SampleIngested: confidence: Input should be a valid number"),
    ],
    ids=["no-sample-id", "no-label", "no-model", "event-id", "occurred-at", "feature-value", "features-list",
         "confidence"],
)
def test_validation_errors_name_the_field(make_event, changes, message):
    raw = _payload(make_event(SampleIngested), **changes)

    with pytest.raises(EventDecodeError, match=message):
        parse_event(raw)


def test_nested_validation_errors_name_the_path(make_event):
    data = orjson.loads(make_event(CandidateTrained).to_bytes())
    data["artifact"]["size_bytes"] = "big"

    with pytest.raises(EventDecodeError, match=r"^invalid CandidateTrained: artifact\.size_bytes: "):
        parse_event(orjson.dumps(data))


def test_decode_error_is_a_value_error():
    assert issubclass(EventDecodeError, ValueError)


# --- compatible additions and upcasters ------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_unknown_extra_fields_are_ignored(make_event, cls):
    event = make_event(cls)
    data = orjson.loads(event.to_bytes())
    data["added_in_a_later_release"] = {"anything": [1, 2]}
    data["topic"] = "somewhere.else"  # a class attribute, never a field

    assert parse_event(orjson.dumps(data)) == event


def test_unknown_nested_fields_are_ignored(make_event):
    event = make_event(CandidateTrained)
    data = orjson.loads(event.to_bytes())
    data["artifact"]["mirror"] = "s3://bucket/x"
    data["training"]["gpu"] = False

    assert parse_event(orjson.dumps(data)) == event


def test_an_upcaster_turns_an_old_version_into_the_current_one(monkeypatch, make_event):
    # Version 0 stands in for an old SampleIngested that called the id "id" and had no source.
    seen: list[dict[str, Any]] = []

    def upcast_0_to_1(old: dict[str, Any]) -> dict[str, Any]:
        seen.append(dict(old))
        new = dict(old)
        new["sample_id"] = new.pop("id")
        new["source"] = "legacy"
        return new

    monkeypatch.setitem(UPCASTERS, ("SampleIngested", 0), upcast_0_to_1)
    current = make_event(SampleIngested, source="legacy")
    old = orjson.loads(current.to_bytes())
    old["id"] = old.pop("sample_id")
    del old["source"]
    old["schema_version"] = 0

    parsed = parse_event(orjson.dumps(old))

    assert parsed == current
    assert parsed.schema_version == 1
    assert [d["schema_version"] for d in seen] == [0]
    assert "sample_id" not in seen[0]


def test_upcasters_are_chained_one_version_at_a_time(monkeypatch, make_event):
    steps: list[int] = []

    def step(version: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def upcast(data: dict[str, Any]) -> dict[str, Any]:
            assert data["schema_version"] == version
            steps.append(version)
            return {**data, "reason": f"{data['reason']}+{version}"}

        return upcast

    monkeypatch.setitem(UPCASTERS, ("RetrainRequested", -1), step(-1))
    monkeypatch.setitem(UPCASTERS, ("RetrainRequested", 0), step(0))
    raw = _payload(make_event(RetrainRequested, reason="r"), schema_version=-1)

    parsed = parse_event(raw)

    assert steps == [-1, 0]
    assert parsed.reason == "r+-1+0"
    assert parsed.schema_version == 1


def test_an_upcaster_for_another_event_type_is_not_applied(monkeypatch, make_event):
    monkeypatch.setitem(UPCASTERS, ("RetrainRequested", 0), lambda d: d)
    raw = _payload(make_event(SampleIngested), schema_version=0)

    with pytest.raises(EventDecodeError, match="no longer readable"):
        parse_event(raw)


def test_every_registered_upcaster_lifts_a_known_event_from_an_older_version():
    check_upcasters(UPCASTERS)  # the registry as shipped (also checked when refit.events loads)
    check_upcasters({("SampleIngested", 0): lambda d: d, ("RetrainRequested", -3): lambda d: d})


@pytest.mark.parametrize(("key", "message"), [
    (("SampleIngestd", 0), "an upcaster for unknown event type 'SampleIngestd'"),
    (("SampleIngested", 1), "an upcaster for SampleIngested schema_version 1, not older than 1"),
    (("ModelPromoted", 2), "an upcaster for ModelPromoted schema_version 2, not older than 1"),
])
def test_an_upcaster_that_could_never_run_is_refused(key, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_upcasters({**UPCASTERS, key: lambda d: d})


@pytest.mark.parametrize("field", ["event_id", "occurred_at"])
def test_a_record_without_its_identity_is_refused_not_invented(field) -> None:
    event = SampleIngested(model="m", sample_id="s", features={"a": 1.0}, label="x")
    data = orjson.loads(event.to_bytes())
    del data[field]
    with pytest.raises(EventDecodeError, match=f"SampleIngested without {field}"):
        parse_event(orjson.dumps(data))


def test_every_event_reads_back_as_a_cloudevent_with_the_sdks_kafka_binding() -> None:
    from cloudevents.core.bindings.kafka import KafkaMessage, from_binary_event

    from refit.kafka import cloudevent_source

    for cls, event in [(SampleIngested, SampleIngested(model="digits", sample_id="s", features={"p0": 1.0}, label="3")),
                       (DeadLettered, DeadLettered(model="", source_topic="t", partition=0, offset=1, consumer="c",
                                                   reason="r", original_key=None, original_value=""))]:
        source = cloudevent_source("refit-ingest")
        read = from_binary_event(KafkaMessage(headers=dict(event.headers(source)), key=event.key(),
                                              value=event.to_bytes()))
        assert (read.get_specversion(), read.get_id(), read.get_type(), read.get_source(),
                read.get_datacontenttype()) == (
            "1.0", str(event.event_id), f"io.refit.{cls.__name__}.v1", source, "application/json")
        assert read.get_subject() == (event.model or None)
        assert read.get_time() == event.occurred_at
        assert read.get_data() == orjson.loads(event.to_bytes())  # the body is the event, unchanged
