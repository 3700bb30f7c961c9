"""What every service's background work shares: waiting that a stop cuts short, retry with backoff,
and the task group whose tasks may not die quietly.

A background task that ends by an exception (or is cancelled while the service is not stopping)
is a dead loop behind a live HTTP port: a zombie. :class:`Background` records it, so health answers 503
naming it, and asks the process to exit non-zero (``refit.web.serve``), so that compose's restart
policy or ``refit up`` brings it back.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

import structlog

log = structlog.get_logger("refit.lifecycle")
T = TypeVar("T")


async def pause(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> bool:
    """Wait ``seconds``, or less if ``stop`` (or ``wake``, when given) is set; True when stopping."""
    if seconds > 0 and not stop.is_set() and not (wake is not None and wake.is_set()):
        waits = [asyncio.ensure_future(e.wait()) for e in (stop, wake) if e is not None]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
    return stop.is_set()


def backoff(first: float = 0.5, cap: float = 10.0, factor: float = 2.0) -> Iterator[float]:
    """Exponential delays: ``first``, ``first * factor``, … never above ``cap``."""
    delay = first
    while True:
        yield delay
        delay = min(delay * factor, cap)


async def retry(what: str, attempt: Callable[[], Awaitable[T]], *, retry_on: tuple[type[BaseException], ...],
                stop: asyncio.Event | None = None, tries: int | None = None, first: float = 0.5,
                cap: float = 10.0) -> T:
    """Call ``attempt`` until it succeeds, backing off between failures of the kinds in ``retry_on``.

    Gives up (re-raises the last failure) after ``tries`` attempts, or at once when ``stop`` is set;
    ``tries=None`` retries until then. Each failure is logged with the tries left.
    """
    delays = backoff(first, cap)
    made = 0
    while True:
        try:
            return await attempt()
        except retry_on as exc:
            made += 1
            left = None if tries is None else tries - made
            if left == 0 or (stop is not None and stop.is_set()):
                raise
            delay = next(delays)
            if made == 1 or made % 10 == 0 or left is not None:
                log.warning("retrying", what=what, tries=made, tries_left=left, error=repr(exc), next_in_s=delay)
            if stop is None:
                await asyncio.sleep(delay)
            elif await pause(stop, delay):
                raise


class Background:
    """The service's long-running tasks, each watched: one that dies is fatal to the service."""

    def __init__(self, service: str, on_fatal: Callable[[], None] = lambda: None) -> None:
        self.service, self.on_fatal = service, on_fatal
        self.stop = asyncio.Event()
        self.dead: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, name: str, work: Awaitable[Any]) -> None:
        self._tasks.append(asyncio.create_task(self._watch(name, work), name=f"{self.service}:{name}"))

    async def _watch(self, name: str, work: Awaitable[Any]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            if not self.stop.is_set():
                self._died(name, "cancelled")
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of a loop is the service's failure
            log.critical("background task died", service=self.service, task=name, error=repr(exc), exc_info=exc)
            self._died(name, repr(exc))

    def _died(self, name: str, why: str) -> None:
        self.dead[name] = why
        self.on_fatal()

    @property
    def alive(self) -> bool:
        return not self.dead

    async def __aenter__(self) -> Background:
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop every task: set ``stop``, give them a moment to drain, then cancel what remains."""
        self.stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=15)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


def terminate(procs: Iterable[subprocess.Popen[bytes]], sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> None:
    """Stop processes we started: signal every one still running at once, wait up to ``timeout_s`` for
    all of them together, then kill what is left. At once, because processes that need each other to
    shut down (a Kafka quorum) would wait for ones already gone."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        proc.send_signal(sig)
    deadline = time.monotonic() + timeout_s
    for proc in running:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
