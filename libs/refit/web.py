"""What every service's HTTP edge shares: body limits, strict JSON bodies, error mapping and the errors
the OpenAPI documents declare, running under uvicorn."""

from __future__ import annotations

import copy
import email.message
import hmac
import json
import math
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from http import HTTPStatus
from typing import Any, TypeVar

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from refit import tracing
from refit.errors import BrokerUnavailableError
from refit.lifecycle import Background
from refit.logs import configure
from refit.server import config as server_config
from refit.settings import CommonSettings, DataReads
from refit.workers import serve_worker, supervise, worker_index


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Answer 413 to any request whose body exceeds ``limit`` bytes, streamed or not."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit, send)
            return
        seen, exceeded, started = 0, False, False

        async def limited() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                exceeded = True
                raise BodyTooLarge
            return message

        async def guarded(message: Message) -> None:
            # FastAPI turns any error while reading a declared body into its own 400
            # ("There was an error parsing the body"); once over the limit, the answer is 413.
            nonlocal started
            if exceeded and not started:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, guarded)
        except BodyTooLarge:
            pass
        if exceeded and not started:
            await _too_large(self.limit, send)


async def _too_large(limit: int, send: Send) -> None:
    response = JSONResponse({"detail": f"request body exceeds {limit} bytes"}, status_code=413)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


_ECHO_DEPTH = 16  # how deep an echoed input is kept; deeper parts become "…"


def _json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON can carry it: bytes as text (undecodable bytes replaced), lone surrogates
    as their escapes, NaN and infinities as their names, nesting cut at ``_ECHO_DEPTH``.
    Validation errors echo the offending input, which may be any of these: a body nested 500
    levels deep is valid JSON, and encoding it back recursively raised RecursionError."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        return _printable(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict | list | tuple) and depth >= _ECHO_DEPTH:
        return "…"
    if isinstance(value, dict):
        return {k: _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v, depth + 1) for v in value]
    return value


# -- JSON bodies -----------------------------------------------------------------------------------

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # \ud800 to \udfff, in any case


def _printable(text: str) -> str:
    """``text`` with any lone surrogate written as its escape (``\\ud800``), so it can be UTF-8."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _lone_surrogate(text: str) -> str | None:
    """The first lone surrogate of ``text`` as its escape, or None when ``text`` is valid Unicode."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return _printable(exc.object[exc.start])
    return None


def _surrogate_errors(value: Any) -> list[dict[str, Any]]:
    """A validation error for every string (value or key) of a decoded body holding a lone surrogate.

    Iterative: the standard library decodes nesting about a thousand levels deep."""
    errors: list[dict[str, Any]] = []
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        children: list[tuple[tuple[str | int, ...], Any]]
        if isinstance(item, str):
            if (bad := _lone_surrogate(item)) is not None:
                errors.append(_surrogate_error(path, bad))
            continue
        if isinstance(item, dict):
            for key in item:
                if (bad := _lone_surrogate(key)) is not None:
                    errors.append(_surrogate_error((*path, _printable(key)), bad))
            children = [((*path, _printable(k)), v) for k, v in item.items()]
        elif isinstance(item, list):
            children = [((*path, i), v) for i, v in enumerate(item)]
        else:
            continue
        stack.extend(reversed(children))  # popped in document order
    return errors


def _surrogate_error(path: tuple[str | int, ...], surrogate: str) -> dict[str, Any]:
    return {"loc": ["body", *path], "type": "string_unicode",
            "msg": f"not valid Unicode text: a lone surrogate ({surrogate}); send the character itself "
                   "or a complete surrogate pair"}


def decode_json(body: bytes) -> Any:
    """Decode a JSON body exactly as FastAPI does (the standard library: ``NaN`` is a number, so
    validation refuses it naming its field), but refuse any string that is not Unicode text.

    The standard library turns ``"\\ud800"`` (or the raw bytes ED A0 80, which it decodes with
    ``surrogatepass``) into a lone surrogate, which every later encoding refuses: the event's
    bytes, SQLite, the JSON answer; those were 500s. Now it is a 422 naming the field. Only a body
    with non-ASCII bytes or a surrogate escape can hold one, so only such a body is walked.
    Raises :class:`json.JSONDecodeError` for what is not JSON at all.
    """
    value = json.loads(body)
    if not body.isascii() or _SURROGATE_ESCAPE.search(body):
        errors = _surrogate_errors(value)
        if errors:
            raise HTTPException(422, errors)
    return value


class _JSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = decode_json(await self.body())
        return self._json


