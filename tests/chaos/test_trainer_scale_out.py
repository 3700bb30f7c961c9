"""Three trainers in one consumer group on the three-broker cluster: each model is trained by one of
them; SIGKILL of the one training digits mid-run moves its models to the others, which rebuild their
datasets from refit.samples, and the next candidate of every model is trained on all of its rows
(what was posted, less the holdout)."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from refit.core.split import is_holdout
from refit.datasets import sample_rows
from refit.demo import post_rows
from refit.specs import load_specs
from services.ingest.app import _sample_id
from tests.chaos.helpers import QUIET_TRIGGERS, log_events, retrain, stored_count, wait_until

pytestmark = pytest.mark.integration
MODELS = ("digits", "diabetes", "breast-cancer", "food-mood")
ON_REQUEST = {"training": {"min_new_samples": None}, "triggers": QUIET_TRIGGERS}
# About a second to fit and convert: long enough to be killed in the middle of.
SLOW = {**ON_REQUEST, "estimator": {"class": "sklearn.ensemble.RandomForestClassifier",
                                    "params": {"n_estimators": 60, "random_state": 0}, "scale": False}}
# Kafka's shortest session by default (group.min.session.timeout.ms): the group notices the death sooner.
SHORT_SESSION = {"REFIT_TRAINER_KAFKA_SESSION_TIMEOUT_MS": "6000", "REFIT_TRAINER_KAFKA_HEARTBEAT_INTERVAL_MS": "1000"}


def test_a_killed_trainers_models_move_and_train_on_their_whole_dataset(stack_factory, specs_file) -> None:
    specs_path = specs_file(digits=SLOW, **{m: ON_REQUEST for m in MODELS if m != "digits"})
    specs = load_specs(specs_path)
    started = time.monotonic()
    stack = stack_factory(specs_path, kafka_nodes=3, trainers=3, env=SHORT_SESSION)
    marks = {"up": time.monotonic() - started}
    rows = {m: sample_rows(m) for m in MODELS}
    expected = {m: sum(not is_holdout(_sample_id(m, r["idempotency_key"]), specs.get(m).training.holdout_fraction, m)
                       for r in rows[m]) for m in MODELS}
    with httpx.Client(timeout=30) as client:
        def stats(trainers: list[str] = stack.trainer_names) -> dict[str, dict]:
            return {t: client.get(f"{stack.url(t)}/v1/stats").json() for t in trainers}

        for model in MODELS:
            post_rows(client, stack.url("ingest"), model, rows[model])
        def stored_whole() -> dict[str, dict] | None:
            now = stats()
            return now if all([stored_count(s, m) for s in now.values() if m in s["models"]] == [len(rows[m])]
                              for m in MODELS) else None

        before = wait_until("each model stored whole by the one trainer that owns it", stored_whole, timeout_s=120)
        marks["stored"] = time.monotonic() - started
        owner = {m: t for t, x in before.items() for m in x["models"]}
        victim = owner["digits"]
        moved = sorted(m for m in MODELS if owner[m] == victim)

        requests = {m: retrain(client, stack, "scale-out: kill the trainer that trains digits", m) for m in MODELS}
        wait_until("the victim started fitting digits", lambda: [
            e for e in log_events(stack, victim, "training") if e.get("request_id") == requests["digits"]],
            interval_s=0.02)
        stack.stop_process(victim, signal.SIGKILL)
        marks["killed"] = time.monotonic() - started
        assert [e for e in log_events(stack, victim, "candidate published") if e.get("model") == "digits"] == []

        def candidates(model: str) -> list[dict]:
            return [v for v in client.get(f"{stack.url('monitor')}/v1/models/{model}/versions").json()
                    if v["retrain_request_id"] == requests[model]]

        found = {m: wait_until(f"a candidate of {m} for its request", lambda m=m: candidates(m), timeout_s=120)
                 for m in MODELS}
        marks["candidates"] = time.monotonic() - started
        survivors = [t for t in stack.trainer_names if t != victim]
        after = stats(survivors)
        # The monitor's export streams each dataset from the trainer that owns the model now.
        exported = {m: client.get(f"{stack.url('monitor')}/v1/models/{m}/dataset").text.count("\n") for m in moved}

    new_owner = {m: t for t in survivors for m in after[t]["models"]}
    seen = {m: [v["training"]["rows_seen"] for v in found[m]] for m in MODELS}
    print(f"owners {owner}; killed {victim} (models {moved}) mid-fit of digits; owners after {new_owner}; "
          f"rows seen by the candidates {seen}, expected (posted less holdout) {expected}; "
          f"seconds {', '.join(f'{k} {v:.1f}' for k, v in marks.items())}")
    assert sorted(new_owner) == sorted(MODELS) and victim not in new_owner.values()
    for model in moved:  # rebuilt by replaying refit.samples: the whole dataset, once
        assert after[new_owner[model]]["samples"][model] == expected[model] == exported[model]
        assert any(e.get("model") == model for e in log_events(stack, new_owner[model], "candidate published"))
    assert all(rows_seen == [expected[m]] * len(rows_seen) for m, rows_seen in seen.items())
