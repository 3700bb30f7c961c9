"""An abrupt concept drift (river's SEA generator) streamed through ingest: a trigger fires, a new
model is promoted, and the accuracy served on the new concept recovers."""

from __future__ import annotations

import time

import httpx
import pytest
import yaml
from river.datasets import synth

pytestmark = pytest.mark.e2e
TOKEN = {"authorization": "Bearer refit-local-token"}
FEATURES = ["x0", "x1", "x2"]


def sea(variant: int, seed: int, n: int, tag: str) -> list[dict]:
    return [{"features": {f: float(x[i]) for i, f in enumerate(FEATURES)}, "label": str(int(y)),
             "idempotency_key": f"{tag}-{k}"} for k, (x, y) in enumerate(synth.SEA(variant=variant, seed=seed).take(n))]


def spec_file(tmp_path, window_rows: int = 600):
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [{
        "name": "sea", "task": "classification", "labels": ["0", "1"],
        "input": {"kind": "numeric", "features": FEATURES},
        "estimator": {"class": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 500}},
        "safeguard": {"min_holdout": 50, "metrics": [{"name": "accuracy", "min": 0.7}]},
        # Only the monitor's triggers (and the first manual request) start trainings here.
        "training": {"min_new_samples": None, "min_samples": 100, "holdout_fraction": 0.2,
                     "holdout_max_rows": 150, "window_max_rows": window_rows},
        "triggers": {"max_age_days": None, "performance": True, "performance_window": 200, "accuracy_drop": 0.1,
                     "drift": True, "drift_window": 300, "min_new_samples": 100, "cooldown_minutes": 0,
                     "timeout_minutes": 5},
    }]}))
    return path


def served_accuracy(client: httpx.Client, url: str, rows: list[dict]) -> tuple[float, int]:
    body = client.post(f"{url}/v1/models/sea/predict", json={"instances": [r["features"] for r in rows]}).json()
    hits = sum(p["label"] == r["label"] for p, r in zip(body["predictions"], rows, strict=True))
    return hits / len(rows), body["version"]


def post(client: httpx.Client, url: str, rows: list[dict]) -> None:
    for i in range(0, len(rows), 250):
        assert client.post(f"{url}/v1/samples:batch", json={"model": "sea", "samples": rows[i:i + 250]}).status_code == 202


def test_concept_drift_triggers_a_retrain_and_served_accuracy_recovers(stack_factory, tmp_path) -> None:
    stack = stack_factory(spec_file(tmp_path))
    ingest, monitor, inference = stack.url("ingest"), stack.url("monitor"), stack.url("inference-0")
    new_concept_probe = sea(2, 99, 500, "probe")
    with httpx.Client(timeout=30) as client:
        post(client, ingest, sea(3, 1, 1000, "old"))
        time.sleep(2)
        client.post(f"{monitor}/v1/models/sea/retrain", json={"reason": "first model"}, headers=TOKEN)
        deadline = time.monotonic() + 60
        while client.get(f"{inference}/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        before, v1 = served_accuracy(client, inference, new_concept_probe)

        stream, promoted, sent = sea(2, 7, 4000, "new"), None, 0
        deadline = time.monotonic() + 150
        while promoted is None and sent < len(stream) and time.monotonic() < deadline:
            post(client, ingest, stream[sent:sent + 100])
            sent += 100
            time.sleep(0.3)
            versions = client.get(f"{monitor}/v1/models/sea/versions").json()
            promoted = next((v for v in versions if v["status"] == "promoted" and v["version"] > v1
                             and v["trigger"] in ("performance", "drift")), None)
        assert promoted is not None, client.get(f"{monitor}/v1/models/sea/triggers").json()

        # Keep streaming the new concept: the triggers keep judging the champion on it until it fits.
        after, version = served_accuracy(client, inference, new_concept_probe)
        deadline = time.monotonic() + 120
        while after < 0.95 and sent < len(stream) and time.monotonic() < deadline:
            post(client, ingest, stream[sent:sent + 100])
            sent += 100
            time.sleep(0.3)
            after, version = served_accuracy(client, inference, new_concept_probe)
        fired = client.get(f"{monitor}/v1/models/sea/triggers").json()["fired"]

    automatic = [f for f in fired if f["kind"] in ("performance", "drift")]
    print(f"served accuracy on the new concept: v{v1} {before:.3f} -> v{version} {after:.3f} "
          f"after {sent} post-drift samples; triggers fired: {[(f['kind'], f['reason']) for f in fired]}")
    assert before < 0.85
    assert automatic and automatic[-1]["evidence"]  # evidence travels with the request
    assert version >= promoted["version"] and after >= 0.95 and after > before + 0.1
