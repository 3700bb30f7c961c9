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
    demo = refit("demo", "--no-story", "--ingest", stack.url("ingest"), "--inference", stack.url("inference-0"),
                 monitor=m)
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


def test_make_run_twice_on_one_state_dir_tells_the_story_both_times(tmp_path, specs_file) -> None:
    """``make run``'s story (issue 17): the digits waves, the three other shipped models each served, a wave of
    noisy labels whose candidate the safeguard rejects (printed with the failing check), and a change of concept
    that a trigger detects, followed by a promotion. Run twice on one state dir (defect 5): the second run asks
    the champion which convention it learned and continues from there (noisy labels of that convention, then
    the next convention), where it streamed the old waves again, whose labels rolled the champion back."""
    specs, state = specs_file(), tmp_path / "state"
    runs = [subprocess.run([sys.executable, "-m", "refit.cli", "up", "--demo", "--exit-after-demo", "--state-dir",
                            str(state), "--specs", str(specs)], capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "Traceback" not in run.stdout + run.stderr and "demo done" in run.stdout
    first, second = (run.stdout.splitlines() for run in runs)

    assert [line[:8] for line in first if line.startswith("wave ")] == ["wave 1: ", "wave 2: ", "wave 3: "], first
    for name in ("breast-cancer", "diabetes", "food-mood"):  # served in both runs: trained in the first
        shown = next(i for i, line in enumerate(first) if line.startswith(f"{name} ModelPromoted: v1 "))
        # v1, or a later version the trainer's count of new samples made while the first run's rows were still
        # arriving (breast-cancer: v1 from 246 of its rows, v2 from 380, in one run)
        kept = next(i for i, line in enumerate(second) if line.startswith(f"{name}: champion v")
                    and line.endswith(" from an earlier run"))
        version = second[kept].split(": champion ")[1].split()[0]
        for story, at, served in ((first, shown, "v"), (second, kept, version)):
            assert next(line for line in story[at:] if line.startswith("  inference ")).startswith(
                f"  inference answers with {served}"), story[at:]
    end_of_first = tell_the_digits_story(first, "every digit as the next one (9 as 0)")

    continued = next(line for line in second if line.startswith("digits already has "))
    assert "labels every digit as the next one (9 as 0). The story continues" in continued, continued
    assert int(continued.split("its champion v")[1].split()[0]) >= end_of_first, continued
    assert not any(line.startswith(("wave ", "ModelRolledBack")) for line in second), second  # nothing contradicts
    assert tell_the_digits_story(second, "every digit as the one 2 on (9 as 1)") > end_of_first, second


def tell_the_digits_story(story: list[str], convention: str) -> int:
    """Check one run's digits story (noisy labels rejected, a change detected, then a promotion serving the
    new convention); the version promoted."""
    noisy = story.index(next(line for line in story if line.startswith("noisy labels: posted")))
    assert story[noisy + 1].startswith("CandidateRejected: v"), story[noisy:]
    failing = story.index("  the safeguard kept the champion; failing checks:", noisy)
    assert story[failing + 1].startswith(("    tolerance accuracy: ", "    gate accuracy: ")), story[failing:]
    assert f"concept change: streaming new scans labelled by a new convention ({convention})" in \
        next(line for line in story if line.startswith("concept change: ")), story[failing:]
    detected = story.index(next(line for line in story if line.startswith("change detected by ")))
    trigger = next((line for line in story[detected:] if line.startswith("  trigger ")), None)
    # what asked for the candidate after the change: a trigger, or the trainer's own count of new samples
    # (training.min_new_samples: 300 in the digits spec), which may train before the trigger is due
    trigger = trigger or next((line for line in story[detected:] if line.startswith("  trained by the trainer's own")),
                              None)
    assert trigger is not None and trigger.startswith(
        ("  trigger performance fired", "  trigger drift fired", "  trigger catch_up fired",
         "  trained by the trainer's own count of new samples")), story[detected:]
    promoted = next(i for i, line in enumerate(story) if i > detected and line.startswith("ModelPromoted: v")
                    and "(holdout -" not in line)  # judged on the new concept, not a challenger winning live
    assert any(line.startswith("  inference answers with v") and "(the new convention's label" in line
               for line in story[promoted:]), story[detected:]
    return int(story[promoted].split(": v")[1].split()[0])


def test_the_demo_without_a_stack_says_so_without_a_traceback() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    demo = refit("demo", "--ingest", nowhere, "--inference", nowhere, monitor=nowhere)
    assert demo.returncode == 1 and "Traceback" not in demo.stderr, demo.stderr
    assert demo.stderr.startswith("error: the demo could not talk to the stack"), demo.stderr
