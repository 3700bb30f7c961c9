"""The shell mechanics every service shares: waits a stop cuts short, retry with backoff, and background
tasks that may not die quietly (a dead loop behind a live port was a zombie: issue 17, defect 1)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from itertools import islice

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from refit.lifecycle import Background, backoff, pause, retry
from refit.stack import free_port
from refit.web import background, health_routes


def test_backoff_doubles_up_to_its_cap() -> None:
    assert list(islice(backoff(0.5, 5.0), 6)) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


async def test_pause_returns_at_once_when_stopped_and_when_woken() -> None:
    stop, wake = asyncio.Event(), asyncio.Event()
    started = time.monotonic()
    wake.set()
    assert await pause(stop, 30, wake) is False
    stop.set()
    assert await pause(stop, 30) is True
    assert time.monotonic() - started < 1


async def test_retry_gives_up_after_its_tries_with_the_last_failure() -> None:
    calls = []

    async def failing() -> None:
        calls.append(1)
        raise ConnectionError(f"try {len(calls)}")

    with pytest.raises(ConnectionError, match="try 3"):
        await retry("thing", failing, retry_on=(ConnectionError,), tries=3, first=0.001)
    assert len(calls) == 3


async def test_retry_returns_the_first_success_and_never_retries_other_errors() -> None:
    answers = iter([ConnectionError("down"), "up"])

    async def flaky() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await retry("thing", flaky, retry_on=(ConnectionError,), first=0.001) == "up"

    async def broken() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        await retry("thing", broken, retry_on=(ConnectionError,), first=0.001)


async def test_retry_stops_retrying_once_stopped() -> None:
    stop = asyncio.Event()

    async def failing() -> None:
        stop.set()
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        await retry("thing", failing, retry_on=(ConnectionError,), stop=stop)


async def test_a_task_that_raises_is_recorded_dead_and_fatal_while_others_run_on() -> None:
    fatal: list[bool] = []
    ticks = 0

    async def crashes() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("judging failed")

    async def ticking(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not await pause(stop, 0.01):
            ticks += 1

    async with Background("svc", on_fatal=lambda: fatal.append(True)) as work:
        work.start("judge", crashes())
        work.start("ticker", ticking(work.stop))
        while work.alive:
            await asyncio.sleep(0.01)
        before = ticks
        while ticks == before:  # the others go on until the service shuts down
            await asyncio.sleep(0.01)
    assert work.dead == {"judge": "RuntimeError('judging failed')"} and fatal == [True]


async def test_stopping_is_not_a_death() -> None:
    fatal: list[bool] = []
    async with Background("svc", on_fatal=lambda: fatal.append(True)) as work:
        work.start("waits", pause(work.stop, 60))
    assert work.alive and fatal == []


def zombie_app(seconds_before_crash: float) -> FastAPI:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        async def crash() -> None:
            await asyncio.sleep(seconds_before_crash)
            raise RuntimeError("the loop died")

        async with background(app, "svc") as work:
            work.start("loop", crash())
            yield {"background": work}

    app = FastAPI(lifespan=lifespan)
    health_routes(app, ready=lambda request: _ready())
    return app


async def _ready() -> None:
    return None


def test_health_and_readiness_answer_503_naming_the_dead_task() -> None:
    with TestClient(zombie_app(0)) as client:
        deadline = time.monotonic() + 10
        while client.get("/healthz").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        health, ready = client.get("/healthz"), client.get("/readyz")
    assert health.status_code == ready.status_code == 503
    assert health.json() == {"detail": "background work died: loop (RuntimeError('the loop died'))"}


def test_a_served_app_whose_background_task_dies_exits_with_status_1() -> None:
    """What compose's restart policy and ``refit up`` act on: the process ends, it does not linger."""
    port = free_port()
    script = textwrap.dedent(f"""
        from refit.settings import CommonSettings
        from refit.web import serve
        from tests.unit.test_lifecycle import zombie_app
        serve(zombie_app(1.0), CommonSettings(port={port}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == 1, done.stderr.decode()[-2000:]
    assert b"background task died" in done.stdout + done.stderr
