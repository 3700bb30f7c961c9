"""The shared HTTP edge: strict JSON bodies and the error answers every OpenAPI operation declares."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from refit.web import (ERROR_SCHEMA, BodyLimit, JSONRoute, add_error_handlers, answers, declare_errors, decode_json,
                       error_responses, require_token)


@pytest.mark.parametrize("raw", [b'{"a": [1, 2.5, "x"]}', b"123456789012345678901234567890", b'"\\ud83d\\ude00"',
                                 '{"a": "caf\u00e9 \U0001f600"}'.encode(), '"\u00e9"'.encode("utf-16")])
def test_decode_json_reads_what_the_standard_library_reads(raw: bytes) -> None:
    assert decode_json(raw) == json.loads(raw)


def test_decode_json_keeps_nan_for_validation_to_refuse_by_field() -> None:
    assert math.isnan(decode_json(b'{"a": NaN}')["a"])


@pytest.mark.parametrize(("raw", "loc", "shown"), [
    (b'"\\ud800"', ["body"], "\\ud800"),
    (b'{"a": {"b": ["ok", "x\\udfff"]}}', ["body", "a", "b", 1], "\\udfff"),
    (b'{"k\\ude00": 1}', ["body", "k\\ude00"], "\\ude00"),
    (b'{"a": "\\ude00\\ud83d"}', ["body", "a"], "\\ude00"),  # a pair in the wrong order is two lone ones
    (b'{"a": "\xed\xa0\x80"}', ["body", "a"], "\\ud800"),  # the raw bytes, which json decodes as well
    ('["\ud800"]'.encode("utf-16-le", "surrogatepass"), ["body", 0], "\\ud800"),  # and in UTF-16
])
def test_decode_json_refuses_lone_surrogates_naming_where(raw: bytes, loc: list[Any], shown: str) -> None:
    with pytest.raises(HTTPException) as caught:
        decode_json(raw)
    assert caught.value.status_code == 422
    assert caught.value.detail[0]["loc"] == loc
    assert caught.value.detail[0]["type"] == "string_unicode"
    assert f"({shown})" in caught.value.detail[0]["msg"]
    json.dumps(caught.value.detail, ensure_ascii=False).encode()  # the answer itself is UTF-8


def test_decode_json_reports_every_lone_surrogate_in_document_order() -> None:
    raw = b'{"a": "\\ud800", "b": [{"\\udbff": "\\udc00"}], "c": "fine"}'
    with pytest.raises(HTTPException) as caught:
        decode_json(raw)
    assert [e["loc"] for e in caught.value.detail] == [["body", "a"], ["body", "b", 0, "\\udbff"],
                                                        ["body", "b", 0, "\\udbff"]]


def test_decode_json_walks_deep_nesting_without_recursion() -> None:
    depth = 500  # the standard library's decoder follows about a thousand levels
    with pytest.raises(HTTPException) as caught:
        decode_json(b"[" * depth + b'"\\ud800"' + b"]" * depth)
    assert caught.value.detail[0]["loc"] == ["body", *[0] * depth]


class Body(BaseModel):
    reason: str
    count: int = 0


@answers(404)
def known(name: str) -> str:
    if name != "m":
        raise HTTPException(404, f"no model named {name!r}")
    return name


def small_app() -> FastAPI:
    app = FastAPI()
    app.router.route_class = JSONRoute
    app.add_middleware(BodyLimit, limit=1024)
    add_error_handlers(app)
    protected = [Depends(require_token("secret"))]

    @app.post("/things/{name}", dependencies=protected)
    async def post_thing(name: Annotated[str, Depends(known)], body: Body) -> dict[str, str]:
        return {"name": name, "reason": body.reason}

    @app.post("/raw", openapi_extra={"requestBody": {"content": {"application/json": {"schema": {}}}}})
    async def raw(request: Request) -> dict[str, Any]:
        return {"length": len(await request.body())}

    @app.get("/open")
    async def open_() -> dict[str, str]:
        return {}

    @app.get("/busy")
    async def busy() -> dict[str, str]:
        raise HTTPException(503, "busy")

    declare_errors(app, {"GET /busy": [503], "POST /raw": [415]})
    return app


def test_a_route_of_the_app_refuses_a_lone_surrogate_with_a_422_before_anything_runs() -> None:
    client = TestClient(small_app(), raise_server_exceptions=False)
    token = {"authorization": "Bearer secret", "content-type": "application/json"}
    response = client.post("/things/m", headers=token, content=b'{"reason": "x\\ud800"}')
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "reason"]
    accepted = client.post("/things/m", headers=token, content=b'{"reason": "x\\ud83d\\ude00"}')
    assert accepted.json() == {"name": "m", "reason": "x\U0001f600"}
    echoed = client.post("/things/m", headers=token, content=b'{"reason": "r", "count": "\\ud83d\\ude00"}')
    assert echoed.status_code == 422 and echoed.json()["detail"][0]["input"] == "\U0001f600"


def responses(document: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    return document["paths"][path][method]["responses"]


def test_declare_errors_declares_what_each_operation_answers() -> None:
    document = small_app().openapi()
    error = {"application/json": {"schema": ERROR_SCHEMA}}
    things = responses(document, "/things/{name}", "post")
    assert sorted(things) == ["200", "400", "401", "404", "413", "422"]
    assert all(things[s]["content"] == error for s in ("400", "401", "404", "413"))
    validation = {"$ref": "#/components/schemas/HTTPValidationError"}
    assert things["422"]["content"]["application/json"]["schema"] == validation
    assert sorted(responses(document, "/raw", "post")) == ["200", "400", "413", "415"]
    assert sorted(responses(document, "/open", "get")) == ["200"]
    assert sorted(responses(document, "/busy", "get")) == ["200", "503"]


def test_declared_answers_are_the_answers_given() -> None:
    client = TestClient(small_app(), raise_server_exceptions=False)
    token = {"authorization": "Bearer secret", "content-type": "application/json"}
    answers_given = {
        "400": client.post("/things/m", headers=token, content=b"[" * 1000),  # deeper than json follows
        "401": client.post("/things/m", json={"reason": "x"}),
        "404": client.post("/things/other", headers=token, json={"reason": "x"}),
        "413": client.post("/things/m", headers=token, content=b"{" + b" " * 2000 + b"}"),
        "503": client.get("/busy"),
    }
    for status, response in answers_given.items():
        assert str(response.status_code) == status, (status, response.text)
        assert set(response.json()) == {"detail"} and isinstance(response.json()["detail"], str)


def test_declare_errors_refuses_what_it_cannot_place() -> None:
    app = small_app()
    with pytest.raises(ValueError, match="no such operation: GET /nowhere"):
        declare_errors(app, {"GET /nowhere": [404]})
    with pytest.raises(ValueError, match="422"):
        declare_errors(app, {"GET /open": [422]})


def test_error_responses_can_be_given_to_a_route_directly() -> None:
    app = FastAPI()

    @app.get("/x", responses=error_responses(409))
    async def x() -> None:
        raise HTTPException(409, "no")

    assert responses(app.openapi(), "/x", "get")["409"]["content"]["application/json"]["schema"] == ERROR_SCHEMA


def test_a_405_allows_every_method_of_the_path_and_token_routes_declare_their_scheme() -> None:
    # GET and PUT of one path are two routes: Starlette's Allow named only the first one's method.
    app = FastAPI()
    add_error_handlers(app)
    router = APIRouter()
    router.get("/v1/things/{name}/config")(lambda name: {})
    router.put("/v1/things/{name}/config", dependencies=[Depends(require_token("t"))])(lambda name: {})
    app.include_router(router)
    response = TestClient(app).options("/v1/things/a/config")
    assert response.status_code == 405 and response.headers["allow"] == "GET, PUT"
    operation = app.openapi()["paths"]["/v1/things/{name}/config"]["put"]
    assert operation["security"] == [{"control": []}]
    assert app.openapi()["components"]["securitySchemes"]["control"] == {"type": "http", "scheme": "bearer"}
