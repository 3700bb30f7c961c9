"""The published event schemas: an AsyncAPI 3.0 document generated from the event models.

Everything comes from :data:`refit.events.EVENT_TYPES` and the topic each event class is
bound to, so a new event or field reaches the document by regenerating it::

    python -m refit.asyncapi > docs/asyncapi.json
    python -m refit.asyncapi --topic refit.decisions    # one topic's self-contained JSON Schema

:func:`topic_schema` turns the document into one JSON Schema per topic (a ``oneOf`` of the
topic's events, told apart by ``event_type``) with every reference resolved, so a consumer in
any language can validate a record value with a plain JSON Schema validator.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from typing import Any, NamedTuple

from pydantic.json_schema import models_json_schema

import refit
from refit import signing, topics
from refit.events import CLOUDEVENT_TYPE_PREFIX, EVENT_TYPES, Event

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMAS = "#/components/schemas/"
SIGNATURE_PATTERN = "^hmac-sha256=[0-9a-f]{64}$"

Json = dict[str, Any]


class Role(NamedTuple):
    """What a topic is for, who writes it and who reads it (inside refit)."""

    purpose: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]


# Every topic of refit.topics needs one: the generator refuses a topic it cannot document.
ROLES: dict[str, Role] = {
    topics.SAMPLES: Role(
        purpose="Labeled samples, each acknowledged by all in-sync replicas before ingest answered.",
        producers=("ingest",), consumers=("trainer", "monitor")),
    topics.RETRAIN_REQUESTS: Role(
        purpose="Requests for a new candidate: an operator (API, CLI) or a monitor trigger; the pause and "
                "resumption of automatic retraining; the concept changes the monitor recorded (where every "
                "training starts); samples an operator quarantined; a model's configuration changed at run time.",
        producers=("monitor",), consumers=("trainer",)),
    topics.CANDIDATES: Role(
        purpose="Fitted, converted and checked candidates with a claim check on their ONNX bytes.",
        producers=("trainer",), consumers=("monitor",)),
    topics.DECISIONS: Role(
        purpose="The monitor's judgements and rollbacks, each signed (refit-signature header).",
        producers=("monitor",), consumers=("inference",)),
    topics.PREDICTIONS: Role(
        purpose="The query log: every prediction an inference replica served (PredictionServed, only when "
                "REFIT_INFERENCE_PUBLISH_PREDICTIONS is true); and the served rows its champion's challengers "
                "scored in the shadow (ShadowScored, when REFIT_INFERENCE_SHADOW_SCORING is true, the default).",
        producers=("inference",), consumers=("monitor",)),
    topics.DEAD_LETTERS: Role(
        purpose="Records a consumer could not use: the original bytes and the reason. Nothing in "
                "refit reads them; they are for operators and audit.",
        producers=("trainer", "monitor", "inference"), consumers=()),
}
SIGNED_TOPICS = frozenset({topics.DECISIONS})

# The envelope every event carries on the wire (parse_event needs event_type and schema_version;
# the design promises all five), with what a reader may rely on.
ENVELOPE: dict[str, str] = {
    "event_id": "Unique per event; consumers are idempotent by it (delivery is at least once).",
    "event_type": "The event's name; tells the events of one topic apart.",
    "schema_version": "Bumped by any change other than an added field; readers upcast older versions.",
    "occurred_at": "When the event happened, RFC 3339 with a UTC offset.",
    "model": "The model the event concerns; also the Kafka key, so one model's events keep their order.",
}

SIGNATURE_HEADERS: Json = {
    "type": "object",
    "required": [signing.HEADER],
    "properties": {signing.HEADER: {
        "type": "string", "pattern": SIGNATURE_PATTERN,
        "description": "hmac-sha256=<hex>: HMAC-SHA256 of the exact record value bytes under the "
                       "decision signing key. Verify it over the bytes as received, before parsing; "
                       "never re-serialise.",
    }},
}


def cloudevent_headers(cls: type[Event]) -> Json:
    """The CloudEvents attributes every record carries as Kafka headers (the CloudEvents Kafka
    binding's binary content mode): the value stays the event's JSON."""
    kind = f"{CLOUDEVENT_TYPE_PREFIX}.{cls.__name__}.v{cls.model_fields['schema_version'].default}"
    text = {"ce_specversion": ("1.0", "The CloudEvents version."),
            "ce_id": (None, "The event's event_id."),
            "ce_type": (kind, "io.refit.<event_type>.v<schema_version>."),
            "ce_source": (None, "The service instance that published it: /refit/<client id>@<host>."),
            "ce_time": (None, "The event's occurred_at, RFC 3339."),
            "ce_subject": (None, "The model (absent when the event names none)."),
            "content-type": ("application/json", "The value's media type.")}
    return {"type": "object", "required": [k for k in text if k != "ce_subject"], "properties": {
        k: {"type": "string", **({"const": const} if const else {}), "description": d}
        for k, (const, d) in text.items()}}


def channel_id(topic: str) -> str:
    return topic.removeprefix("refit.")


def _event_schemas() -> Json:
    classes = sorted(EVENT_TYPES.values(), key=lambda c: c.__name__)
    _, top = models_json_schema([(cls, "serialization") for cls in classes],
                                ref_template=SCHEMAS + "{model}")
    schemas: Json = top["$defs"]
    for cls in classes:
        schema = schemas[cls.__name__]
        schema["required"] = [*ENVELOPE, *(f for f in schema.get("required", []) if f not in ENVELOPE)]
        for field, text in ENVELOPE.items():
            schema["properties"][field]["description"] = text
    return schemas


def _message(cls: type[Event]) -> Json:
    doc = (cls.__doc__ or cls.__name__).strip()
    message: Json = {
        "name": cls.__name__, "title": cls.__name__, "summary": doc.splitlines()[0],
        "description": doc, "contentType": "application/json",
        "payload": {"$ref": SCHEMAS + cls.__name__},
        "bindings": {"kafka": {"key": {"type": "string", "description": "the model name (the payload's "
                                       "model)"}, "bindingVersion": KAFKA_BINDING_VERSION}},
    }
    message["headers"] = cloudevent_headers(cls)
    if cls.topic in SIGNED_TOPICS:
        message["headers"]["required"].append(signing.HEADER)
        message["headers"]["properties"] |= copy.deepcopy(SIGNATURE_HEADERS["properties"])
    return message


def _operation(action: str, service: str, topic: str, names: list[str]) -> Json:
    cid = channel_id(topic)
    verb = "publishes to" if action == "send" else "consumes"
    return {"action": action, "channel": {"$ref": f"#/channels/{cid}"}, "title": f"{service} {verb} {topic}",
            "tags": [{"name": service}],
            "messages": [{"$ref": f"#/channels/{cid}/messages/{n}"} for n in names]}


def build_document() -> Json:
    """The AsyncAPI 3.0 document of every event in :data:`EVENT_TYPES`, by topic."""
    by_topic: dict[str, list[str]] = {}
    for cls in EVENT_TYPES.values():
        if cls.topic not in ROLES:
            raise ValueError(f"{cls.__name__} is bound to {cls.topic!r}, which has no entry in ROLES")
        by_topic.setdefault(cls.topic, []).append(cls.__name__)
    channels: Json = {}
    operations: Json = {}
    for topic in topics.ALL:
        role = ROLES[topic]
        names = sorted(by_topic.get(topic, []))
        channels[channel_id(topic)] = {
            "address": topic, "title": topic, "description": role.purpose,
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
        }
        for action, services in (("send", role.producers), ("receive", role.consumers)):
            for service in services:
                operations[f"{service}_{action}_{channel_id(topic).replace('-', '_')}"] = _operation(
                    action, service, topic, names)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "refit events", "version": refit.__version__, "license": {"name": "Apache-2.0"},
            "description": (
                "Every event refit publishes. Values are JSON objects; the Kafka key is the model name, "
                "so all events of one model keep their order. Adding a field is compatible and readers "
                "ignore fields they do not know; any other change bumps schema_version. Generated by "
                "`python -m refit.asyncapi`; see docs/events.md."),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {"host": "127.0.0.1:9092", "protocol": "kafka",
                      "description": "the embedded broker of the local stack (make run)"},
            "compose": {"host": "localhost:29092", "protocol": "kafka",
                        "description": "Apache Kafka of docker compose, host-side listener"},
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": _event_schemas(),
            "messages": {cls.__name__: _message(cls) for cls in EVENT_TYPES.values()},
        },
    }


def render(document: Json) -> str:
    """Deterministic JSON: sorted keys, two-space indent, one trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _resolve(document: Json, node: Any, trail: tuple[str, ...] = ()) -> Any:
    if isinstance(node, list):
        return [_resolve(document, item, trail) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/") or ref in trail:
            raise ValueError(f"cannot inline reference {ref!r}")
        target: Any = document
        for part in ref[2:].split("/"):
            target = target[part]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return {**_resolve(document, target, (*trail, ref)), **_resolve(document, siblings, trail)}
    return {key: _resolve(document, value, trail) for key, value in node.items()}


def topic_schema(document: Json, topic: str) -> Json:
    """A self-contained JSON Schema (2020-12) that any record value on ``topic`` satisfies."""
    (channel,) = [c for c in document["channels"].values() if c["address"] == topic]
    variants = [_resolve(document, _resolve(document, ref)["payload"]) for ref in channel["messages"].values()]
    return {"$schema": JSON_SCHEMA_DIALECT, "title": f"a record value on {topic}",
            "description": "exactly one of the topic's events, told apart by event_type",
            "oneOf": sorted(variants, key=lambda v: str(v["title"]))}


def topic_schemas(document: Json | None = None) -> dict[str, Json]:
    """:func:`topic_schema` for every topic of ``document`` (default: a freshly built one)."""
    document = document if document is not None else build_document()
    return {c["address"]: topic_schema(document, c["address"]) for c in document["channels"].values()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m refit.asyncapi",
                                     description="Print the AsyncAPI document of refit's events.")
    parser.add_argument("--topic", choices=topics.ALL, help="print this topic's self-contained JSON Schema")
    args = parser.parse_args(argv)
    document = build_document()
    sys.stdout.write(render(topic_schema(document, args.topic) if args.topic else document))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
