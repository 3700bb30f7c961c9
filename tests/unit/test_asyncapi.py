"""The published event schemas: docs/asyncapi.json is what the models generate, is AsyncAPI 3.0 in
shape, covers every event, and every example in docs/events.md satisfies it."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator, Draft202012Validator

from refit import signing, topics
from refit.asyncapi import ENVELOPE, SIGNATURE_PATTERN, build_document, main, render, topic_schema, topic_schemas
from refit.events import EVENT_TYPES, parse_event

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = REPO / "docs" / "asyncapi.json"
KEY = re.compile(r"^[A-Za-z0-9_\-]+$")  # AsyncAPI 3.0: keys of channels, operations and components


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return json.loads(PUBLISHED.read_text())


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def pointer(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    target: Any = document
    for part in ref[2:].split("/"):
        target = target[part]
    return target


def examples() -> list[dict[str, Any]]:
    text = (REPO / "docs" / "events.md").read_text()
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", text, re.DOTALL)]


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_the_published_document_is_what_the_models_generate() -> None:
    assert PUBLISHED.read_text() == render(build_document()), (
        "docs/asyncapi.json is out of date: run `.venv/bin/python -m refit.asyncapi > docs/asyncapi.json`")


def test_generation_is_deterministic_and_the_module_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert render(build_document()) == render(build_document())
    assert main([]) == 0
    assert capsys.readouterr().out == render(build_document())
    assert main(["--topic", topics.DECISIONS]) == 0
    assert json.loads(capsys.readouterr().out) == topic_schema(build_document(), topics.DECISIONS)


def test_the_document_has_the_shape_of_asyncapi_3(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] and document["info"]["version"]
    assert document["defaultContentType"] == "application/json"
    assert {s["protocol"] for s in document["servers"].values()} == {"kafka"}
    assert set(document) <= {"asyncapi", "id", "info", "servers", "defaultContentType", "channels",
                             "operations", "components"}
    for section in ("channels", "operations"):
        assert all(KEY.match(k) for k in document[section]), section
    for kind, entries in document["components"].items():
        assert all(KEY.match(k) for k in entries), kind
    for ref in refs(document):  # every reference is local and resolves
        pointer(document, ref)
    for name, operation in document["operations"].items():
        assert operation["action"] in ("send", "receive"), name
        channel = operation["channel"]["$ref"]
        assert operation["messages"], name
        # AsyncAPI 3.0: an operation's messages must be messages of its channel.
        assert all(m["$ref"].startswith(f"{channel}/messages/") for m in operation["messages"]), name
    for name, message in document["components"]["messages"].items():
        assert message["name"] == name and message["contentType"] == "application/json"
        assert message["bindings"]["kafka"]["key"]["type"] == "string"
        Draft7Validator.check_schema(pointer(document, message["payload"]["$ref"]))  # AsyncAPI schemas: draft-07


def test_every_event_is_on_its_topic_with_producers_and_consumers(document: dict[str, Any]) -> None:
    channels = {c["address"]: c for c in document["channels"].values()}
    assert sorted(channels) == sorted(topics.ALL)
    assert sorted(document["components"]["messages"]) == sorted(c.__name__ for c in EVENT_TYPES.values())
    for cls in EVENT_TYPES.values():
        assert cls.__name__ in channels[cls.topic]["messages"], cls.__name__
        assert cls.__name__ in document["components"]["schemas"], cls.__name__
    for topic, channel in channels.items():
        assert set(channel["messages"]) == {c.__name__ for c in EVENT_TYPES.values() if c.topic == topic}
    actions = {(op["channel"]["$ref"].rsplit("/", 1)[1], op["action"]) for op in document["operations"].values()}
    for cid, channel in document["channels"].items():
        assert (cid, "send") in actions, channel["address"]


def test_every_message_documents_its_cloudevents_headers_and_only_decisions_the_signature(
        document: dict[str, Any]) -> None:
    cloudevents = ["ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time", "content-type"]
    for cls in EVENT_TYPES.values():
        headers = document["components"]["messages"][cls.__name__]["headers"]
        signed = [signing.HEADER] if cls.topic == topics.DECISIONS else []
        assert headers["required"] == cloudevents + signed, cls.__name__
        assert set(headers["properties"]) == {*cloudevents, "ce_subject", *signed}, cls.__name__
        event = cls.model_construct(model="m", schema_version=cls.model_fields["schema_version"].default,
                                    event_type=cls.__name__)
        assert headers["properties"]["ce_type"]["const"] == event.cloudevent_type(), cls.__name__
    assert re.fullmatch(SIGNATURE_PATTERN, signing.sign(b"key", b'{"event_type": "ModelPromoted"}'))


def test_every_event_requires_the_envelope(document: dict[str, Any]) -> None:
    for cls in EVENT_TYPES.values():
        schema = document["components"]["schemas"][cls.__name__]
        assert set(ENVELOPE) <= set(schema["required"]), cls.__name__
        assert schema["properties"]["event_type"]["const"] == cls.__name__
        assert "additionalProperties" not in schema  # readers ignore unknown fields


def test_topic_schemas_are_self_contained_json_schemas(document: dict[str, Any]) -> None:
    schemas = topic_schemas(document)
    assert sorted(schemas) == sorted(topics.ALL)
    for topic, schema in schemas.items():
        Draft202012Validator.check_schema(schema)
        assert list(refs(schema)) == [], topic
        titles = [variant["title"] for variant in schema["oneOf"]]
        assert titles == sorted(c.__name__ for c in EVENT_TYPES.values() if c.topic == topic)


def test_every_event_type_has_an_example_in_the_docs() -> None:
    assert {e["event_type"] for e in examples()} == set(EVENT_TYPES)


@pytest.mark.parametrize("example", examples(), ids=lambda e: str(e.get("event_type")))
def test_each_example_in_the_docs_is_valid(example: dict[str, Any], document: dict[str, Any]) -> None:
    schemas = topic_schemas(document)
    cls = EVENT_TYPES[example["event_type"]]
    errors = [e.message for e in validator(schemas[cls.topic]).iter_errors(example)]
    assert errors == []
    assert parse_event(json.dumps(example).encode()).model_dump(mode="json") == example  # refit reads it as is
    for topic, schema in schemas.items():  # and it belongs to one topic only
        assert validator(schema).is_valid(example) == (topic == cls.topic), topic


@pytest.mark.parametrize("change, valid", [
    (lambda e: e.update(added_in_a_later_release=[1, 2]), True),  # adding a field is compatible
    (lambda e: e.pop("event_id"), False),
    (lambda e: e.pop("occurred_at"), False),
    (lambda e: e.update(schema_version=2), False),
    (lambda e: e.update(event_type="ModelPromoted"), False),
    (lambda e: e.update(event_id="not-a-uuid"), False),
    (lambda e: e.update(label=None), False),
    (lambda e: e.update(features={"age": "old"}), False),
])
def test_the_schema_accepts_additions_and_refuses_other_changes(change: Any, valid: bool,
                                                                document: dict[str, Any]) -> None:
    (sample,) = [e for e in examples() if e["event_type"] == "SampleIngested"]
    changed = copy.deepcopy(sample)
    change(changed)
    assert validator(topic_schemas(document)[topics.SAMPLES]).is_valid(changed) is valid
