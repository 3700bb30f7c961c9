"""uvicorn as every refit service runs it: uvloop, httptools, no access log, and responses written
in one piece.

uvicorn writes a response's head and its body with two ``transport.write`` calls, and uvloop sends
each at once: two ``send`` system calls per response, which were a quarter of an inference
replica's CPU time under load (py-spy, docs/benchmarks.md). :class:`CorkedHttpTools` hands
uvicorn's protocol a transport that gathers what is written in one turn of the event loop and
sends it once at the end of that turn: the same bytes, in the same order, one system call.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CorkedTransport:
    """A transport whose writes within one event-loop turn reach the socket as one write."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()  # what was written goes out before the close, as it would have
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's own
        return getattr(self._transport, name)


class CorkedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol on a :class:`CorkedTransport`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(CorkedTransport(transport, self.loop))  # type: ignore[arg-type]


def config(app: Any, host: str, port: int) -> uvicorn.Config:
    """refit's uvicorn settings (measured fastest on this stack: docs/benchmarks.md). No service reads a
    client's address, so uvicorn's proxy-headers middleware (a layer around every request) is off."""
    return uvicorn.Config(app, host=host, port=port, loop="uvloop", http=CorkedHttpTools, log_config=None,
                          access_log=False, proxy_headers=False, timeout_graceful_shutdown=10)
