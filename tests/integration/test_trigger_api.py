"""The trigger control plane on a real stack: config, scheduler, and a trigger firing with evidence."""

from __future__ import annotations

import time

import httpx
import pytest

from refit.demo import digits_waves, post_rows

pytestmark = pytest.mark.integration
TOKEN = {"authorization": "Bearer refit-local-token"}
WEEKLY = {"name": "weekly", "cron": {"day_of_week": "sun", "hour": 3, "minute": 0}, "timezone": "Europe/Berlin"}


def wait(predicate, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (value := predicate()):
            return value
        time.sleep(0.3)
    raise AssertionError("condition not met in time")


def test_config_scheduler_and_a_sample_count_trigger(stack_factory, specs_file) -> None:
    stack = stack_factory(specs_file(only=("digits",), digits={"training": {"min_new_samples": None}}))
    monitor = stack.url("monitor")
    with httpx.Client(timeout=30) as client:
        assert client.get(f"{monitor}/v1/scheduler").json() == {"running": True, "jobs": []}
        config = client.get(f"{monitor}/v1/models/digits/config").json()
        assert config["source"] == "spec" and config["triggers"]["max_age_days"] == 7.0

        wanted = {**config["triggers"], "new_samples": 200, "min_new_samples": 50, "cooldown_minutes": 0,
                  "max_age_days": None, "drift": False, "performance": False, "schedules": [WEEKLY]}
        assert client.put(f"{monitor}/v1/models/digits/config", json=wanted).status_code == 401
        bad = client.put(f"{monitor}/v1/models/digits/config", headers=TOKEN,
                         json={**wanted, "schedules": [{**WEEKLY, "cron": {"day_of_week": "someday"}}]})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "schedules", 0, "cron",
                                                                             "day_of_week"]
        assert client.put(f"{monitor}/v1/models/digits/config", headers=TOKEN, json=wanted).status_code == 200

        assert client.post(f"{monitor}/v1/scheduler/stop").status_code == 401
        assert client.post(f"{monitor}/v1/scheduler/stop", headers=TOKEN).json() == {"running": False}
        stack.restart("monitor")  # configuration and the paused scheduler survive a restart
        assert client.get(f"{monitor}/v1/models/digits/config").json()["source"] == "override"
        scheduler = client.get(f"{monitor}/v1/scheduler").json()
        assert scheduler["running"] is False
        (job,) = scheduler["jobs"]
        assert job["name"] == "weekly" and job["next_run"].endswith(("+01:00", "+02:00"))

        rows = digits_waves(3)[0]
        post_rows(client, stack.url("ingest"), "digits", rows)
        # paused: the monitor counted every new sample (past the threshold of 200) and evaluated its triggers
        # after all of them, yet nothing fired
        counted = wait(lambda: (t := client.get(f"{monitor}/v1/models/digits/triggers").json())["new_samples"]
                       >= 200 and t["observed"] >= len(rows) and t["evaluated"] >= t["observed"] and t)
        assert counted["fired"] == [] and counted["running"] is False

        client.post(f"{monitor}/v1/scheduler/start", headers=TOKEN)
        fired = wait(lambda: client.get(f"{monitor}/v1/models/digits/triggers").json()["fired"])
        assert fired[0]["kind"] == "sample_count" and fired[0]["evidence"]["threshold"] == 200
        assert fired[0]["evidence"]["new_samples"] >= 200
        versions = wait(lambda: client.get(f"{monitor}/v1/models/digits/versions").json())
        assert versions[0]["trigger"] == "sample_count"
        state = wait(lambda: (s := client.get(f"{monitor}/v1/models/digits/triggers").json())["in_flight"] is None
                     and s)
        assert state["fired"][0]["outcome"].startswith("candidate ") and state["new_samples"] < 200

        # Configuration at run time beyond the triggers (the mission's row): the training section reaches the
        # trainer (ModelConfigured) and survives its restart; the safeguard section judges; the candidate and
        # the decision each name the configuration version they were made under.
        config = client.get(f"{monitor}/v1/models/digits/config").json()
        assert (config["version"], config["overridden"]) == (1, ["triggers"])
        training = {**config["training"], "window_max_rows": 150}
        changed = client.put(f"{monitor}/v1/models/digits/config/training", headers=TOKEN, json=training).json()
        strict = {**config["safeguard"], "metrics": [{"name": "accuracy", "min": 0.999}]}
        assert client.put(f"{monitor}/v1/models/digits/config/safeguard", json=strict).status_code == 401
        judged = client.put(f"{monitor}/v1/models/digits/config/safeguard", headers=TOKEN, json=strict).json()
        assert (changed["version"], judged["version"], judged["overridden"]) == (2, 3, ["safeguard", "training", "triggers"])
        stack.restart("trainer")
        assert client.post(f"{monitor}/v1/models/digits/retrain", headers=TOKEN, json={}).status_code == 202
        latest = wait(lambda: (v := client.get(f"{monitor}/v1/models/digits/versions").json()[0])["status"] != "pending"
                      and v["trigger"] == "manual" and v)
        assert (latest["training"]["config_version"], latest["training"]["rows_seen"]) == (3, 150), latest
        decision = client.get(f"{monitor}/v1/models/digits/decisions").json()[0]
        assert (decision["event_type"], decision["version"], decision["config_version"]) == (
            "CandidateRejected", latest["version"], 3)
        assert any("must be >= 0.999" in r for r in decision["reasons"]), decision["reasons"]
