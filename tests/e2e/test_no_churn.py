"""No churn (issue 12, Done-when (d)): a stationary stream through the real services, at the spec's default
triggers, trains nothing more after the first promotion: 0 trainings from drift or performance over 5,000
samples, although the drift tests and the live window judged every batch of them."""

from __future__ import annotations

import httpx
import pytest
import yaml
from river.datasets import synth

from tests.chaos.helpers import wait_until

pytestmark = pytest.mark.e2e
TOKEN = {"authorization": "Bearer refit-local-token"}
FEATURES = ["x0", "x1", "x2"]
BATCH, SAMPLES = 250, 5000


def spec_file(tmp_path):
    """SEA as a user would declare it: the triggers at their defaults, but for the two counted in wall-clock
    time (a 30-minute cooldown would hide churn within the test; a 7-day age never comes due)."""
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [{
        "name": "sea", "task": "classification", "labels": ["0", "1"],
        "input": {"kind": "numeric", "features": FEATURES},
        "estimator": {"class": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 500}},
        "triggers": {"cooldown_minutes": 0, "max_age_days": None},
    }]}))
    return path


def post(client: httpx.Client, url: str, rows: list[dict]) -> None:
    assert client.post(f"{url}/v1/samples:batch", json={"model": "sea", "samples": rows}).status_code == 202


def test_a_stationary_stream_trains_nothing_after_the_first_promotion(stack_factory, tmp_path) -> None:
    stack = stack_factory(spec_file(tmp_path), env={"REFIT_MONITOR_TRIGGER_INTERVAL_S": "0.2"})
    ingest, monitor, inference = stack.url("ingest"), stack.url("monitor"), stack.url("inference-0")
    rows = [{"features": {f: float(x[i]) for i, f in enumerate(FEATURES)}, "label": str(int(y)),
             "idempotency_key": f"s{k}"} for k, (x, y) in enumerate(synth.SEA(variant=0, seed=3).take(1000 + SAMPLES))]
    with httpx.Client(timeout=30) as client:
        post(client, ingest, rows[:1000])
        triggers = f"{monitor}/v1/models/sea/triggers"
        wait_until("the first samples counted", lambda: client.get(triggers).json()["new_samples"] >= 1000)
        client.post(f"{monitor}/v1/models/sea/retrain", json={"reason": "first model"}, headers=TOKEN)
        wait_until("the first model served", lambda: client.get(f"{inference}/readyz").status_code == 200, 90)
        checks = [0]
        for start in range(1000, 1000 + SAMPLES, BATCH):
            post(client, ingest, rows[start:start + BATCH])
            sent = start + BATCH - 1000

            def judged(sent: int = sent) -> dict | None:
                """The triggers once they counted the batch and (with a full drift window) drift-tested it."""
                shown = client.get(triggers).json()
                tested = (shown["drift"] or {}).get("check", 0) > checks[-1] or sent < 500
                return shown if shown["fired"][:-1] or shown["new_samples"] >= sent and tested else None

            shown = wait_until(f"{sent} samples counted and drift-tested", judged)
            if shown["fired"][:-1]:
                break  # something fired after the first request: the assertions below say what
            checks.append((shown["drift"] or {}).get("check", 0))
        versions = client.get(f"{monitor}/v1/models/sea/versions").json()

    fired = shown["fired"]
    assert [f["kind"] for f in fired] == ["manual"], [(f["kind"], f["reason"]) for f in fired]
    assert [(v["version"], v["trigger"], v["status"]) for v in versions] == [(1, "manual", "promoted")]
    assert shown["new_samples"] >= SAMPLES and shown["live"]["samples"] == 200
    assert checks[-1] >= SAMPLES // BATCH - 1  # a drift test after every batch once the window was full
