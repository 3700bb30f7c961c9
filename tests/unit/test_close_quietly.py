"""``close_quietly``: a client's close never ends the caller, unless the caller itself is cancelled."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.errors import KafkaConnectionError

from refit.kafka import close_quietly


async def close_like_aiokafka_647() -> None:
    """What aiokafka's fetcher close does with a request still in flight: await a task it just cancelled."""
    pending = asyncio.ensure_future(asyncio.sleep(30))
    await asyncio.sleep(0)
    pending.cancel()
    await pending


async def close_that_hangs() -> None:
    await asyncio.sleep(30)


async def close_that_fails() -> None:
    raise KafkaConnectionError("connection closed")


@pytest.mark.parametrize("closing", [close_like_aiokafka_647, close_that_fails])
def test_a_close_that_raises_returns_and_logs(closing, capsys) -> None:
    async def caller() -> str:
        await close_quietly(closing(), "test client")
        return "carried on"

    assert asyncio.run(caller()) == "carried on"
    assert "test client" in capsys.readouterr().out


def test_a_close_that_hangs_is_given_up_after_the_timeout() -> None:
    started = time.monotonic()
    asyncio.run(close_quietly(close_that_hangs(), "test client", timeout_s=0.2))
    assert time.monotonic() - started < 5


def test_the_bare_aiokafka_pattern_would_have_ended_the_caller() -> None:
    """The failure close_quietly exists for: without it, the caller ends as cancelled."""
    async def caller() -> str:
        await asyncio.wait_for(close_like_aiokafka_647(), timeout=10)
        return "carried on"

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(caller())


def test_cancelling_the_caller_while_it_closes_still_cancels_it() -> None:
    async def main() -> bool:
        closing = asyncio.ensure_future(close_quietly(close_that_hangs(), "test client"))
        await asyncio.sleep(0.05)
        closing.cancel()
        try:
            await closing
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(main())
