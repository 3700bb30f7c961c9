"""20,000 samples with injected duplicates, conflicts, low-confidence and malformed rows, while the
trainer is SIGKILLed and restarted twice: nothing lost, nothing doubled, filter counts exact."""

from __future__ import annotations

import csv
import io
import json
import signal
import sqlite3
import time

import httpx
import numpy as np
import pytest
import yaml
from sklearn.datasets import make_classification

from refit.core.split import is_holdout

pytestmark = pytest.mark.integration
TOKEN = {"authorization": "Bearer refit-local-token"}
FEATURES = [f"x{i}" for i in range(8)]
TOTAL, DUP, CONFLICT, LOW, BAD = 20_000, 1_000, 600, 800, 400   # 5%, 3%, 4%, 2%
CLEAN = TOTAL - DUP - CONFLICT - LOW - BAD


def spec_file(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [{
        "name": "stream", "task": "classification", "labels": ["0", "1", "2"],
        "input": {"kind": "numeric", "features": FEATURES},
        "estimator": {"class": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 500}},
        "safeguard": {"metrics": [{"name": "accuracy", "min": 0.5}]},
        "training": {"min_new_samples": None, "min_samples": 100, "holdout_fraction": 0.2},
    }]}))
    return path


def build_rows() -> tuple[list[dict], list[dict], dict[str, list[int]]]:
    """Accepted rows (with what each injection points at) and malformed rows."""
    x, y = make_classification(n_samples=CLEAN + LOW, n_features=8, n_informative=5, n_classes=3, random_state=0)
    rng = np.random.default_rng(5)
    rows = [{"features": dict(zip(FEATURES, map(float, xi), strict=True)), "label": str(int(yi)),
             "confidence": None if i % 2 else float(rng.uniform(0.5, 1.0))} for i, (xi, yi) in enumerate(zip(x, y))]
    clean, low = rows[:CLEAN], rows[CLEAN:]
    for r in low:
        r["confidence"] = 0.2
    picks = rng.choice(CLEAN, size=DUP + CONFLICT, replace=False)
    dup_of, conflict_of = picks[:DUP], picks[DUP:]
    dups = [{**clean[i], "confidence": None} for i in dup_of]
    conflicts = [{**clean[i], "label": str((int(clean[i]["label"]) + 1) % 3)} for i in conflict_of]
    accepted = clean + dups + conflicts + low
    order = rng.permutation(len(accepted))
    accepted = [accepted[i] for i in order]
    position = {int(old): new for new, old in enumerate(order)}
    for i, r in enumerate(accepted):
        r["idempotency_key"] = f"row-{i}"
    pairs = {
        "dup": [(position[int(i)], position[CLEAN + k]) for k, i in enumerate(dup_of)],
        "conflict": [(position[int(i)], position[CLEAN + DUP + k]) for k, i in enumerate(conflict_of)],
        "low": [position[CLEAN + DUP + CONFLICT + k] for k in range(LOW)],
    }
    malformed = [{"features": {**clean[k]["features"], "x3": float("nan") if k % 2 else "high"}, "label": "1",
                  "idempotency_key": f"bad-{k}"} for k in range(BAD)]
    return accepted, malformed, pairs


def post(client: httpx.Client, url: str, rows: list[dict]) -> httpx.Response:
    # json.dumps writes float("nan") as the non-standard token NaN: the malformed rows need it.
    body = json.dumps({"model": "stream", "samples": rows}).encode()
    return client.post(f"{url}/v1/samples:batch", content=body, headers={"content-type": "application/json"})


def test_twenty_thousand_samples_survive_two_trainer_kills(stack_factory, tmp_path) -> None:
    stack = stack_factory(spec_file(tmp_path))
    accepted, malformed, pairs = build_rows()
    ids: list[str] = []
    rejected = 0
    with httpx.Client(timeout=60) as client:
        ingest = stack.url("ingest")
        batches = [accepted[i:i + 500] for i in range(0, len(accepted), 500)]
        for n, batch in enumerate(batches):
            response = post(client, ingest, batch)
            assert response.status_code == 202, response.text
            ids.extend(response.json()["sample_ids"])
            if n in (len(batches) // 3, 2 * len(batches) // 3):
                stack.restart("trainer", signal.SIGKILL)
            if n % 4 == 0:  # malformed rows arrive in between, as their own requests
                for bad in malformed[n * 10:(n + 1) * 10]:
                    answer = post(client, ingest, [bad])
                    assert answer.status_code == 422
                    rejected += 1
        for bad in malformed[rejected:]:
            assert post(client, ingest, [bad]).status_code == 422
            rejected += 1
        # A client retrying two batches with the same idempotency keys changes nothing.
        for n, batch in enumerate(batches[:2]):
            assert post(client, ingest, batch).json()["sample_ids"] == ids[n * 500:(n + 1) * 500]
        assert rejected == BAD and len(ids) == len(set(ids)) == TOTAL - BAD

        training = {s for s in ids if not is_holdout(s, 0.2, "stream")}
        db = stack.state_dir / "trainer" / "trainer.sqlite"
        deadline = time.monotonic() + 90
        stored: set[str] = set()
        while time.monotonic() < deadline:
            with sqlite3.connect(db) as conn:
                stored = {r[0] for r in conn.execute("SELECT sample_id FROM samples WHERE model='stream'")}
            if len(stored) >= len(training):
                break
            time.sleep(0.5)
        assert stored == training  # exactly the expected rows: none lost, none twice

        request = client.post(f"{stack.url('monitor')}/v1/models/stream/retrain", json={"reason": "count"},
                              headers=TOKEN).json()["request_id"]
        version = None
        deadline = time.monotonic() + 120
        while version is None and time.monotonic() < deadline:
            versions = client.get(f"{stack.url('monitor')}/v1/models/stream/versions").json()
            version = next((v for v in versions if v["retrain_request_id"] == request), None)
            time.sleep(0.5)
        assert version is not None
        export = client.get(f"{stack.url('trainer')}/v1/models/stream/dataset", params={"format": "csv"})

    both = lambda a, b: a in training_idx and b in training_idx  # noqa: E731
    training_idx = {i for i, s in enumerate(ids) if s in training}
    expected_dup = sum(both(a, b) for a, b in pairs["dup"])
    expected_conflict_rows = 2 * sum(both(a, b) for a, b in pairs["conflict"])
    expected_low = sum(i in training_idx for i in pairs["low"])
    filters = version["training"]["filters"]
    print(f"injected (trainer's side of the split): duplicates {expected_dup}, conflicting rows "
          f"{expected_conflict_rows}, low confidence {expected_low}, malformed {BAD} (all 422 at ingest); "
          f"filters: {filters}")
    assert filters == {
        "seen": len(training), "malformed": 0, "low_confidence": expected_low, "duplicates": expected_dup,
        "conflicts": expected_conflict_rows, "rare_class": 0,
        "kept": len(training) - expected_low - expected_dup - expected_conflict_rows,
    }
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert export.status_code == 200 and len(rows) == len(training)
    assert {r["sample_id"] for r in rows} == training and list(rows[0])[:8] == FEATURES
