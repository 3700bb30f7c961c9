"""``schemathesis run --checks all`` on the OpenAPI document of each of the four services, live.

One real stack with champions (digits, diabetes, food-mood), so predictions, artifacts and the
rollback link are reached; then schemathesis' own command, every phase it has for the document
(examples, coverage, fuzzing, stateful) and every check: server errors, status codes, content
types, headers and schemas as declared, schema-valid requests accepted and schema-violating ones
refused, ``Allow`` on 405, credentials not ignored, and the rest. The command is what the issue
names and what a user runs; its own pytest integration runs only the fuzzing phase.

Seeded and bounded (``EXAMPLES`` per operation): the same cases on every run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fuzz.live import problems, promote

pytestmark = pytest.mark.integration

SEED = 17
EXAMPLES = 10
SERVICES = ("ingest", "trainer", "monitor", "inference-0")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def test_every_service_document_passes_every_schemathesis_check(stack_factory, specs_file, tmp_path, capsys) -> None:
    stack = stack_factory(specs_file(only=("digits", "diabetes", "food-mood")))
    promote(stack)

    # The Open Inference Protocol's request schema cannot say that a tensor's data holds the values
    # its shape counts, nor which shapes and datatypes a model takes: the protocol answers those
    # requests 400 (services/inference/v2.py). A safeguard section set at run time may name a metric of
    # the other task: which task is the model's (the path's), so the document cannot say it; the monitor
    # answers 422 naming it (services/monitor/runconfig.py). Every other check, and every other operation, as is.
    (tmp_path / "schemathesis.toml").write_text(
        '[[operations]]\ninclude-path-regex = "^/v2/models/.*/infer$"\n'
        '[operations.checks.positive_data_acceptance]\nexpected-statuses = ["2xx", 400, 404]\n'
        '[[operations]]\ninclude-path-regex = "^/v1/models/[^/]+/config/safeguard$"\n'
        '[operations.checks.positive_data_acceptance]\nexpected-statuses = ["2xx", 401, 404, 422]\n')
    failed, timings = [], []
    for service in SERVICES:
        started = time.monotonic()
        run = subprocess.run(
            [str(SCHEMATHESIS), "run", f"{stack.url(service)}/openapi.json", "--checks", "all",
             "--seed", str(SEED), "--max-examples", str(EXAMPLES), "--workers", "1", "--no-color",
             "--continue-on-failure", "--request-timeout", "60",
             # latency is not under test here (a shared two-core machine); every other check is
             "--max-response-time", "60",
             # the monitor's control token (local mode); ignored_auth sends cases without it too
             "--header", "Authorization: Bearer refit-local-token"],
            cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False)
        timings.append(f"{service}: {time.monotonic() - started:.1f} s")
        if run.returncode != 0 or " passed" not in run.stdout:
            failed.append(f"--- {service} (exit {run.returncode})\n{run.stdout[-8000:]}\n{run.stderr[-2000:]}")
    with capsys.disabled():
        print("\nschemathesis run --checks all:", ", ".join(timings))

    assert not failed, "\n".join(failed)
    found = problems(stack)
    assert not found, "\n".join(found[:20])