class JSONRoute(APIRoute):
    """A route whose declared JSON body is decoded by :func:`decode_json`, not by the standard library
    alone. Use it for every route of an app: ``app.router.route_class = JSONRoute`` before adding any."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def decoded(request: Request) -> Response:
            return await handler(_JSONRequest(request.scope, request.receive))

        return decoded


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input as is: a raw body that is not UTF-8 (say, sent
        # as multipart/form-data) or a NaN/Infinity token (the standard library's JSON accepts
        # them) turned the 422 into a 500.
        return JSONResponse({"detail": jsonable_encoder(_json_safe(exc.errors()))}, status_code=422)

    @app.exception_handler(405)
    async def _not_allowed(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's Allow names the methods of the first route matching the path only; a path
        # served by several routes (GET and PUT of a config) answers every one of them.
        allowed = sorted({m for r in _api_routes(app.routes) if r.matches(request.scope)[0] is not Match.NONE
                          for m in r.methods})
        return JSONResponse({"detail": exc.detail}, status_code=405,
                            headers={**(exc.headers or {}), "Allow": ", ".join(allowed)})

    @app.exception_handler(BrokerUnavailableError)
    async def _broker_down(request: Request, exc: BrokerUnavailableError) -> JSONResponse:
        return JSONResponse({"detail": f"broker unavailable, nothing was accepted: {exc}"}, status_code=503,
                            headers={"Retry-After": "1"})


def is_json(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` names JSON: ``application/json`` or any ``application/*+json``."""
    message = email.message.Message()
    message["content-type"] = content_type or ""
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def require_token(*accepted: str, scheme_name: str = "control") -> Callable[..., None]:
    """A dependency refusing requests without ``Authorization: Bearer <one of accepted>``.

    Every accepted token is compared, each in constant time, so timing tells nothing. The
    operations depending on it declare the bearer scheme ``scheme_name`` in the OpenAPI document.
    """
    encoded = [a.encode() for a in accepted]
    declared = HTTPBearer(scheme_name=scheme_name, auto_error=False)

    @answers(401)
    def check(request: Request, _: object = Depends(declared)) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.encode()
        matched = [hmac.compare_digest(given, a) for a in encoded]
        if scheme.lower() != "bearer" or not any(matched):
            raise HTTPException(401, f"a valid bearer token is required ({_NEEDS.get(scheme_name, scheme_name)})",
                                headers={"WWW-Authenticate": "Bearer"})

    setattr(check, _CREDENTIAL, scheme_name)
    return check


_CREDENTIAL = "__refit_credential__"
_NEEDS = {"control": "the control token", "read": "the read credential or the control token",
          "ingest": "a producer key"}


def reads(settings: DataReads, *also: str) -> list[Any]:
    """The dependencies of a route that returns data: none in local mode (reads stay open), else the
    read credential, or one of ``also`` (the monitor's control token: the stronger credential)."""
    if settings.reads_open:
        return []
    return [Depends(require_token(settings.read_token.get_secret_value(), *also, scheme_name="read"))]


def credentials(route: APIRoute) -> set[str]:
    """The credentials (bearer scheme names of :func:`require_token`) an operation requires."""
    found, pending = set(), [route.dependant]
    while pending:
        dependant = pending.pop()
        if (name := getattr(dependant.call, _CREDENTIAL, None)) is not None:
            found.add(name)
        pending.extend(dependant.dependencies)
    return found


# -- declared error answers ------------------------------------------------------------------------

# The body of every error refit answers, except 422 (FastAPI's validation list, ``HTTPValidationError``).
ERROR_SCHEMA: dict[str, Any] = {"title": "Error", "type": "object", "required": ["detail"],
                                "properties": {"detail": {"type": "string"}}}
_MEANINGS = {
    400: "The request could not be read: a body that is not JSON or not text, nested too deeply; "
         "a malformed header",
    401: "A valid bearer token is required",
    404: "No such model, artifact, or champion",
    409: "Conflicts with the current state",
    413: "The request body exceeds the service's limit",
    415: "The body is not JSON",
    502: "A peer service failed",
    503: "Unavailable for now (the broker, a peer service, a champion); retry later",
}
_ANSWERS = "__refit_answers__"
_Dependency = TypeVar("_Dependency", bound=Callable[..., Any])


