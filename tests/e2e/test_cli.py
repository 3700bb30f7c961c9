"""Every CLI command against a running stack: human tables, --json, clear errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from refit.stack import free_port

pytestmark = pytest.mark.e2e


def refit(*args: str, monitor: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "refit.cli", "--monitor", monitor, *args], capture_output=True,
                          text=True, timeout=timeout, env={"PATH": "/usr/bin:/bin", "REFIT_TOKEN": "refit-local-token"})


def test_every_command_against_a_running_stack(stack_factory, specs_file, tmp_path) -> None:
    stack = stack_factory(specs_file(only=("digits",)))
    m = stack.url("monitor")
    demo = refit("demo", "--ingest", stack.url("ingest"), "--inference", stack.url("inference-0"), monitor=m)
    assert demo.returncode == 0, demo.stderr
    assert "ModelPromoted: v1" in demo.stdout and "inference answers with v" in demo.stdout

    status = refit("status", monitor=m)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "ingest" in status.stdout and "automatic retraining: running" in status.stdout
    models = json.loads(refit("--json", "models", monitor=m).stdout)
    assert models[0]["name"] == "digits" and models[0]["champion"]["version"] >= 2
    assert "digits" in refit("models", monitor=m).stdout

    history = refit("history", "digits", monitor=m)
    assert history.returncode == 0 and "ModelPromoted" in history.stdout
    missing = refit("history", "nope", monitor=m)
    assert missing.returncode == 1 and "error: 404" in missing.stderr

    before = len(httpx.get(f"{m}/v1/models/digits/decisions").json())
    retrain = refit("retrain", "digits", "--reason", "from the test", monitor=m)
    assert retrain.returncode == 0 and "retrain requested for digits" in retrain.stdout
    deadline = time.monotonic() + 60
    while len(httpx.get(f"{m}/v1/models/digits/decisions").json()) == before and time.monotonic() < deadline:
        time.sleep(0.3)

    rolled = json.loads(refit("--json", "rollback", "digits", monitor=m).stdout)
    assert rolled["event_type"] == "ModelRolledBack"
    refused = refit("rollback", "digits", "--to", "99", monitor=m)
    assert refused.returncode == 1 and "never a champion" in refused.stderr

    assert "stopped" in refit("scheduler", "stop", monitor=m).stdout
    assert json.loads(refit("--json", "scheduler", "status", monitor=m).stdout)["running"] is False
    assert "running" in refit("scheduler", "start", monitor=m).stdout

    out = tmp_path / "digits.csv"
    assert refit("export", "digits", "--format", "csv", "-o", str(out), monitor=m).returncode == 0
    stored = httpx.get(f"{stack.url('trainer')}/v1/stats").json()["samples"]["digits"]
    assert len(out.read_text().splitlines()) == stored + 1
    assert len(refit("export", "digits", monitor=m).stdout.splitlines()) == stored

    report = json.loads(refit("--json", "report", "--days", "7", monitor=m).stdout)
    (digits,) = report["models"]
    # every candidate trained is a retraining, whoever asked: the demo's waves (the trainer's own
    # sample-count path) and the manual request
    versions = httpx.get(f"{m}/v1/models/digits/versions").json()
    trained = sum(digits["retrainings"].values())
    assert len(versions) >= 4 and trained == len(versions), (digits["retrainings"], versions)
    assert digits["retrainings"]["manual"] == 1 and digits["decisions"]["ModelRolledBack"] == 1
    assert digits["decisions"]["ModelPromoted"] >= 3 and digits["trend"]["end"]["version"] == rolled["version"]
    assert f"retrainings {trained} " in refit("report", monitor=m).stdout

    denied = subprocess.run([sys.executable, "-m", "refit.cli", "--monitor", m, "--token", "wrong", "retrain",
                             "digits"], capture_output=True, text=True, timeout=60)
    assert denied.returncode == 1 and "401" in denied.stderr
    down = refit("status", monitor=f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1 and "cannot reach the monitor" in down.stderr


def test_up_runs_the_demo_and_stops_everything(tmp_path) -> None:
    run = subprocess.run([sys.executable, "-m", "refit.cli", "up", "--demo", "--exit-after-demo",
                          "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "ModelPromoted: v1" in run.stdout and "stopping" in run.stdout
    for line in run.stdout.splitlines():
        if line.startswith("ingest"):
            url = line.split()[1]
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{url}/healthz", timeout=2)
