"""Cron-like schedules as pure time arithmetic: which scheduled run came due, given the last one.

APScheduler 3's ``CronTrigger`` computes the fire times (time-zone and DST aware); refit
keeps the last run per schedule in its own store, so runs missed while the monitor was
down coalesce into one run at start, never a flood, and survive restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

if TYPE_CHECKING:
    from collections.abc import Mapping

_MAX_COUNTED = 10_000


class ScheduleLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def cron(self) -> Mapping[str, str | int]: ...
    @property
    def timezone(self) -> str: ...


@dataclass(frozen=True)
class Due:
    schedule: str
    scheduled_for: datetime  # the latest scheduled time that passed
    missed: int              # how many scheduled times passed since the last run (they coalesce)


def cron_trigger(schedule: ScheduleLike) -> CronTrigger:
    """The APScheduler trigger of a schedule; any mistake is a ValueError naming the schedule."""
    try:
        return CronTrigger(timezone=ZoneInfo(schedule.timezone), **dict(schedule.cron))
    except (ValueError, TypeError, ZoneInfoNotFoundError) as exc:
        raise ValueError(f"schedule {schedule.name!r}: {exc}") from None


def next_run(schedule: ScheduleLike, after: datetime) -> datetime | None:
    """The first scheduled time strictly after ``after`` (an aware datetime)."""
    fire = cron_trigger(schedule).get_next_fire_time(None, after + timedelta(microseconds=1))
    return fire  # type: ignore[no-any-return]


def due(schedule: ScheduleLike, last_run: datetime, now: datetime) -> Due | None:
    """The run that came due in ``(last_run, now]``, if any; several missed runs count as one."""
    trigger = cron_trigger(schedule)
    first = trigger.get_next_fire_time(None, last_run + timedelta(microseconds=1))
    if first is None or first > now:
        return None
    latest, missed = first, 1
    while missed < _MAX_COUNTED:
        following = trigger.get_next_fire_time(None, latest + timedelta(microseconds=1))
        if following is None or following > now:
            break
        latest, missed = following, missed + 1
    return Due(schedule.name, latest, missed)
