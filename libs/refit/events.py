"""The event contracts: every event refit publishes, in one place.

Each event is a frozen pydantic model bound to its topic. Adding a field is a
compatible change (readers ignore fields they do not know); anything else bumps
``schema_version`` and registers an upcaster so readers keep understanding the
old version. The Kafka key of every event is its ``model``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from refit import topics
from refit.errors import EventDecodeError

Label = str | float


# CloudEvents ``type`` of every event: ``io.refit.<EventType>.v<schema_version>`` (docs/events.md).
CLOUDEVENT_TYPE_PREFIX = "io.refit"


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Event(_Value):
    """Fields every event carries."""

    topic: ClassVar[str]
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    event_type: str
    schema_version: int
    occurred_at: AwareDatetime = Field(default_factory=utcnow)
    model: str

    def key(self) -> bytes:
        return self.model.encode()

    def to_bytes(self) -> bytes:
        # pydantic's serializer writes the same JSON as orjson over model_dump(mode="json"),
        # without building the dict of Python objects first (2.5x faster).
        return self.model_dump_json().encode()

    def cloudevent_type(self) -> str:
        """The CloudEvents ``type``: reverse-DNS, the event type and its schema version."""
        return f"{CLOUDEVENT_TYPE_PREFIX}.{self.event_type}.v{self.schema_version}"

    def headers(self, source: str) -> list[tuple[str, bytes]]:
        """The CloudEvents attributes of this event as Kafka headers (the binary content mode of the
        CloudEvents Kafka binding): the JSON body stays the event itself. ``source`` names the
        service instance that published it."""
        headers = [("ce_specversion", b"1.0"), ("ce_id", str(self.event_id).encode()),
                   ("ce_type", self.cloudevent_type().encode()), ("ce_source", source.encode()),
                   ("ce_time", self.occurred_at.isoformat().encode()), ("content-type", b"application/json")]
        if self.model:
            headers.append(("ce_subject", self.model.encode()))
        return headers


class SampleIngested(Event):
    """One labeled sample accepted by ingest and acknowledged by the broker."""

    topic: ClassVar[str] = topics.SAMPLES
    event_type: Literal["SampleIngested"] = "SampleIngested"
    schema_version: Literal[1] = 1
    sample_id: str
    features: dict[str, float] | None = None
    text: str | None = None
    label: Label
    confidence: float | None = None
    source: str | None = None
    idempotency_key: str | None = None
    event_time: datetime | None = None
    request_id: str | None = Field(None, description="joins this label to an earlier prediction (feedback)")


class RetrainRequested(Event):
    """Someone or something asked the trainer to fit a new candidate."""

    topic: ClassVar[str] = topics.RETRAIN_REQUESTS
    event_type: Literal["RetrainRequested"] = "RetrainRequested"
    schema_version: Literal[1] = 1
    kind: str
    reason: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    requested_by: str | None = None


class RetrainingPaused(Event):
    """The monitor paused automatic retraining of this model (``POST /v1/scheduler/stop``). The monitor
    owns the pause; every automatic path obeys it, the trainer's own ``training.min_new_samples`` path
    included. Requests already published (an operator's) still train."""

    topic: ClassVar[str] = topics.RETRAIN_REQUESTS
    event_type: Literal["RetrainingPaused"] = "RetrainingPaused"
    schema_version: Literal[1] = 1
    requested_by: str | None = None


class RetrainingResumed(Event):
    """The monitor resumed automatic retraining of this model (``POST /v1/scheduler/start``)."""

    topic: ClassVar[str] = topics.RETRAIN_REQUESTS
    event_type: Literal["RetrainingResumed"] = "RetrainingResumed"
    schema_version: Literal[1] = 1
    requested_by: str | None = None


class ConceptChanged(Event):
    """The monitor recorded a change of the model's concept (a detector on the champion's live error, the
    drift tests, or a significant drop of its live performance). Every training after it starts its
    window at ``changed_at``, the trainer's own ``training.min_new_samples`` path included, as the
    safeguard judges on the holdout rows after it. Of redelivered or reordered events the latest
    ``changed_at`` wins."""

    topic: ClassVar[str] = topics.RETRAIN_REQUESTS
    event_type: Literal["ConceptChanged"] = "ConceptChanged"
    schema_version: Literal[1] = 1
    changed_at: AwareDatetime
    detector: str


class SamplesQuarantined(Event):
    """An operator quarantined samples (``POST /v1/models/{name}/quarantine``): the monitor dropped them
    from its holdout, the trainer drops them from its dataset, and both keep them out if redelivered."""

    topic: ClassVar[str] = topics.RETRAIN_REQUESTS
    event_type: Literal["SamplesQuarantined"] = "SamplesQuarantined"
    schema_version: Literal[1] = 1
    sample_ids: list[str] = Field(min_length=1)
    reason: str
    requested_by: str | None = None


class ModelConfigured(Event):
    """An operator changed the model's configuration at run time (``PUT /v1/models/{name}/config/…``).
    The monitor owns it and numbers each change per model; the trainer follows the training section
    (the latest version wins: a redelivery of an older one changes nothing)."""

    topic: ClassVar[str] = topics.RETRAIN_REQUESTS
    event_type: Literal["ModelConfigured"] = "ModelConfigured"
    schema_version: Literal[1] = 1
    config_version: int = Field(ge=1, description="the model's configuration version; 0 is the spec file as is")
    sections: dict[str, Any] = Field(description="the sections set over the spec file's (triggers, safeguard, "
                                                 "training), whole; a section absent is the spec file's")
    requested_by: str | None = None


class ArtifactRef(_Value):
    """Claim check: where the ONNX bytes are and the SHA-256 they must have."""

    digest: str
    size_bytes: int
    uri: str
    media_type: str = "application/onnx"


class InputSignature(_Value):
    kind: Literal["numeric", "text"]
    features: list[str] = Field(default_factory=list)


class ConversionCheck(_Value):
    """ONNX output compared with scikit-learn output on rows held back from fitting."""

    rows: int
    label_agreement: float | None = None
    max_abs_diff: float | None = Field(description="null when the ONNX model could not run at all")
    tolerance: float
    passed: bool
    error: str | None = None


class TrainingStats(_Value):
    rows_seen: int
    rows_trained: int
    rows_held_back: int
    filters: dict[str, int] = Field(default_factory=dict)
    first_sample_at: datetime | None = None
    last_sample_at: datetime | None = None
    duration_s: float
    estimator: str
    spec_hash: str
    code_version: str
    data_fingerprint: str | None = Field(None, description="SHA-256 of the sorted ids of the samples fitted on, "
                                                           "one per line")
    config_version: int = Field(0, description="the model's configuration version the training used "
                                               "(ModelConfigured; 0: the spec file as is)")


class CandidateTrained(Event):
    """The trainer fitted and converted a candidate and stored its artifact."""

    topic: ClassVar[str] = topics.CANDIDATES
    event_type: Literal["CandidateTrained"] = "CandidateTrained"
    schema_version: Literal[1] = 1
    candidate_id: str
    task: Literal["classification", "regression"]
    artifact: ArtifactRef
    signature: InputSignature
    classes: list[str] | None = None
    training: TrainingStats
    conversion: ConversionCheck
    retrain_request_id: str | None = None
    trigger: str


class TrainingFailed(Event):
    """A training ended without a candidate: the fit raised, ran past the spec's ``fit_timeout_s`` (and
    was stopped), or the window held too little data. It ends the request in flight at once; the
    monitor retries failures with backoff (not ``insufficient_data``: only new data helps there)."""

    topic: ClassVar[str] = topics.CANDIDATES
    event_type: Literal["TrainingFailed"] = "TrainingFailed"
    schema_version: Literal[1] = 1
    failure: Literal["error", "timeout", "insufficient_data"]
    reason: str
    retrain_request_id: str | None = None
    trigger: str
    duration_s: float = Field(description="from the start of the training to its failure")


class Check(_Value):
    """One safeguard check with every number that went into it."""

    metric: str
    kind: Literal["gate", "tolerance", "significance", "conversion", "holdout"]
    candidate: float | None
    champion: float | None = None
    difference: float | None = None
    threshold: float | None = None
    passed: bool
    detail: str


class HoldoutInfo(_Value):
    size: int
    fingerprint: str


class JudgingWindow(_Value):
    """Which holdout rows a decision was judged on, and why those."""

    rows: int
    after_seq: int | None = Field(None, description="only holdout rows that arrived after this one (a change)")
    changed_at: datetime | None = Field(None, description="when the concept judged on began (its first sample)")
    reason: str


class LiveEvidence(_Value):
    """The anytime-valid sequential test that decided on live labeled traffic (refit.core.sequential)."""

    challenger_version: int
    champion_version: int
    pairs: int
    wins: int = Field(description="pairs where the challenger's loss was smaller")
    losses: int = Field(description="pairs where the challenger's loss was larger")
    e_value: float = Field(description="the evidence for the decision; it crossed 1/alpha")
    alpha: float
    min_pairs: int
    test: str = "betting e-process on the sign of the paired loss difference (anytime-valid)"
    shadow_pairs: int = Field(0, description="of the pairs, those whose challenger prediction an inference replica "
                                             "made on the served request (ShadowScored); the rest the monitor "
                                             "scored itself on the labeled samples")


class DifferenceInterval(_Value):
    """Paired-bootstrap interval of (candidate − champion) on the shared holdout."""

    observed: float
    low: float
    high: float
    confidence: float
    resamples: int


class Evidence(_Value):
    """What a decision rests on, every number and reason: the monitor's judging produces it, and a
    decision event carries it as it is (its fields are the decision's)."""

    holdout: HoldoutInfo | None = None
    candidate_scores: dict[str, float] = Field(default_factory=dict)
    champion_scores: dict[str, float] | None = None
    intervals: dict[str, DifferenceInterval] | None = None
    checks: list[Check] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    window: JudgingWindow | None = None
    live: LiveEvidence | None = None

    def evidence(self) -> dict[str, Any]:
        """The evidence fields alone, as keyword arguments for a decision event."""
        return {name: getattr(self, name) for name in Evidence.model_fields}


class _Decision(Evidence, Event):
    topic: ClassVar[str] = topics.DECISIONS
    sequence: int
    candidate_id: str | None
    version: int
    digest: str
    artifact_uri: str
    task: Literal["classification", "regression"]
    champion_version: int | None = None
    config_version: int = Field(0, description="the model's configuration version the decision used "
                                               "(ModelConfigured; 0: the spec file as is)")


class ModelPromoted(_Decision):
    """The candidate passed the safeguard; it is the champion from now on."""

    event_type: Literal["ModelPromoted"] = "ModelPromoted"
    schema_version: Literal[1] = 1


class CandidateRejected(_Decision):
    """The candidate failed the safeguard, or was a duplicate for a retrain request already answered
    (rejected unjudged, its reason says so); the champion stays."""

    event_type: Literal["CandidateRejected"] = "CandidateRejected"
    schema_version: Literal[1] = 1


class ModelRolledBack(_Decision):
    """An operator put an earlier version back as champion."""

    event_type: Literal["ModelRolledBack"] = "ModelRolledBack"
    schema_version: Literal[1] = 1
    requested_by: str | None = None


class DeadLettered(Event):
    """A record a consumer could not use, with its original bytes and the reason."""

    topic: ClassVar[str] = topics.DEAD_LETTERS
    event_type: Literal["DeadLettered"] = "DeadLettered"
    schema_version: Literal[1] = 1
    source_topic: str
    partition: int
    offset: int
    consumer: str
    reason: str
    original_key: str | None = None
    original_value: str = Field(description="the original record value, base64")


class PredictionServed(Event):
    """One prediction request an inference replica answered: the query log that labels join.

    ``request_id`` is the response's request id. Row ``i`` of a multi-row request joins a
    label sent with request id ``"<request_id>#<i>"``; a single-row request joins ``request_id``.
    """

    topic: ClassVar[str] = topics.PREDICTIONS
    event_type: Literal["PredictionServed"] = "PredictionServed"
    schema_version: Literal[1] = 1
    request_id: str
    version: int
    digest: str
    replica_id: str
    inputs: list[dict[str, float]] | list[list[float]] | list[str] = Field(
        description="the rows as the client sent them: named features, feature lists, or texts")
    classes: list[str] | None = Field(None, description="classification: the column order of probabilities")
    labels: list[str] | None = Field(None, description="classification: the predicted label per row")
    probabilities: list[list[float]] | None = Field(None, description="classification: per row, in classes order")
    values: list[float | None] | None = Field(None, description="regression: the predicted value per row")


class ShadowOutputs(_Value):
    """One challenger's predictions for the rows of a :class:`ShadowScored`, in its ``keys`` order."""

    version: int
    digest: str
    role: Literal["candidate", "previous"] = Field(
        description="candidate: the newest rejected candidate; previous: the champion a promotion replaced")
    labels: list[str] | None = Field(None, description="classification: the predicted label per row")
    values: list[float | None] | None = Field(None, description="regression: the predicted value per row")


class ShadowScored(Event):
    """Rows an inference replica served, scored off the response path by the champion's challengers.

    One event holds many requests of one model and champion. ``keys`` are the rows' join keys
    (``refit.core.live.row_keys``: the request id of a single-row request, ``"<request_id>#<i>"``
    for row ``i`` of a multi-row one); a label sent with that request id pairs the champion's
    served prediction with each challenger's in the monitor's live tests.
    """

    topic: ClassVar[str] = topics.PREDICTIONS
    event_type: Literal["ShadowScored"] = "ShadowScored"
    schema_version: Literal[1] = 1
    replica_id: str
    version: int = Field(description="the champion that served these rows")
    digest: str
    keys: list[str]
    labels: list[str] | None = Field(None, description="classification: the champion's served label per row")
    values: list[float | None] | None = Field(None, description="regression: the champion's served value per row")
    challengers: list[ShadowOutputs]


Decision = ModelPromoted | CandidateRejected | ModelRolledBack
SERVING_DECISIONS = (ModelPromoted, ModelRolledBack)

EVENT_TYPES: dict[str, type[Event]] = {
    cls.model_fields["event_type"].default: cls
    for cls in (
        SampleIngested,
        RetrainRequested,
        RetrainingPaused,
        RetrainingResumed,
        ConceptChanged,
        SamplesQuarantined,
        ModelConfigured,
        CandidateTrained,
        TrainingFailed,
        ModelPromoted,
        CandidateRejected,
        ModelRolledBack,
        DeadLettered,
        PredictionServed,
        ShadowScored,
    )
}

# (event_type, old schema_version) -> function turning an old payload into the next version.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def check_upcasters(upcasters: dict[tuple[str, int], Upcaster]) -> None:
    """Refuse a registry with an upcaster for an unknown event type, or for a version that is not
    older than the event's current one (it would never run); checked when this module loads."""
    for event_type, version in upcasters:
        if event_type not in EVENT_TYPES:
            raise ValueError(f"an upcaster for unknown event type {event_type!r}")
        current = EVENT_TYPES[event_type].model_fields["schema_version"].default
        if version >= current:
            raise ValueError(f"an upcaster for {event_type} schema_version {version}, not older than {current}")


check_upcasters(UPCASTERS)


def parse_event(raw: bytes, expected: type[Event] | tuple[type[Event], ...] = Event) -> Event:
    """Decode bytes from the broker into an event, upcasting old schema versions.

    Raises :class:`EventDecodeError` with a reason a human can act on.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventDecodeError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EventDecodeError("not a JSON object")
    event_type = data.get("event_type")
    cls = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if cls is None:
        raise EventDecodeError(f"unknown event_type {event_type!r}")
    if not issubclass(cls, expected):
        raise EventDecodeError(f"{event_type} does not belong on this topic")
    missing = [k for k in ("event_id", "occurred_at") if k not in data]
    if missing:  # defaults would invent them, and an invented event_id breaks idempotency
        raise EventDecodeError(f"{event_type} without {', '.join(missing)}")
    current = cls.model_fields["schema_version"].default
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise EventDecodeError("schema_version is missing or not an integer")
    if version > current:
        raise EventDecodeError(
            f"{event_type} schema_version {version} is newer than this reader ({current})"
        )
    while version < current:
        upcast = UPCASTERS.get((event_type, version))
        if upcast is None:
            raise EventDecodeError(f"{event_type} schema_version {version} is no longer readable")
        data = upcast(data)
        version += 1
        data["schema_version"] = version
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise EventDecodeError(f"invalid {event_type}: {where}: {first['msg']}") from None
