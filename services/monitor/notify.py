"""Webhooks: a signed JSON body to every configured URL on promotion, rejection, rollback,
failed training, drift and the periodic report.

Delivery never blocks a decision: notices go on a bounded queue drained by one task,
each POST retried with backoff a few times, then dropped and counted. The body is signed
with HMAC-SHA256 (``X-Refit-Signature: hmac-sha256=<hex>`` over the exact bytes), so a
receiver can check it came from this monitor.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import structlog

from refit import signing
from refit.lifecycle import retry

log = structlog.get_logger("monitor.notify")
class Undelivered(Exception):
    """A receiver answered, but not with success."""


KINDS = ("promoted", "rejected", "rolled_back", "training_failed", "drift", "report")


class Notifier:
    def __init__(self, urls: tuple[str, ...], secret: bytes, queue_size: int = 1000, attempts: int = 3) -> None:
        self.urls, self.secret, self.attempts = urls, secret, attempts
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_size)
        self.counts: Counter[str] = Counter()

    def notify(self, kind: str, model: str | None, payload: dict[str, Any]) -> None:
        """Queue one notice for every URL; never waits (a full queue drops and counts it)."""
        if not self.urls:
            return
        body = orjson.dumps({"kind": kind, "model": model, "at": datetime.now(UTC).isoformat(), "payload": payload},
                            default=str)
        try:
            self.queue.put_nowait(body)
            self.counts["queued"] += 1
        except asyncio.QueueFull:
            self.counts["dropped_queue_full"] += 1

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            while not stop.is_set():
                try:
                    body = await asyncio.wait_for(self.queue.get(), timeout=0.5)
                except TimeoutError:
                    continue
                headers = {"content-type": "application/json", "x-refit-signature": signing.sign(self.secret, body)}
                await asyncio.gather(*(self._deliver(client, url, body, headers) for url in self.urls))

    async def _deliver(self, client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]) -> None:
        async def attempt() -> None:
            response = await client.post(url, content=body, headers=headers)
            if response.status_code >= 300:
                raise Undelivered(f"HTTP {response.status_code}")

        try:
            await retry(f"webhook {url}", attempt, retry_on=(httpx.HTTPError, Undelivered), tries=self.attempts)
        except (httpx.HTTPError, Undelivered) as exc:
            self.counts["failed"] += 1
            log.warning("webhook not delivered", url=url, attempts=self.attempts, error=repr(exc))
        else:
            self.counts["delivered"] += 1
