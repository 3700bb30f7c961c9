"""Readiness per model (issue 17, defect 4): with only digits trained, the replica is ready and takes digits'
traffic; each model says its own readiness; a replica told that diabetes is required waits for it."""

from __future__ import annotations

import httpx
import pytest

from refit.demo import digits_waves, post_rows, wait_for_decisions
from refit.stack import Stack
from tests.chaos.helpers import QUIET_TRIGGERS, wait_until

pytestmark = pytest.mark.integration


def serve_digits(client: httpx.Client, stack: Stack, replica: str) -> None:
    """Post a wave of digits and wait until ``replica`` serves the champion it made."""
    post_rows(client, stack.url("ingest"), "digits", digits_waves(1)[0])
    wait_for_decisions(client, stack.url("monitor"), "digits", 1)
    wait_until("digits is ready", lambda: client.get(f"{replica}/v1/models/digits/ready").status_code == 200)


def test_a_replica_serving_one_model_is_ready_and_each_model_says_its_own(stack_factory, specs_file) -> None:
    specs = specs_file(only=("digits", "diabetes"), digits={"triggers": QUIET_TRIGGERS})
    stack = stack_factory(specs)
    any_model = stack.url("inference-0")
    with httpx.Client(timeout=30) as client:
        assert client.get(f"{any_model}/readyz").status_code == 503  # no champion at all yet
        serve_digits(client, stack, any_model)
        ready = client.get(f"{any_model}/readyz")
        digits = client.get(f"{any_model}/v1/models/digits/ready").json()
        diabetes = client.get(f"{any_model}/v1/models/diabetes/ready")
        unknown = client.get(f"{any_model}/v1/models/nope/ready")
    assert ready.status_code == 200, ready.text
    assert (digits["model"], digits["ready"]) == ("digits", True) and digits["version"] >= 1
    assert diabetes.status_code == 503 and diabetes.json() == {"detail": "no champion yet for diabetes"}
    assert unknown.status_code == 404


def test_required_models_hold_readiness_until_each_is_served(stack_factory, specs_file) -> None:
    specs = specs_file(only=("digits", "diabetes"), digits={"triggers": QUIET_TRIGGERS})
    stack = stack_factory(specs, env={"REFIT_INFERENCE_REQUIRED_MODELS": '["digits", "diabetes"]'})
    replica = stack.url("inference-0")
    with httpx.Client(timeout=30) as client:
        serve_digits(client, stack, replica)
        ready = client.get(f"{replica}/readyz")
    assert ready.status_code == 503 and ready.json() == {"detail": "no champion yet for diabetes"}
