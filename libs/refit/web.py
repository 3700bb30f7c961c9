"""What every service's HTTP edge shares: body limits, error mapping, running under uvicorn."""

from __future__ import annotations

import email.message
import hmac
import math
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from refit.errors import BrokerUnavailableError
from refit.settings import CommonSettings


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
    """``value`` as JSON can carry it: bytes as text (undecodable bytes replaced), NaN and
    infinities as their names, nesting cut at ``_ECHO_DEPTH``. Validation errors echo the
    offending input, which may be any of these: a body nested 500 levels deep is valid JSON,
    and encoding it back recursively raised RecursionError."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict | list | tuple) and depth >= _ECHO_DEPTH:
        return "…"
    if isinstance(value, dict):
        return {k: _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v, depth + 1) for v in value]
    return value


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input as is: a raw body that is not UTF-8 (say, sent
        # as multipart/form-data) or a NaN/Infinity token (the standard library's JSON accepts
        # them) turned the 422 into a 500.
        return JSONResponse({"detail": jsonable_encoder(_json_safe(exc.errors()))}, status_code=422)

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


def require_token(*accepted: str) -> Callable[[Request], None]:
    """A dependency refusing requests without ``Authorization: Bearer <one of accepted>``.

    Every accepted token is compared, each in constant time, so timing tells nothing.
    """
    encoded = [a.encode() for a in accepted]

    def check(request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.encode()
        matched = [hmac.compare_digest(given, a) for a in encoded]
        if scheme.lower() != "bearer" or not any(matched):
            raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})

    return check


def serve(app: Any, settings: CommonSettings) -> None:
    """Run one worker on uvloop + httptools (measured fastest on this stack)."""
    uvicorn.run(app, host=settings.host, port=settings.port, loop="uvloop", http="httptools",
                log_config=None, access_log=False, timeout_graceful_shutdown=10)
