"""Several models at once from the spec file: each is trained, judged by its own policy and served."""

from __future__ import annotations

import time

import httpx
import pytest

from refit.datasets import sample_rows
from refit.demo import post_rows, wait_for_decisions

pytestmark = pytest.mark.e2e
MODELS = ("digits", "diabetes", "breast-cancer", "food-mood")


def test_every_shipped_model_is_promoted_and_served(stack_factory) -> None:
    stack = stack_factory()
    inference = stack.url("inference-0")
    rows = {m: sample_rows(m) for m in MODELS}
    with httpx.Client(timeout=30) as client:
        for model in MODELS:
            post_rows(client, stack.url("ingest"), model, rows[model])
        decisions = {m: wait_for_decisions(client, stack.url("monitor"), m, 1)[-1] for m in MODELS}
        for model, decision in decisions.items():
            assert decision["event_type"] == "ModelPromoted", (model, decision["reasons"])
        # Each model was judged by its own policy: its own metrics and its own gates.
        assert set(decisions["diabetes"]["candidate_scores"]) == {"rmse", "mae", "r2"}
        gates = {m: {(c["metric"], c["threshold"]) for c in d["checks"] if c["kind"] == "gate"}
                 for m, d in decisions.items()}
        assert gates["breast-cancer"] == {("accuracy", 0.9), ("f1_macro", 0.88)}
        assert gates["food-mood"] == {("accuracy", 0.65), ("f1_macro", 0.6)}

        deadline = time.monotonic() + 60
        while any(client.get(f"{inference}/v1/models/{m}/ready").status_code != 200 for m in decisions) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.get(f"{inference}/readyz").status_code == 200
        text = client.post(f"{inference}/v1/models/food-mood/predict",
                           json={"texts": ["I had a rough day and want warm cheesy pasta", "Party time, we won!"]})
        assert text.status_code == 200, text.text
        body = text.json()
        assert body["version"] == decisions["food-mood"]["version"] and len(body["predictions"]) == 2
        assert set(body["predictions"][0]["probabilities"]) == {"comfort", "energy", "healthy", "celebrate", "calm"}
        value = client.post(f"{inference}/v1/models/diabetes/predict",
                            json={"instances": [rows["diabetes"][0]["features"]]}).json()
        assert isinstance(value["predictions"][0]["value"], float)
        cancer = client.post(f"{inference}/v1/models/breast-cancer/predict",
                             json={"features": rows["breast-cancer"][0]["features"]}).json()
        assert cancer["predictions"][0]["label"] in {"malignant", "benign"}
        wrong = client.post(f"{inference}/v1/models/food-mood/predict", json={"features": [1.0]})
        assert wrong.status_code == 422
