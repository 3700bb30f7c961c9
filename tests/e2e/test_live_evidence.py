"""Live evidence through the real services: a champion that the holdout preferred but live labeled traffic
shows worse than the one it replaced is rolled back by the monitor, every replica follows, and a client
sending requests the whole time sees no failure."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import httpx
import orjson
import pytest
import yaml

from refit.datasets import sample_rows
from refit.demo import post_rows, wait_for_decisions

pytestmark = pytest.mark.e2e
TOKEN = {"authorization": "Bearer refit-local-token"}
FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
ROWS = sample_rows("diabetes")


def concept(tag: str, flip: bool, rows: list[dict[str, Any]] = ROWS) -> list[dict[str, Any]]:
    """The diabetes rows, as they are (concept A) or with the target turned around (concept B)."""
    return [{"features": r["features"], "label": 400.0 - float(r["label"]) if flip else float(r["label"]),
             "idempotency_key": f"{tag}-{i}"} for i, r in enumerate(rows)]


def spec_file(tmp_path: Any, current_concept: bool = True, holdout_rows: int = 60, window_rows: int = 300) -> Any:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [{
        "name": "flip", "task": "regression", "input": {"kind": "numeric", "features": FEATURES},
        "estimator": {"class": "sklearn.linear_model.Ridge", "params": {"alpha": 0.1}},
        "safeguard": {"min_holdout": 40, "metrics": [{"name": "rmse", "max_relative_degradation": 0.01}],
                      "judge_on_current_concept": current_concept},
        "training": {"min_new_samples": None, "min_samples": 100, "holdout_fraction": 0.2,
                     "holdout_max_rows": holdout_rows, "window_max_rows": window_rows},
        # Only live evidence decides here: no automatic retraining.
        "triggers": {"max_age_days": None, "performance": False, "drift": False, "cooldown_minutes": 0},
    }]}))
    return path


class Load(threading.Thread):
    """One client predicting on every replica in turn until told to stop (bounded: 60 s, 50,000 requests)."""

    def __init__(self, urls: list[str], row: dict[str, float]) -> None:
        super().__init__(daemon=True)
        self.urls, self.row, self.stop = urls, row, threading.Event()
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[int] = Counter()

    def run(self) -> None:
        deadline, sent = time.monotonic() + 60, 0
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set() and time.monotonic() < deadline and sent < 50_000:
                url = self.urls[sent % len(self.urls)]
                try:
                    response = client.post(f"{url}/v1/models/flip/predict", json={"features": self.row})
                    self.statuses[response.status_code] += 1
                    if response.status_code == 200:
                        self.versions[response.json()["version"]] += 1
                except httpx.HTTPError:
                    self.statuses[0] += 1
                sent += 1


def serving(client: httpx.Client, urls: list[str], row: dict[str, float]) -> list[int]:
    return [client.post(f"{u}/v1/models/flip/predict", json={"features": row}).json()["version"] for u in urls]


def test_a_champion_worse_live_is_rolled_back_on_every_replica_with_no_failed_request(stack_factory,
                                                                                        tmp_path) -> None:
    stack = stack_factory(spec_file(tmp_path), replicas=2)
    ingest, monitor = stack.url("ingest"), stack.url("monitor")
    replicas = [stack.url(r) for r in stack.replicas]
    row = ROWS[0]["features"]
    with httpx.Client(timeout=30) as client:
        post_rows(client, ingest, "flip", concept("b1", flip=True))  # v1 learns concept B
        client.post(f"{monitor}/v1/models/flip/retrain", json={"reason": "v1"}, headers=TOKEN)
        assert wait_for_decisions(client, monitor, "flip", 1)[0]["event_type"] == "ModelPromoted"
        post_rows(client, ingest, "flip", concept("a", flip=False))  # v2 learns concept A, the holdout's newest
        client.post(f"{monitor}/v1/models/flip/retrain", json={"reason": "v2"}, headers=TOKEN)
        second = wait_for_decisions(client, monitor, "flip", 2)[0]
        assert (second["event_type"], second["version"]) == ("ModelPromoted", 2), second["reasons"]
        deadline = time.monotonic() + 30
        while serving(client, replicas, row) != [2, 2] and time.monotonic() < deadline:
            time.sleep(0.1)

        load = Load(replicas, row)
        load.start()
        live, sent = concept("b2", flip=True), 0  # but the traffic that comes is concept B again
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sent < len(live):
            post_rows(client, ingest, "flip", live[sent:sent + 20])
            sent += 20
            time.sleep(0.2)
            if client.get(f"{monitor}/v1/models/flip/decisions").json()[0]["event_type"] == "ModelRolledBack":
                break
        rollback = client.get(f"{monitor}/v1/models/flip/decisions").json()[0]
        triggers = client.get(f"{monitor}/v1/models/flip/triggers").json()
        deadline = time.monotonic() + 30
        while serving(client, replicas, row) != [1, 1] and time.monotonic() < deadline:
            time.sleep(0.05)
        followed = serving(client, replicas, row)
        time.sleep(0.5)
        load.stop.set()
        load.join()

    print(f"rolled back after {sent} live labels: {rollback['live']}; replicas serve {followed}; "
          f"load statuses {dict(load.statuses)} versions {dict(load.versions)}")
    assert (rollback["event_type"], rollback["version"], rollback["champion_version"]) == (
        "ModelRolledBack", 1, 2), triggers["challengers"]
    # Within a bounded number of labels: the pairs the test decided on (more were posted meanwhile).
    assert 40 <= rollback["live"]["pairs"] <= 200 and rollback["live"]["e_value"] >= 100
    assert followed == [1, 1]
    assert set(load.statuses) == {200} and load.versions[1] > 0 and load.versions[2] > 0


def rejected_challenger(client: httpx.Client, ingest: str, monitor: str) -> None:
    """v1 of concept A promoted, then v2 of concept B rejected on the holdout (mostly concept A rows)."""
    post_rows(client, ingest, "flip", concept("a", flip=False))
    client.post(f"{monitor}/v1/models/flip/retrain", json={"reason": "v1"}, headers=TOKEN)
    assert wait_for_decisions(client, monitor, "flip", 1)[0]["event_type"] == "ModelPromoted"
    post_rows(client, ingest, "flip", concept("b1", flip=True, rows=ROWS[:150]))
    client.post(f"{monitor}/v1/models/flip/retrain", json={"reason": "v2"}, headers=TOKEN)
    second = wait_for_decisions(client, monitor, "flip", 2)[0]
    assert (second["event_type"], second["version"]) == ("CandidateRejected", 2), second["reasons"]


def test_a_candidate_rejected_on_the_holdout_but_better_live_is_promoted_with_the_evidence(stack_factory,
                                                                                          tmp_path) -> None:
    """Judged on the whole holdout (the current-concept window off, to separate the two paths), the candidate
    of the new concept loses to the champion on rows of the old one; live labels of the new concept promote it."""
    stack = stack_factory(spec_file(tmp_path, current_concept=False, holdout_rows=1000, window_rows=120))
    ingest, monitor, replica = stack.url("ingest"), stack.url("monitor"), stack.url("inference-0")
    with httpx.Client(timeout=30) as client:
        rejected_challenger(client, ingest, monitor)

        live, sent, promoted = concept("b2", flip=True), 0, None
        deadline = time.monotonic() + 60
        while promoted is None and time.monotonic() < deadline and sent < len(live):
            post_rows(client, ingest, "flip", live[sent:sent + 20])
            sent += 20
            time.sleep(0.2)
            promoted = next((d for d in client.get(f"{monitor}/v1/models/flip/decisions").json()
                             if d["event_type"] == "ModelPromoted" and d["version"] == 2), None)
        deadline = time.monotonic() + 30
        while serving(client, [replica], ROWS[0]["features"]) != [2] and time.monotonic() < deadline:
            time.sleep(0.05)
        followed = serving(client, [replica], ROWS[0]["features"])

    assert promoted is not None
    print(f"promoted after {sent} live labels: {promoted['live']}")
    assert (promoted["champion_version"], promoted["live"]["challenger_version"]) == (1, 2)
    assert 40 <= promoted["live"]["pairs"] <= 200 and promoted["live"]["e_value"] >= 100
    assert promoted["reasons"][0].startswith("better than champion v1 on live labeled traffic")
    assert followed == [2]


def predict_rows(client: httpx.Client, replica: str, request_id: str, rows: list[dict[str, Any]]) -> None:
    response = client.post(f"{replica}/v1/models/flip/predict", json={"instances": [r["features"] for r in rows]},
                           headers={"x-request-id": request_id})
    assert response.status_code == 200, response.text


def wait_for(read: Any, done: Any, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while not done(value := read()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def test_a_candidate_rejected_on_the_holdout_but_better_on_labeled_requests_is_promoted_from_the_shadow(
        stack_factory, tmp_path) -> None:
    """The same two models, but the live labels answer prediction requests (feedback by request id): inference
    scored every served row with the rejected candidate in the shadow, and the pairs the monitor decides on are
    the served answers of champion and challenger."""
    stack = stack_factory(spec_file(tmp_path, current_concept=False, holdout_rows=1000, window_rows=120))
    ingest, monitor, replica = stack.url("ingest"), stack.url("monitor"), stack.url("inference-0")
    with httpx.Client(timeout=30) as client:
        rejected_challenger(client, ingest, monitor)
        shadowing = wait_for(lambda: client.get(f"{replica}/v1/stats").json()["shadow"]["models"].get("flip"),
                             lambda m: m == {"champion": 1, "challengers": [{"version": 2, "role": "candidate"}]})
        assert shadowing == {"champion": 1, "challengers": [{"version": 2, "role": "candidate"}]}

        live, sent, promoted = concept("b2", flip=True), 0, None
        deadline = time.monotonic() + 60
        while promoted is None and time.monotonic() < deadline and sent < len(live):
            chunk, request_id = ROWS[sent:sent + 20], f"live-{sent}"
            predict_rows(client, replica, request_id, chunk)  # served by v1, scored by v2 in the shadow
            # The label comes after the served rows reached the monitor (a label arriving first is scored there).
            wait_for(lambda: client.get(f"{monitor}/v1/models/flip/triggers").json()["shadow"]["received"],
                     lambda received: received >= sent + len(chunk))
            post_rows(client, ingest, "flip", [{**row, "request_id": f"{request_id}#{i}"}
                                               for i, row in enumerate(live[sent:sent + 20])])
            sent += len(chunk)
            time.sleep(0.2)
            promoted = next((d for d in client.get(f"{monitor}/v1/models/flip/decisions").json()
                             if d["event_type"] == "ModelPromoted" and d["version"] == 2), None)
        stats = client.get(f"{replica}/v1/stats").json()["shadow"]

    assert promoted is not None
    print(f"promoted after {sent} labeled requests: {promoted['live']}; shadow {stats}")
    assert (promoted["champion_version"], promoted["live"]["challenger_version"]) == (1, 2)
    assert 40 <= promoted["live"]["pairs"] <= 200 and promoted["live"]["e_value"] >= 100
    # Every pair is the served answers: each label found the shadow row of its request waiting.
    assert promoted["live"]["shadow_pairs"] == promoted["live"]["pairs"]
    assert promoted["reasons"][0].startswith("better than champion v1 on live labeled traffic")
    assert stats["dropped_queue_full"] == stats["dropped_unpublished"] == stats["dropped_invalid"] == 0


def test_a_restarted_replica_shadow_scores_the_previous_champion_again(stack_factory, tmp_path) -> None:
    """v1 promoted, then v2 over it: the replica shadow-scores v1, the previous champion, for live rollback.
    Restarted, it read neither decision from the topic; it learns v1's from beside the monitor's champion
    answer and scores v1 again (live rollback is not blind after a restart)."""
    stack = stack_factory(spec_file(tmp_path))
    ingest, monitor, replica = stack.url("ingest"), stack.url("monitor"), stack.url("inference-0")
    expected = {"champion": 2, "challengers": [{"version": 1, "role": "previous"}]}

    def shadowing() -> Any:
        return client.get(f"{replica}/v1/stats").json()["shadow"]["models"].get("flip")

    with httpx.Client(timeout=30) as client:
        for version, (tag, flip) in enumerate([("b1", True), ("a", False)], start=1):
            post_rows(client, ingest, "flip", concept(tag, flip=flip))
            client.post(f"{monitor}/v1/models/flip/retrain", json={"reason": f"v{version}"}, headers=TOKEN)
            decision = wait_for_decisions(client, monitor, "flip", version)[0]
            assert (decision["event_type"], decision["version"]) == ("ModelPromoted", version), decision["reasons"]
        before = wait_for(shadowing, lambda m: m == expected)

        recent = client.get(f"{monitor}/v1/models/flip/champion").json()["recent"]
        stack.restart("inference-0")
        after = wait_for(shadowing, lambda m: m == expected)

    assert [(d["event_type"], d["version"]) for d in (orjson.loads(r["decision"]) for r in recent)] == [
        ("ModelPromoted", 1)]  # beside the champion's answer, signed: what a replica learns its challengers from
    assert before == expected
    assert after == expected
