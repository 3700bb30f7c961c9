"""Fallbacks on real processes: a text model's keyword rules before any champion, the holdout's
prior, and an earlier champion when the newest one's artifact is gone, each flagged."""

from __future__ import annotations

import httpx
import pytest

from refit.artifacts import LocalArtifactStore
from refit.demo import digits_waves, post_rows, wait_for_decisions
from tests.chaos.helpers import wait_until

pytestmark = pytest.mark.e2e


def test_rules_prior_and_previous_answer_flagged_when_no_champion_can(stack_factory, specs_file) -> None:
    specs = specs_file(only=("digits", "food-mood"), digits={"serving": {"fallback": ["previous", "prior"]}})
    stack = stack_factory(specs, env={"REFIT_INFERENCE_RECONCILE_S": "1"})
    inference, monitor = stack.url("inference-0"), stack.url("monitor")
    rows = [row for wave in digits_waves(3) for row in wave][:800]
    probe = {"features": rows[0]["features"]}
    with httpx.Client(timeout=30) as client:
        def digits() -> httpx.Response:
            return client.post(f"{inference}/v1/models/digits/predict", json=probe)

        def answered(version: int | None = None) -> httpx.Response:
            """Digits' first 200 (with ``version``, when given)."""
            return wait_until(f"digits answered with v{version}", lambda: r if (r := digits()).status_code == 200 and
                              version in (None, r.json()["version"]) else None, 90, 0.2)

        # food-mood has no champion: its keyword rules answer, flagged (config/models.yaml)
        mood = client.post(f"{inference}/v1/models/food-mood/predict",
                           json={"texts": ["we won, time to celebrate", "a light salad please", "hmm"]})
        assert mood.status_code == 200, mood.text
        assert mood.headers["x-refit-fallback"] == "rules" and "x-refit-model-version" not in mood.headers
        body = mood.json()
        assert body["fallback"] == "rules" and body["version"] is None and body["digest"] is None
        assert [p["label"] for p in body["predictions"]] == ["celebrate", "healthy", "comfort"]
        assert client.post(f"{inference}/v1/models/food-mood/predict", json={"texts": [""]}).status_code == 422

        # digits has no holdout yet, so no prior: 503 as without a fallback
        assert digits().status_code == 503
        post_rows(client, stack.url("ingest"), "digits", rows[:60])  # too few to train (min_samples 100)
        prior = answered()
        assert prior.headers["x-refit-fallback"] == "prior" and prior.json()["fallback"] == "prior"
        answer = prior.json()["predictions"][0]
        known = client.get(f"{monitor}/v1/models/digits/prior").json()
        assert answer["probabilities"] == pytest.approx(known["classes"]) and known["rows"] > 0
        assert answer["label"] == max(known["classes"], key=known["classes"].get)
        ready = client.get(f"{inference}/v1/models/digits/ready")
        assert ready.status_code == 503 and ready.json()["detail"].endswith("answering from its fallback: prior")

        # two waves, one training each: v1, then v2 promoted (as in test_core_loop)
        post_rows(client, stack.url("ingest"), "digits", rows[60:400])
        assert wait_for_decisions(client, monitor, "digits", 1)[0]["event_type"] == "ModelPromoted"
        served = answered(1)
        assert "fallback" not in served.json() and "x-refit-fallback" not in served.headers
        post_rows(client, stack.url("ingest"), "digits", rows[400:800])
        second = wait_for_decisions(client, monitor, "digits", 2)[0]
        assert second["event_type"] == "ModelPromoted" and second["version"] == 2, second["reasons"]
        answered(2)

        # v2's artifact is lost: a restarted replica serves v1, the last champion that loads, flagged
        LocalArtifactStore(stack.state_dir / "artifacts").path(second["digest"]).unlink()
        stack.restart("inference-0")
        previous = answered(1)
        assert previous.json()["fallback"] == "previous" and previous.headers["x-refit-fallback"] == "previous"
        assert previous.headers["x-refit-model-version"] == "1"
        assert client.get(f"{inference}/v1/models/digits/ready").json()["fallback"] == "previous"
        assert client.get(f"{inference}/readyz").status_code == 200
        health = client.get(f"{monitor}/v1/health").json()["services"]["inference-0"]
        assert health["fallback"] == {"digits": "previous", "food-mood": "rules"}
        metrics = client.get(f"{inference}/metrics").text
        assert 'refit_fallback_answers_total{kind="previous",model="digits"}' in metrics
        assert 'refit_inference_fallback{kind="previous",model="digits"} 1.0' in metrics