def answers(*statuses: int) -> Callable[[_Dependency], _Dependency]:
    """Mark a dependency with the error statuses it answers: :func:`declare_errors` declares them
    on every operation that depends on it, so a new route using it cannot forget them."""

    def mark(dependency: _Dependency) -> _Dependency:
        setattr(dependency, _ANSWERS, statuses)
        return dependency

    return mark


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error statuses, each with the body refit sends (``{"detail": "…"}``)."""
    return {status: {"description": _MEANINGS.get(status) or HTTPStatus(status).phrase,
                     "content": {"application/json": {"schema": copy.deepcopy(ERROR_SCHEMA)}}}
            for status in sorted(statuses)}


def declare_errors(app: FastAPI, routes: Mapping[str, Iterable[int]] | None = None) -> None:
    """Declare in ``app``'s OpenAPI document the error statuses each operation really answers.

    Call it once every route was added. Derived for every operation: 400 and (behind
    :class:`BodyLimit`) 413 when it takes a body, declared or in ``openapi_extra``; the statuses
    of the dependencies marked with :func:`answers` (401 for :func:`require_token`). ``routes``
    adds what an operation's own code answers, by ``"METHOD /path"``, e.g.
    ``{"POST /v1/models/{name}/rollback": [409, 503]}``. 422 is not declared here: FastAPI declares
    it for every operation with a parameter or a declared body, ``openapi_extra`` for a route
    that reads its body itself.
    """
    given = {key: set(statuses) for key, statuses in (routes or {}).items()}
    if any(422 in statuses for statuses in given.values()):
        raise ValueError("422 is FastAPI's to declare (or the route's openapi_extra), not declare_errors'")
    limited = any(m.cls is BodyLimit for m in app.user_middleware)
    for route in _api_routes(app.routes):
        if not route.include_in_schema:
            continue
        statuses = _dependency_answers(route.dependant)
        if route.body_field is not None or "requestBody" in (route.openapi_extra or {}):
            statuses |= {400, 413} if limited else {400}
        for method in route.methods:
            statuses |= given.pop(f"{method} {route.path}", set())
        route.responses = {**error_responses(*statuses), **route.responses}
    if given:
        raise ValueError(f"no such operation: {', '.join(sorted(given))}")
    app.openapi_schema = None  # built again, with these


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every operation of ``routes``, those of included routers too (FastAPI includes them lazily:
    an included router stands in ``app.routes`` as one entry holding the router)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (router := getattr(route, "original_router", None)) is not None:
            yield from _api_routes(router.routes)


def _dependency_answers(dependant: Any) -> set[int]:
    found = set(getattr(dependant.call, _ANSWERS, ()))
    for sub in dependant.dependencies:
        found |= _dependency_answers(sub)
    return found


S = TypeVar("S", bound=CommonSettings)


def run(service: str, settings: S, create_app: Callable[[S], Any], workers: int = 1) -> None:
    """A service's ``main``: its logs configured, its app created and served (:func:`serve`); with more
    than one worker, this process supervises ``workers`` copies of ``services.<service>``, each serving
    the port on its own SO_REUSEPORT socket (:mod:`refit.workers`)."""
    configure(service, settings.log_level, settings.log_json)
    tracing.configure(service, settings.trace_file)
    index = worker_index()
    if index is None and workers > 1:
        raise SystemExit(supervise(f"services.{service}", workers))
    if index is None:
        serve(create_app(settings), settings)
    else:
        serve_worker(create_app(settings), settings.host, settings.port)


def serve(app: Any, settings: CommonSettings) -> None:
    """Run one worker with refit's server settings (:func:`refit.server.config`)."""
    run_server(app, server_config(app, settings.host, settings.port))


def run_server(app: Any, config: uvicorn.Config, **run: Any) -> None:
    """Serve until a signal, or until a background task of ``app`` dies (:func:`background`): then
    shut down as on a signal and exit with status 1, so a supervisor restarts the service."""
    server = uvicorn.Server(config)
    app.state.stop_server = lambda: setattr(server, "should_exit", True)
    server.run(**run)
    if getattr(app.state, "failed", False):
        raise SystemExit(1)


def background(app: FastAPI, service: str) -> Background:
    """The service's background tasks, for its lifespan: one that dies fails ``/healthz`` at once
    and ends the process with status 1 (:func:`run_server`)."""

    def fatal() -> None:
        app.state.failed = True
        getattr(app.state, "stop_server", lambda: None)()

    return Background(service, fatal)


# -- health ----------------------------------------------------------------------------------------

Readiness = Callable[[Request], Awaitable[str | None]]


def health_routes(app: FastAPI, ready: Readiness | None = None) -> None:
    """``GET /healthz``: 200 while every background task lives, else 503 naming the dead ones.
    ``GET /readyz`` (with ``ready``): healthy, and ``ready`` gives no reason to wait (its reason
    is the 503's detail). Both read the :class:`Background` the lifespan yields as ``background``."""

    def dead(request: Request) -> None:
        work: Background | None = getattr(request.state, "background", None)
        if work is not None and not work.alive:
            raise HTTPException(503, "background work died: " + ", ".join(f"{k} ({v})" for k, v in work.dead.items()))

    @app.get("/healthz", responses=error_responses(503))
    async def healthz(request: Request) -> dict[str, str]:
        """200 while the service's background work runs (a liveness probe)."""
        dead(request)
        return {"status": "ok"}

    if ready is None:
        return

    @app.get("/readyz", responses=error_responses(503))
    async def readyz(request: Request) -> dict[str, str]:
        """200 when the service can do its work now (a readiness probe)."""
        dead(request)
        if (reason := await ready(request)) is not None:
            raise HTTPException(503, reason)
        return {"status": "ready"}
