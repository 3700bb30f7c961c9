"""The client's pure parts: which calls it sends again, and how it reads an error answer."""

from __future__ import annotations

import random

import httpx
import pytest

from refit.client import ApiError, Calls, Client, _message, sample

CONNECT = httpx.ConnectError("refused")
READ = httpx.ReadTimeout("slow")


@pytest.fixture
def client() -> Client:
    c = Client(retries=3, backoff_s=0.1, _rng=random.Random(1))
    yield c
    c.close()


@pytest.mark.parametrize("call", [Calls.models(), Calls.predict("digits", [[0.0] * 64]),
                                  Calls.post_samples("digits", [sample([0.0], label="1")])])
def test_a_repeatable_call_is_sent_again_after_any_failure_and_on_busy_answers(client: Client, call) -> None:
    for error, status in [(CONNECT, None), (READ, None), (None, 503), (None, 429), (None, 502), (None, 504)]:
        assert client._again(call, 0, error, status) is not None, (error, status)
    for status in (200, 202, 400, 401, 404, 409, 422, 500):
        assert client._again(call, 0, None, status) is None, status


@pytest.mark.parametrize("call", [Calls.retrain("digits"), Calls.rollback("digits"), Calls.scheduler("stop")])
def test_a_control_call_is_sent_again_only_when_it_never_left(client: Client, call) -> None:
    assert client._again(call, 0, CONNECT, None) is not None
    assert client._again(call, 0, READ, None) is None  # it may have been carried out
    assert client._again(call, 0, None, 503) is None


def test_retries_are_bounded_and_back_off(client: Client) -> None:
    waits = [client._again(Calls.models(), attempt, CONNECT, None) for attempt in range(4)]
    assert waits[3] is None
    assert all(0.05 * 2**i <= w <= 0.15 * 2**i for i, w in enumerate(waits[:3]))


def test_every_sample_carries_an_idempotency_key_so_a_resent_batch_is_stored_once() -> None:
    given = {"features": [1.0], "label": 2, "idempotency_key": "mine"}
    rows = Calls.post_samples("diabetes", [given, {"features": [1.0], "label": 3}]).json["samples"]
    assert rows[0]["idempotency_key"] == "mine"
    assert rows[1]["idempotency_key"].startswith("client-")
    assert sample({"a": 1.0}, label="x")["idempotency_key"] != sample({"a": 1.0}, label="x")["idempotency_key"]


def test_predict_takes_rows_or_texts_in_the_body_inference_expects() -> None:
    assert Calls.predict("m", [[1, 2]]).json == {"inputs": [[1, 2]]}
    assert Calls.predict("m", [{"a": 1.0}]).json == {"instances": [{"a": 1.0}]}
    assert Calls.predict("m", texts=["hi"]).json == {"texts": ["hi"]}
    with pytest.raises(ValueError):
        Calls.predict("m", [[1]], texts=["x"])


def test_an_error_answer_becomes_the_servers_message() -> None:
    validation = httpx.Response(422, json={"detail": [{"loc": ["body", "features", "p3"], "msg": "expected a number"}]})
    assert _message(validation)[0] == "body.features.p3: expected a number"
    assert _message(httpx.Response(409, json={"detail": "no earlier champion"}))[0] == "no earlier champion"
    assert _message(httpx.Response(400, json={"error": "bad tensor"}))[0] == "bad tensor"
    assert _message(httpx.Response(502, text="bad gateway"))[0] == "bad gateway"
    with pytest.raises(ApiError, match="409: no earlier champion") as caught:
        Client._read(Calls.models(), httpx.Response(409, json={"detail": "no earlier champion"}))
    assert caught.value.status == 409
