"""Every operation of ingest, monitor and inference, fuzzed through its own OpenAPI document.

One real stack (digits, diabetes, food-mood promoted, so inference has champions to serve);
then, per operation, a few hundred generated cases (see ``openapi_fuzz``): none may be a
server error, carry a traceback, answer a status code its document does not declare (ingest,
monitor) or contradict the declared response schema, and afterwards no service may have logged
a traceback or an error the input caused.
"""

from __future__ import annotations

import httpx
import pytest

from refit.specs import load_specs
from tests.fuzz.live import MODELS, problems, promote
from tests.fuzz.openapi_fuzz import fuzz_service, findings, table

pytestmark = pytest.mark.integration

# Cases per operation: with predict declared per model, 30 operations x 100 take about three minutes
# on two cores (tests/fuzz/test_contracts.py runs schemathesis with every check besides).
EXAMPLES = 100
SERVICES = ("ingest", "monitor", "inference-0")
# Services whose documents declare every error they answer (refit.web.declare_errors): an
# undeclared status code fails; the others' are counted in the table.
DECLARED = ("ingest", "monitor", "inference-0")


def test_every_operation_answers_generated_input_without_a_server_error(stack_factory, specs_file, capsys) -> None:
    specs_path = specs_file(only=MODELS)
    stack = stack_factory(specs_path)
    decisions = promote(stack)
    digests = [d["digest"] for d in decisions.values()]

    runs = []
    for service in SERVICES:
        runs += fuzz_service(service, stack.url(service), EXAMPLES, load_specs(specs_path), digests,
                             strict_statuses=service in DECLARED)
    with capsys.disabled():
        print(f"\n{table(runs)}")

    assert not findings(runs), f"\n{findings(runs)}"
    assert {r.service for r in runs} == set(SERVICES)
    assert len(runs) >= 29  # 4 ingest + 20 monitor + 5 inference operations, as published today
    short = [f"{r.service} {r.label}: {r.cases}" for r in runs if r.cases < EXAMPLES]
    assert not short, f"operations with fewer than {EXAMPLES} cases: {short}"

    with httpx.Client(timeout=30) as client:  # every service still up, inference still serving
        for name in ("ingest", "trainer", "monitor", "inference-0"):
            assert client.get(f"{stack.url(name)}/healthz").status_code == 200, name
        served = client.get(f"{stack.url('inference-0')}/v1/models").json()
        assert all(m["version"] is not None for m in served), served
    found = problems(stack, allowed=())
    assert not found, "\n".join(found[:20])
