"""Real processes: the trainer never trains on the monitor's holdout; regression and manual retrain work."""

from __future__ import annotations

import json
import sqlite3
import time

import httpx
import pytest

from refit.core.split import is_holdout
from refit.datasets import sample_rows
from refit.demo import digits_waves, post_rows, wait_for_decisions

pytestmark = pytest.mark.integration


def ids(db_path, sql: str) -> set[str]:
    with sqlite3.connect(db_path) as db:
        return {row[0] for row in db.execute(sql)}


def test_trainer_never_sees_a_holdout_row_and_both_tasks_promote(stack_factory) -> None:
    stack = stack_factory()
    with httpx.Client(timeout=30) as client:
        digits = digits_waves(3)[0]
        post_rows(client, stack.url("ingest"), "digits", digits)
        post_rows(client, stack.url("ingest"), "diabetes", sample_rows("diabetes"))
        first_digits = wait_for_decisions(client, stack.url("monitor"), "digits", 1)[0]
        first_diabetes = wait_for_decisions(client, stack.url("monitor"), "diabetes", 1)[0]

    assert first_digits["event_type"] == "ModelPromoted"
    assert first_diabetes["event_type"] == "ModelPromoted", first_diabetes["reasons"]
    assert set(first_diabetes["candidate_scores"]) == {"rmse", "mae", "r2"}
    assert first_diabetes["candidate_scores"]["r2"] >= 0.2

    trained = ids(stack.state_dir / "trainer" / "trainer.sqlite", "SELECT sample_id FROM samples WHERE model='digits'")
    held = ids(stack.state_dir / "monitor" / "monitor.sqlite", "SELECT sample_id FROM holdout WHERE model='digits'")
    assert trained and held
    assert trained.isdisjoint(held)
    assert not any(is_holdout(s, 0.2, "digits") for s in trained)
    assert all(is_holdout(s, 0.2, "digits") for s in held)
    # Every posted digit is in exactly one of the two stores once both consumers caught up.
    deadline = time.monotonic() + 30
    while len(trained) + len(held) < len(digits) and time.monotonic() < deadline:
        time.sleep(0.5)
        trained = ids(stack.state_dir / "trainer" / "trainer.sqlite", "SELECT sample_id FROM samples WHERE model='digits'")
        held = ids(stack.state_dir / "monitor" / "monitor.sqlite", "SELECT sample_id FROM holdout WHERE model='digits'")
    assert len(trained) + len(held) == len(digits)


def test_manual_retrain_needs_a_token_and_yields_a_judged_candidate(stack_factory, specs_file) -> None:
    stack = stack_factory(specs_file(only=("digits",)))
    monitor = stack.url("monitor")
    with httpx.Client(timeout=30) as client:
        post_rows(client, stack.url("ingest"), "digits", digits_waves(3)[0])
        wait_for_decisions(client, monitor, "digits", 1)
        refused = client.post(f"{monitor}/v1/models/digits/retrain", json={"reason": "try"})
        assert refused.status_code == 401
        wrong = client.post(f"{monitor}/v1/models/digits/retrain", json={"reason": "try"},
                            headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        unknown = client.post(f"{monitor}/v1/models/nope/retrain", json={"reason": "x"},
                              headers={"authorization": "Bearer refit-local-token"})
        assert unknown.status_code == 404
        accepted = client.post(f"{monitor}/v1/models/digits/retrain", json={"reason": "operator asked"},
                               headers={"authorization": "Bearer refit-local-token"})
        assert accepted.status_code == 202
        second = wait_for_decisions(client, monitor, "digits", 2)[0]
        candidates = client.get(f"{monitor}/v1/models/digits").json()
    # Same data, same estimator: the retrained candidate matches the champion and passes the tolerance.
    assert second["event_type"] == "ModelPromoted", second["reasons"]
    assert second["candidate_scores"] == pytest.approx(second["champion_scores"], abs=0.02)
    assert candidates["champion"]["version"] == 2


def test_the_training_dataset_exports_as_json_lines_and_csv(stack_factory, specs_file) -> None:
    stack = stack_factory(specs_file(only=("digits",)))
    with httpx.Client(timeout=30) as client:
        rows = digits_waves(3)[0]
        post_rows(client, stack.url("ingest"), "digits", rows)
        wait_for_decisions(client, stack.url("monitor"), "digits", 1)
        trainer = stack.url("trainer")
        lines = client.get(f"{trainer}/v1/models/digits/dataset").text.splitlines()
        table = client.get(f"{trainer}/v1/models/digits/dataset", params={"format": "csv"}).text.splitlines()
        assert client.get(f"{trainer}/v1/models/nope/dataset").status_code == 404
        assert client.get(f"{trainer}/v1/models/digits/dataset", params={"format": "xml"}).status_code == 422
    stored = ids(stack.state_dir / "trainer" / "trainer.sqlite", "SELECT sample_id FROM samples")
    records = [json.loads(line) for line in lines]
    assert {r["sample_id"] for r in records} == stored
    assert set(records[0]["features"]) == {f"p{i}" for i in range(64)} and records[0]["source"] == "demo"
    assert table[0].split(",")[:2] == ["p0", "p1"] and len(table) == len(stored) + 1
