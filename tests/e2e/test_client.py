"""`refit.client` against a running stack: every call, sync and async, typed answers and server errors."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from refit.client import ApiError, AsyncClient, Client, UnreachableError
from refit.demo import digits_waves
from refit.events import ModelPromoted, ModelRolledBack
from tests.chaos.helpers import wait_until

pytestmark = pytest.mark.e2e


def test_the_client_drives_a_stack_from_samples_to_rollback(stack_factory, specs_file) -> None:
    stack = stack_factory(specs_file(only=("digits",)))
    urls = {"ingest": stack.url("ingest"), "monitor": stack.url("monitor"), "inference": stack.url("inference-0")}
    rows = [row for wave in digits_waves(3) for row in wave][:400]
    with Client(**urls, token="refit-local-token") as client:
        accepted = client.post_samples("digits", rows)
        assert accepted.accepted == 400 and len(set(accepted.sample_ids)) == 400
        assert client.post_samples("digits", rows).accepted == 400  # the same keys again: stored once

        trainer = httpx.Client(base_url=stack.url("trainer"), timeout=10)
        stats = wait_until("the trainer consumed both copies", lambda: s if (
            s := trainer.get("/v1/stats").json())["consumer"].get("consumed", 0) >= 800 else None, 90)
        assert stats["samples"]["digits"] + stats["holdout_skipped"]["digits"] == 400  # 800 sent, 400 kept
        first = _wait(lambda: client.decisions("digits"), 1)[0]
        assert isinstance(first, ModelPromoted) and first.version == 1
        status = client.model("digits")
        assert status.champion is not None and status.champion.version == 1
        assert [m.name for m in client.models()] == ["digits"]

        served = _wait_served(client, rows[0]["features"], 1)
        assert served.model == "digits" and len(served.predictions) == 1 and served.request_id
        assert client.post_feedback("digits", served.request_id, rows[0]["label"], rows[0]["features"]).accepted == 1

        assert client.retrain("digits", "from the client").model == "digits"
        second = _wait(lambda: client.decisions("digits"), 2)[0]
        assert second.version == 2 and second.event_type in {"ModelPromoted", "CandidateRejected"}
        assert [v["version"] for v in client.versions("digits")][:2] == [2, 1]
        fired = client.triggers("digits")["fired"]
        assert any(f.get("kind") == "manual" for f in fired), fired

        assert client.scheduler("stop").running is False
        assert client.scheduler().running is False
        assert client.scheduler("start").running is True

        if second.event_type == "ModelPromoted":
            back = client.rollback("digits", reason="from the client")
            assert isinstance(back, ModelRolledBack) and back.version == 1
        else:
            with pytest.raises(ApiError) as refused:
                client.rollback("digits")
            assert refused.value.status == 409 and refused.value.message

        with pytest.raises(ApiError) as bad:
            client.predict("digits", [[1.0, 2.0]])
        assert bad.value.status == 422 and bad.value.message
        with pytest.raises(ApiError) as unknown:
            client.model("no-such-model")
        assert unknown.value.status in {404, 422}

    with Client(**urls) as anonymous, pytest.raises(ApiError) as denied:
        anonymous.retrain("digits")
    assert denied.value.status == 401

    async def concurrently() -> None:
        async with AsyncClient(**urls) as aclient:
            answers = await asyncio.gather(*(aclient.predict("digits", [row["features"]]) for row in rows[:20]))
            assert {a.model for a in answers} == {"digits"} and len({a.request_id for a in answers}) == 20
            assert (await aclient.model("digits")).champion is not None
            history = await aclient.decisions("digits", limit=1)
            assert len(history) == 1

    asyncio.run(concurrently())

    started = time.monotonic()
    with Client(monitor="http://127.0.0.1:9", retries=2, backoff_s=0.05) as nowhere, \
            pytest.raises(UnreachableError, match="cannot reach the monitor"):
        nowhere.models()
    assert time.monotonic() - started < 5


def _wait(read, count: int, timeout_s: float = 90):
    return wait_until(f"{count} decisions", lambda: found if len(found := read()) >= count else None, timeout_s, 0.25)


def _wait_served(client: Client, row, version: int, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            answer = client.predict("digits", [row])
        except ApiError:
            answer = None
        if answer is not None and answer.version == version:
            return answer
        time.sleep(0.1)
    raise AssertionError(f"v{version} not served within {timeout_s}s")
