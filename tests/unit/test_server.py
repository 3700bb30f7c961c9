"""refit's server settings: a response leaves in one write, in order, and a real server answers
keep-alive and pipelined requests through them (refit.server)."""

from __future__ import annotations

import asyncio
import socket
import threading

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from refit.server import CorkedTransport, config
from refit.stack import free_port, wait_http


class Counting:
    """The real transport, with its writes counted."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport, self.writes = transport, 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.transport.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.transport, name)


async def _pair() -> tuple[Counting, CorkedTransport, socket.socket, asyncio.AbstractEventLoop]:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    counting = Counting(transport)  # type: ignore[arg-type]
    return counting, CorkedTransport(counting, loop), theirs, loop  # type: ignore[arg-type]


async def test_writes_within_one_turn_of_the_loop_leave_as_one_write_in_order() -> None:
    counting, corked, theirs, loop = await _pair()
    corked.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    corked.write(b"ok")
    assert counting.writes == 0  # nothing sent before the turn ends
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert counting.writes == 1
    corked.write(b"next")
    await asyncio.sleep(0)
    assert counting.writes == 2
    theirs.settimeout(5)
    received = b""
    while len(received) < 44:
        received += theirs.recv(100)
    assert received == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\noknext"
    corked.close()
    theirs.close()


async def test_close_sends_what_was_written_first_and_a_closed_peer_gets_nothing_more() -> None:
    counting, corked, theirs, loop = await _pair()
    corked.write(b"last words")
    corked.close()
    assert counting.writes == 1
    theirs.setblocking(False)
    received = b""
    while chunk := await asyncio.wait_for(loop.sock_recv(theirs, 100), 5):
        received += chunk
    assert received == b"last words"  # then the end of the stream: closed after them
    corked.write(b"after the close")
    await asyncio.sleep(0)
    assert counting.writes == 1  # not written to a closing transport
    theirs.close()


@pytest.fixture
def server() -> str:
    app = FastAPI()

    @app.post("/echo")
    async def echo(body: dict[str, object]) -> dict[str, object]:
        return body

    @app.get("/big")
    async def big() -> dict[str, str]:
        return {"data": "x" * 2_000_000}

    port = free_port()
    uv = uvicorn.Server(config(app, "127.0.0.1", port))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    wait_http(f"http://127.0.0.1:{port}/docs", timeout_s=30)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(10)


def test_a_real_server_on_these_settings_answers_keep_alive_pipelined_and_large_responses(server: str) -> None:
    with httpx.Client(base_url=server, timeout=10) as client:  # one keep-alive connection
        for number in range(50):
            assert client.post("/echo", json={"n": number}).json() == {"n": number}
        assert len(client.get("/big").json()["data"]) == 2_000_000
    port = int(server.rsplit(":", 1)[1])
    request = b'POST /echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s'
    pipelined = b"".join(request % (len(b), b) for b in (b'{"n":1}', b'{"n":2}', b'{"n":3}'))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(pipelined)  # three requests in one packet: three answers, in order
        received = b""
        while received.count(b'{"n":') < 3:
            chunk = conn.recv(65536)
            assert chunk, "the server closed the connection"
            received += chunk
    assert [received.index(b'{"n":%d}' % n) for n in (1, 2, 3)] == sorted(received.index(b'{"n":%d}' % n)
                                                                        for n in (1, 2, 3))
    assert received.count(b"HTTP/1.1 200 OK") == 3
