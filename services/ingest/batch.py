"""The batch route's body: decoded with orjson and validated once, and declared in OpenAPI as if FastAPI
had read it (the route reads its body itself, which is what makes it fast: docs/benchmarks.md).

``bench/batch_parse.py`` measures this parse against pydantic's own ``BatchIn.model_validate_json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from refit.web import decode_json, is_json
from services.ingest.bodies import BatchIn

# The batch route reads its body itself (see parse_batch); this keeps it documented as before.
BATCH_OPENAPI = {
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/BatchIn"}}}},
    "responses": {"422": {"description": "Validation Error", "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}},
}


def with_batch_schema(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` with the ``BatchIn`` schemas the batch route refers to."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = FastAPI.openapi(app)
            batch = BatchIn.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(batch.pop("$defs", {}), BatchIn=batch)
        return app.openapi_schema  # type: ignore[return-value]

    return openapi


def parse_batch(body: bytes, content_type: str | None) -> BatchIn:
    """Decode and validate a batch body once, with FastAPI's answers for a declared JSON body.

    FastAPI decodes with the standard library and then validates; orjson is about four
    times faster on a batch of numbers. What orjson refuses (NaN, other encodings, lone
    surrogates) is decoded again by the standard library, so such rows are still reported by
    the field that holds them (see :func:`refit.web.decode_json`).
    """
    if not body:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    data: Any = body
    if is_json(content_type):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            try:
                data = decode_json(body)
            except json.JSONDecodeError as exc:
                raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos),
                                               "msg": "JSON decode error", "input": {}, "ctx": {"error": exc.msg}}],
                                             body=exc.doc) from None
            except ValueError:  # not decodable text at all
                raise HTTPException(400, "There was an error parsing the body") from None
            except RecursionError:  # nested deeper than the standard library's decoder can follow
                raise HTTPException(400, "There was an error parsing the body: nested too deeply") from None
    try:
        return BatchIn.model_validate(data, from_attributes=True)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)],
                                     body=data) from None
