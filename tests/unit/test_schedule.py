"""Schedules with an injected clock: local times across DST, and downtime coalescing into one run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from refit.core.schedule import due, next_run
from refit.specs import _CRON_FIELDS, Schedule

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
WEEKLY = Schedule(name="weekly", cron={"day_of_week": "sun", "hour": 3, "minute": 0}, timezone="Europe/Berlin")
MONTHLY = Schedule(name="monthly", cron={"day": 1, "hour": 2, "minute": 0}, timezone="America/New_York")


def runs(schedule: Schedule, start: datetime, count: int) -> list[datetime]:
    out, t = [], start
    for _ in range(count):
        t = next_run(schedule, t)
        out.append(t)
    return out


def test_weekly_sunday_three_oclock_stays_local_across_both_dst_changes() -> None:
    # Berlin springs forward on 2026-03-29 and falls back on 2026-10-25, both Sundays.
    spring = runs(WEEKLY, datetime(2026, 3, 20, tzinfo=UTC), 3)
    assert [r.astimezone(BERLIN).strftime("%a %Y-%m-%d %H:%M %z") for r in spring] == [
        "Sun 2026-03-22 03:00 +0100", "Sun 2026-03-29 03:00 +0200", "Sun 2026-04-05 03:00 +0200"]
    assert [r.astimezone(UTC).hour for r in spring] == [2, 1, 1]
    autumn = runs(WEEKLY, datetime(2026, 10, 20, tzinfo=UTC), 2)
    assert [r.astimezone(BERLIN).strftime("%Y-%m-%d %H:%M %z") for r in autumn] == [
        "2026-10-25 03:00 +0100", "2026-11-01 03:00 +0100"]


def test_monthly_first_at_two_stays_local_across_dst() -> None:
    # New York springs forward on 2026-03-08: the 1st of March and of April differ in UTC offset.
    got = runs(MONTHLY, datetime(2026, 2, 15, tzinfo=UTC), 3)
    assert [r.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M %z") for r in got] == [
        "2026-03-01 02:00 -0500", "2026-04-01 02:00 -0400", "2026-05-01 02:00 -0400"]


def test_a_local_time_that_does_not_exist_on_the_dst_day_is_not_lost() -> None:
    # 02:30 does not exist in Berlin on 2026-03-29; the run happens that day, not a week later.
    odd = Schedule(name="odd", cron={"day_of_week": "sun", "hour": 2, "minute": 30}, timezone="Europe/Berlin")
    fire = next_run(odd, datetime(2026, 3, 28, 12, tzinfo=UTC))
    assert fire.astimezone(BERLIN).date().isoformat() == "2026-03-29"


def test_downtime_spanning_three_runs_produces_one_run() -> None:
    last = datetime(2026, 3, 1, 3, 0, tzinfo=BERLIN)  # a Sunday run happened
    now = datetime(2026, 3, 24, 12, 0, tzinfo=UTC)    # down for three Sundays (8th, 15th, 22nd)
    d = due(WEEKLY, last, now)
    assert d is not None and d.missed == 3
    assert d.scheduled_for.astimezone(BERLIN).strftime("%Y-%m-%d %H:%M") == "2026-03-22 03:00"
    # After that one run is recorded at `now`, nothing is due until the next Sunday.
    assert due(WEEKLY, now, now + timedelta(days=4)) is None
    assert due(WEEKLY, now, datetime(2026, 3, 29, 1, 0, 1, tzinfo=UTC)).missed == 1


def test_nothing_due_before_the_first_scheduled_time() -> None:
    assert due(WEEKLY, datetime(2026, 3, 22, 3, 0, tzinfo=BERLIN), datetime(2026, 3, 28, tzinfo=UTC)) is None


@pytest.mark.parametrize(("cron", "tz", "message"), [
    ({"day_of_week": "someday"}, "UTC", r"cron\.day_of_week\n  Value error, expected an integer from 0 to 6, or text"),
    ({"hour": 25}, "UTC", r"cron\.hour\n  Value error, expected an integer from 0 to 23"),
    ({"hour": 3}, "Mars/Olympus", r"timezone\n  Value error, unknown time zone 'Mars/Olympus'"),
    ({"when": "later"}, "UTC", r"cron\.when\n  Extra inputs are not permitted"),
    ({}, "UTC", r"cron\n  Value error, set at least one field"),
])
def test_invalid_schedules_are_refused_when_the_spec_loads(cron, tz, message) -> None:
    # the field is named, never APScheduler's internals (CronTrigger.__init__() ...)
    with pytest.raises(ValueError, match=message) as refused:
        Schedule(name="bad", cron=cron, timezone=tz)
    assert "CronTrigger" not in str(refused.value)


def test_every_schedule_the_declared_cron_fields_allow_is_a_valid_trigger() -> None:
    # The document declares the schema of Cron; what it allows must build (spot-checks at the edges).
    for field, (low, high, names) in _CRON_FIELDS.items():
        for value in (low, high, str(low), f"*/{high - low}", f"{low},{high}", "*", *names):
            Schedule(name="edge", cron={field: value})
