"""The services' OpenAPI documents made exact for the configured models.

FastAPI documents a model name as any string and a row as any object; the services then answer
422 or 404 to most schema-valid requests. :func:`exact` rewrites a service's document from its
specs, so that what the document allows is what the service takes (schemathesis'
``positive_data_acceptance`` and ``negative_data_rejection`` hold it to that):

- a model name in a path is one of the configured names; an artifact digest is 64 hex digits;
- a prediction's body is declared per model, one concrete path each
  (``/v1/models/digits/predict``), with the model's features, bounds and text limits;
- a sample's body (ingest) is one of the per-model forms, told apart by its ``model``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from refit.specs import ModelSpec, ModelSpecs

DIGEST = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
# A text the models take: at least one character that is not white space.
_TEXT = {"type": "string", "pattern": r"\S"}
PREDICT_PATH = "/v1/models/{name}/predict"

# The 200 answers that are not JSON.
DATASET_RESPONSES: dict[int | str, dict[str, Any]] = {200: {
    "description": "The dataset: one JSON object per line (jsonl) or a header row and one row per sample (csv)",
    "content": {"application/x-ndjson": {"schema": {"type": "string"}}, "text/csv": {"schema": {"type": "string"}}}}}
ARTIFACT_RESPONSES: dict[int | str, dict[str, Any]] = {200: {
    "description": "The ONNX bytes of the artifact",
    "content": {"application/onnx": {"schema": {"type": "string", "format": "binary"}}}}}


def exact(app: FastAPI, specs: ModelSpecs, max_rows: int | None = None) -> None:
    """Make ``app.openapi`` answer the exact document (see the module's docstring).

    ``max_rows``: the rows a prediction (inference) or a batch of samples (ingest) may hold."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = narrowed(build(), specs, max_rows)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def narrowed(document: dict[str, Any], specs: ModelSpecs, max_rows: int | None = None) -> dict[str, Any]:
    """``document`` with names, digests, predictions and samples declared as the specs say."""
    names = {"type": "string", "enum": list(specs.names())}
    paths = document.get("paths", {})
    for item in paths.values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter["name"] in ("name", "digest"):
                    parameter["schema"] = copy.deepcopy(names if parameter["name"] == "name" else DIGEST)
    if PREDICT_PATH in paths:
        template = paths.pop(PREDICT_PATH)
        for spec in specs.models:
            item = copy.deepcopy(template)
            for operation in item.values():
                operation["parameters"] = [p for p in operation.get("parameters", []) if p["name"] != "name"]
                operation["operationId"] = f"{operation.get('operationId', 'predict')}_{spec.name}"
                operation["requestBody"]["content"]["application/json"]["schema"] = \
                    predict_body(spec, max_rows or 1024)
            paths[PREDICT_PATH.replace("{name}", spec.name)] = item
    schemas = document.get("components", {}).get("schemas", {})
    if "SampleRow" in schemas:
        _samples(schemas, specs, max_rows)
    return document


def _number(low: float, high: float) -> dict[str, Any]:
    return {"type": "number", "minimum": low, "maximum": high}


def row_schemas(spec: ModelSpec) -> list[dict[str, Any]]:
    """One row of a numeric model: an object of every named feature, or the numbers in feature order."""
    ranges = spec.feature_ranges
    named = {"type": "object", "properties": {name: _number(low, high) for name, low, high in ranges},
             "required": [name for name, _, _ in ranges], "additionalProperties": False}
    if len({(low, high) for _, low, high in ranges}) == 1:
        items: dict[str, Any] = {"items": _number(ranges[0][1], ranges[0][2])}
    else:
        items = {"prefixItems": [_number(low, high) for _, low, high in ranges], "items": False}
    listed = {"type": "array", **items, "minItems": len(ranges), "maxItems": len(ranges)}
    return [named, listed]


def text_schema(spec: ModelSpec) -> dict[str, Any]:
    return {**_TEXT, "maxLength": spec.bounds.max_chars}


def predict_body(spec: ModelSpec, max_rows: int) -> dict[str, Any]:
    """A prediction request of one model: exactly one input field (services/inference/predict.py)."""
    rows = {"minItems": 1, "maxItems": max_rows}
    if spec.input.kind == "text":
        fields = {"text": text_schema(spec), "texts": {"type": "array", "items": text_schema(spec), **rows}}
        description = ("Exactly one of: text, texts. Texts are padded to the longest, and a request may hold at "
                       "most the replica's REFIT_INFERENCE_MAX_REQUEST_CHARS of rows x the longest text.")
    else:
        named, listed = row_schemas(spec)
        fields = {"features": {"oneOf": [named, listed]},
                  "instances": {"type": "array", "items": named, **rows},
                  "inputs": {"type": "array", "items": listed, **rows}}
        description = ("Exactly one of: features (one row), instances (rows of named features), "
                       "inputs (rows of numbers in feature order).")
    return {"type": "object", "description": description, "properties": fields,
            "oneOf": [{"required": [field]} for field in fields], "additionalProperties": False,
            "minProperties": 1, "maxProperties": 1}


def label_schema(spec: ModelSpec) -> dict[str, Any]:
    if spec.task == "regression":
        return _number(*spec.bounds.label_range())
    if spec.labels is not None:  # an integer stands for its decimal text
        numbers = [int(v) for v in spec.labels if v.lstrip("-").isdigit() and str(int(v)) == v]
        return {"oneOf": [{"type": "string", "enum": list(spec.labels)},
                          *([{"type": "integer", "enum": numbers}] if numbers else [])]}
    return {"oneOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]}


def _samples(schemas: dict[str, Any], specs: ModelSpecs, max_rows: int | None) -> None:
    """Per-model forms of ``SampleRow``, ``SampleIn`` and ``BatchIn`` (ingest)."""
    row, batch = schemas["SampleRow"], schemas.get("BatchIn")
    one, many = [], []
    for spec in specs.models:
        form = copy.deepcopy(row)
        properties = form["properties"]
        if spec.input.kind == "text":
            properties["features"] = {"type": "null"}
            properties["text"] = text_schema(spec)
            required = "text"
        else:
            properties["features"] = {"oneOf": row_schemas(spec)}
            properties["text"] = {"type": "null"}
            required = "features"
        properties["label"] = label_schema(spec)
        form["required"] = sorted({*form.get("required", []), required, "label"})
        form["title"] = f"SampleRow ({spec.name})"
        schemas[f"SampleRow_{spec.name}"] = form
        sample = copy.deepcopy(form)
        sample["properties"]["model"] = {"const": spec.name}
        sample["required"] = sorted({*sample["required"], "model"})
        sample["title"] = f"SampleIn ({spec.name})"
        one.append(sample)
        if batch is not None:
            form_batch = copy.deepcopy(batch)
            form_batch["properties"]["model"] = {"const": spec.name}
            samples = form_batch["properties"]["samples"]
            samples["items"] = {"$ref": f"#/components/schemas/SampleRow_{spec.name}"}
            if max_rows is not None:
                samples["maxItems"] = max_rows
            form_batch["title"] = f"BatchIn ({spec.name})"
            many.append(form_batch)
    if "SampleIn" in schemas:
        schemas["SampleIn"] = {"title": "SampleIn", "oneOf": one}
    if batch is not None:
        schemas["BatchIn"] = {"title": "BatchIn", "oneOf": many}
