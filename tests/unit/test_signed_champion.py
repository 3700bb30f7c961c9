"""What a replica takes from the monitor's champion answer, and what it refuses to read as one."""

from __future__ import annotations

import httpx
import pytest

from services.inference.app import _signed_champion


def test_a_champion_answer_gives_the_signed_decision_and_the_recent_ones() -> None:
    response = httpx.Response(200, json={"decision": '{"event_type": "ModelPromoted"}', "signature": "ab12"})
    assert _signed_champion(response) == ((b'{"event_type": "ModelPromoted"}', "ab12"), [])  # an older monitor's
    response = httpx.Response(200, json={"decision": "{}", "signature": "ab12",
                                         "recent": [{"decision": '{"sequence": 1}', "signature": "cd34"}]})
    assert _signed_champion(response) == ((b"{}", "ab12"), [(b'{"sequence": 1}', "cd34")])


def test_no_champion_yet_is_none() -> None:
    assert _signed_champion(httpx.Response(404, json={"detail": "no champion"})) is None


@pytest.mark.parametrize("response", [
    httpx.Response(503, json={"detail": "starting"}),
    httpx.Response(200, text="<html>a proxy's page</html>"),
    httpx.Response(200, json=["decision"]),
    httpx.Response(200, json={"decision": {"nested": 1}, "signature": "ab"}),
    httpx.Response(200, json={"decision": "{}"}),
    httpx.Response(200, json={"decision": "{}", "signature": None}),
    httpx.Response(200, json={"decision": "{}", "signature": "ab", "recent": {"decision": "{}"}}),
    httpx.Response(200, json={"decision": "{}", "signature": "ab", "recent": [{"decision": "{}"}]}),
], ids=["503", "html", "list", "decision-not-text", "no-signature", "null-signature", "recent-not-a-list",
        "recent-unsigned"])
def test_anything_else_is_a_value_error(response: httpx.Response) -> None:
    with pytest.raises(ValueError):
        _signed_champion(response)
