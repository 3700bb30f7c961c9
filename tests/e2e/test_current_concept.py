"""After an abrupt concept change streamed through ingest, the change is detected and recorded, the retrain
request's window starts at it, and the candidate is judged on the holdout rows that arrived after it; once
``CATCH_UP`` times the rows that model learnt the new concept from are there, it is retrained (``catch_up``)
on them, and judged on the new concept's holdout rows (promoted or not: when the first model of the
concept already learnt it well, the two differ by the holdout's noise)."""

from __future__ import annotations

import time

import httpx
import pytest

from refit.core.triggers import CATCH_UP

from tests.e2e.test_concept_drift import TOKEN, post, sea, spec_file

pytestmark = pytest.mark.e2e


def test_a_change_is_recorded_judged_after_and_caught_up_on(stack_factory, tmp_path) -> None:
    stack = stack_factory(spec_file(tmp_path, window_rows=4000))  # a catch-up learns from all the concept's rows
    ingest, monitor = stack.url("ingest"), stack.url("monitor")
    with httpx.Client(timeout=30) as client:
        post(client, ingest, sea(3, 1, 1000, "old"))
        deadline = time.monotonic() + 30
        while client.get(f"{monitor}/v1/models/sea").json()["holdout_size"] < 150 and time.monotonic() < deadline:
            time.sleep(0.2)
        client.post(f"{monitor}/v1/models/sea/retrain", json={"reason": "first model"}, headers=TOKEN)
        deadline = time.monotonic() + 60
        while not client.get(f"{monitor}/v1/models/sea/decisions").json() and time.monotonic() < deadline:
            time.sleep(0.2)
        first = client.get(f"{monitor}/v1/models/sea/decisions").json()[0]
        assert first["event_type"] == "ModelPromoted" and first["window"]["after_seq"] is None

        stream, decision, sent = sea(2, 7, 4000, "new"), None, 0
        deadline = time.monotonic() + 150
        while decision is None and sent < len(stream) and time.monotonic() < deadline:
            post(client, ingest, stream[sent:sent + 100])
            sent += 100
            time.sleep(0.3)
            decision = next((d for d in client.get(f"{monitor}/v1/models/sea/decisions").json()
                             if d["version"] > first["version"] and d["event_type"] != "ModelRolledBack"), None)
        triggers = client.get(f"{monitor}/v1/models/sea/triggers").json()
        assert decision is not None, triggers

        # Catching up: the rest of the new concept streams on until a catch_up training is decided.
        caught_up = None
        deadline = time.monotonic() + 60
        while caught_up is None and sent < len(stream) and time.monotonic() < deadline:
            post(client, ingest, stream[sent:sent + 100])
            sent += 100
            time.sleep(0.3)
            caught = {v["version"] for v in client.get(f"{monitor}/v1/models/sea/versions").json()
                      if v["trigger"] == "catch_up"}
            caught_up = next((d for d in client.get(f"{monitor}/v1/models/sea/decisions").json()
                              if d["version"] in caught and d["event_type"] != "ModelRolledBack"), None)
        later = client.get(f"{monitor}/v1/models/sea/triggers").json()
        versions = client.get(f"{monitor}/v1/models/sea/versions").json()

    changes = triggers["changes"]
    assert changes, triggers
    change = changes[-1]  # the first change recorded: the one the decision was judged after
    print(f"changes: {changes}; decision v{decision['version']} {decision['event_type']} on {decision['window']}")
    window = decision["window"]
    assert window["after_seq"] is not None and window["reason"].startswith("the current concept")
    assert window["rows"] == decision["holdout"]["size"] >= 50
    automatic = [f for f in triggers["fired"] if f["kind"] in ("performance", "drift")]
    assert automatic and automatic[-1]["evidence"]["change"]["after_seq"] in {c["after_seq"] for c in changes}
    assert change["detector"] in ("ADWIN on the champion's live error", "CUSUM on the champion's live error",
                                  "the drift tests of inputs and labels",
                                  "a significant drop of the champion's live performance")

    fired = next((f for f in later["fired"] if f["kind"] == "catch_up"), None)
    assert caught_up is not None and fired is not None, later
    print(f"catch_up after {sent} new-concept samples: {fired['evidence']}; v{caught_up['version']} "
          f"{caught_up['event_type']} on {caught_up['window']}")
    evidence = fired["evidence"]
    assert evidence["factor"] == CATCH_UP and evidence["trained_rows"] > 0
    assert evidence["concept_rows"] >= CATCH_UP * evidence["trained_rows"]
    assert evidence["change"]["after_seq"] in {c["after_seq"] for c in later["changes"]}
    assert caught_up["window"]["after_seq"] == evidence["change"]["after_seq"]
    trained = {v["version"]: v["training"]["rows_trained"] for v in versions}
    assert trained[caught_up["version"]] >= CATCH_UP * evidence["trained_rows"] * 0.9, trained  # the concept's rows
