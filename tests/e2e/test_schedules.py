"""Schedules in a running monitor (issue 17): a weekly and a monthly schedule, set at run time, fire."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from refit.demo import digits_waves, post_rows
from tests.chaos.helpers import QUIET_TRIGGERS, TOKEN, wait_until

pytestmark = pytest.mark.e2e
ZONE = "Europe/Berlin"


def at(when: datetime, name: str, monthly: bool) -> dict[str, object]:
    """A weekly (this weekday) or monthly (this day of the month) schedule whose next run is ``when``."""
    local = when.astimezone(ZoneInfo(ZONE))
    day = {"day": local.day} if monthly else {"day_of_week": local.strftime("%a").lower()}
    return {"name": name, "timezone": ZONE,
            "cron": {**day, "hour": local.hour, "minute": local.minute, "second": local.second}}


def test_a_weekly_and_a_monthly_schedule_fire_in_a_running_monitor(stack_factory, specs_file) -> None:
    stack = stack_factory(specs_file(only=("digits",), digits={"training": {"min_new_samples": None},
                                                               "triggers": QUIET_TRIGGERS}))
    monitor = stack.url("monitor")
    rows = digits_waves(3)[0]
    with httpx.Client(timeout=30) as client:
        post_rows(client, stack.url("ingest"), "digits", rows)
        wait_until("the monitor counted the samples", lambda: client.get(
            f"{monitor}/v1/models/digits/triggers").json()["new_samples"] == len(rows))
        now = datetime.now(UTC).replace(microsecond=0)
        weekly, monthly = now + timedelta(seconds=25), now + timedelta(seconds=40)
        config = client.get(f"{monitor}/v1/models/digits/config").json()["triggers"]
        config |= {"schedules": [at(weekly, "weekly", False), at(monthly, "monthly", True)],
                   "min_new_samples": 0, "cooldown_minutes": 0}
        assert client.put(f"{monitor}/v1/models/digits/config", headers=TOKEN, json=config).status_code == 200
        jobs = {job["name"]: job for job in client.get(f"{monitor}/v1/scheduler").json()["jobs"]}
        assert datetime.fromisoformat(jobs["weekly"]["next_run"]) == weekly
        assert datetime.fromisoformat(jobs["monthly"]["next_run"]) == monthly

        def fired() -> list[dict]:
            return client.get(f"{monitor}/v1/models/digits/triggers").json()["fired"]

        both = wait_until("both schedules fired", lambda: len(f := fired()) == 2 and f, timeout_s=90)
        by_name = {f["evidence"]["schedule"]: f for f in both}
        assert {f["kind"] for f in both} == {"schedule"} and set(by_name) == {"weekly", "monthly"}
        assert datetime.fromisoformat(by_name["weekly"]["evidence"]["scheduled_for"]) == weekly
        assert datetime.fromisoformat(by_name["monthly"]["evidence"]["scheduled_for"]) == monthly
        assert datetime.fromisoformat(by_name["weekly"]["occurred_at"]) >= weekly
        versions = wait_until("a candidate per schedule", lambda: len(v := client.get(
            f"{monitor}/v1/models/digits/versions").json()) == 2 and v, timeout_s=60)
        assert [v["trigger"] for v in versions] == ["schedule", "schedule"]
        # no sample arrived between them: both were fitted on the same rows (their data lineage)
        fingerprints = {v["training"]["data_fingerprint"] for v in versions}
        assert len(fingerprints) == 1 and re.fullmatch(r"[0-9a-f]{64}", fingerprints.pop())
        jobs = {job["name"]: job for job in client.get(f"{monitor}/v1/scheduler").json()["jobs"]}
        # the next runs: the same wall-clock time in the schedule's zone, a week and a month on
        assert wall(jobs["weekly"]["next_run"]) == wall(weekly.isoformat()) + timedelta(days=7)
        month_on = wall(jobs["monthly"]["next_run"])
        assert (month_on.day, month_on.time()) == (wall(monthly.isoformat()).day, wall(monthly.isoformat()).time())
        assert month_on > wall(monthly.isoformat()) + timedelta(days=27)


def wall(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone(ZoneInfo(ZONE)).replace(tzinfo=None)
