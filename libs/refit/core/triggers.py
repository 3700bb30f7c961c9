"""When to retrain: the monitor's trigger policy as a pure function of what it knows.

Triggers, by priority: live performance drop, data drift, catching up with a new concept, a
schedule that came due, rows from a changed file (``data_change``, the file source), enough new
samples, champion age (adaptive). The policy around them: one training
in flight per model (a request without a candidate after ``timeout_minutes``, or whose training
the trainer reported failed, is retried with exponential backoff, at most ``max_retries`` times, then given up), a
cooldown between automatic requests, and data sufficiency (at least
``min_new_samples`` new samples). Manual requests bypass cooldown and sufficiency
but not the in-flight rule's bookkeeping (they are recorded like any other).

No churn: a candidate the safeguard rejected holds back the automatic trigger that caused it
until ``rejection_backoff_samples`` new samples arrived, doubled for each rejection in a row
(capped), so a trigger
whose candidates keep failing stops asking for the same training; a promotion ends the streak.

Adaptive age: with live performance known, the champion's allowed age shrinks
linearly from ``max_age_days`` to ``adaptive_min_days`` as the degradation grows
to its threshold, and grows towards ``adaptive_max_days`` while live performance
is as good as on the holdout or better.

Catching up: after a detected change the first champion of the new concept learnt it from the few
rows the safeguard could judge on (``min_holdout``); it is retrained once ``CATCH_UP`` times as many
rows of that concept are there, and so on, so a lasting concept gets a model of all its rows after
a logarithmic number of trainings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from refit.core.schedule import Due
from refit.specs import TriggersSpec

_AFTER_CHANGE = 50  # live samples needed after a detected change before the drop counts
# Without a detected change, a drop counts only when significant: the live metric's one-sided 99.9%
# confidence bound (its most favourable plausible value) must be beyond the threshold too.
PERFORMANCE_Z = 3.09
# The automatic triggers a rejection holds back; schedules and manual requests are someone's intent.
_BACKS_OFF = frozenset({"performance", "drift", "catch_up", "data_change", "sample_count", "age"})
# A champion that learnt the current concept from n rows is retrained once this many times n are there.
CATCH_UP = 4


@dataclass(frozen=True)
class InFlight:
    request_id: str
    kind: str
    requested_at: datetime     # the latest attempt
    attempts: int = 1
    failed_at: datetime | None = None   # the trainer reported this attempt failed (TrainingFailed)
    failure: str | None = None          # and why


@dataclass(frozen=True)
class Live:
    """Rolling live performance of the champion next to its holdout score."""

    metric: str          # "accuracy" or "rmse"
    live: float
    reference: float
    samples: int
    change_detected: bool = False   # a streaming detector saw the error rate change
    bound: float | None = None      # the live value's confidence bound on the favourable side

    @classmethod
    def of(cls, metric: str, errors: Sequence[float], reference: float, change_detected: bool = False) -> Live:
        """The live value of a window of errors (0/1 for accuracy, absolute for RMSE), with its
        one-sided ``PERFORMANCE_Z`` confidence bound on the favourable side (normal approximation of
        the mean error, or of the mean squared error)."""
        e = np.asarray(errors, dtype=float)
        n = len(e)
        if metric == "accuracy":
            live = float(1 - e.mean())
            return cls(metric, live, reference, n, change_detected,
                       min(live + PERFORMANCE_Z * math.sqrt(live * (1 - live) / n), 1.0))
        squares = e**2
        spread = PERFORMANCE_Z * float(squares.std(ddof=1)) / math.sqrt(n) if n > 1 else math.inf
        return cls(metric, float(math.sqrt(squares.mean())), reference, n, change_detected,
                   math.sqrt(max(float(squares.mean()) - spread, 0.0)))

    def plausible(self) -> Live:
        """The most favourable live value the window supports (itself after a detected change)."""
        if self.change_detected or self.bound is None:
            return self
        return Live(self.metric, self.bound, self.reference, self.samples, self.change_detected, self.bound)

    def limit(self, threshold: float) -> float:
        """How much worse than the holdout counts: any worse after a change the detector established
        (the change is the evidence; ADWIN's false alarms are rare), else ``threshold``, significantly
        so (:meth:`plausible`)."""
        return 0.0 if self.change_detected else threshold

    def enough(self, window: int) -> bool:
        """A full window, or (after a detected change) enough post-change samples to judge."""
        return self.samples >= window or (self.change_detected and self.samples >= min(window, _AFTER_CHANGE))


@dataclass(frozen=True)
class Signals:
    now: datetime
    new_samples: int
    champion_since: datetime | None
    in_flight: InFlight | None = None
    last_fired_at: datetime | None = None
    due: tuple[Due, ...] = ()
    drift: Mapping[str, Any] | None = None      # a drift report as a dict, with "drifted"
    live: Live | None = None
    # per trigger kind: candidates it caused that were rejected in a row since the last promotion,
    # and the samples that arrived since the latest of them
    rejected: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    changed_files: Mapping[str, int] = field(default_factory=dict)  # new rows per changed file (file source)
    # when the champion was trained after the latest detected change: the training rows of the current
    # concept there are now, and those the champion learnt from
    concept: tuple[int, int] | None = None
    # the oldest candidate waiting for its decision (version, arrival): until it is decided, the live
    # evidence is still the champion's it may replace
    undecided: tuple[int, datetime] | None = None
    # after a detected change, while the safeguard could not yet judge a candidate on the current
    # concept: its holdout rows so far, and the least it judges on (``min_holdout``)
    settling: tuple[int, int] | None = None


@dataclass(frozen=True)
class Fire:
    kind: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    retry_of: str | None = None


@dataclass(frozen=True)
class Assessment:
    fire: Fire | None
    held: tuple[str, ...] = ()        # triggers that wanted to fire, and why they did not
    gave_up: InFlight | None = None   # a request whose retries are exhausted


def degradation(live: Live) -> float:
    """Relative change for the worse: accuracy drop, or RMSE rise (negative when better)."""
    if live.reference == 0:
        return 0.0
    if live.metric == "rmse":
        return (live.live - live.reference) / abs(live.reference)
    return (live.reference - live.live) / abs(live.reference)


def _threshold(spec: TriggersSpec, live: Live) -> float:
    return spec.rmse_increase if live.metric == "rmse" else spec.accuracy_drop


def age_limit_days(spec: TriggersSpec, live: Live | None) -> float | None:
    if spec.max_age_days is None:
        return None
    if not spec.adaptive or live is None or not live.enough(spec.performance_window):
        return spec.max_age_days
    ratio = degradation(live) / _threshold(spec, live)
    if ratio >= 0:
        days = spec.max_age_days - (spec.max_age_days - spec.adaptive_min_days) * min(ratio, 1.0)
    else:
        days = spec.max_age_days + (spec.adaptive_max_days - spec.max_age_days) * min(-ratio, 1.0)
    return max(spec.adaptive_min_days, min(spec.adaptive_max_days, days))


def _wanted(spec: TriggersSpec, s: Signals) -> list[Fire]:
    wanted = []
    if spec.performance and s.live is not None and s.live.enough(spec.performance_window):
        change, limit = degradation(s.live), s.live.limit(_threshold(spec, s.live))
        if change > limit and degradation(s.live.plausible()) > limit:
            wanted.append(Fire("performance", f"live {s.live.metric} {s.live.live:.4g} vs holdout "
                               f"{s.live.reference:.4g}: {change:+.1%} worse (limit {limit:.0%})",
                               {"metric": s.live.metric, "live": s.live.live, "reference": s.live.reference,
                                "relative_change": change, "threshold": limit, "window": s.live.samples,
                                "change_detected": s.live.change_detected, "bound": s.live.bound}))
    if spec.drift and s.drift is not None and s.drift.get("drifted"):
        names = s.drift.get("drifted_features") or []
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        wanted.append(Fire("drift", f"data drift in {shown or 'the features'}", dict(s.drift)))
    if s.concept is not None and catching_up(*s.concept):
        rows, trained = s.concept
        wanted.append(Fire("catch_up", f"{rows} training rows of the current concept; the champion learnt it "
                           f"from {trained}", {"concept_rows": rows, "trained_rows": trained, "factor": CATCH_UP}))
    for run in s.due:
        wanted.append(Fire("schedule", f"schedule {run.schedule} came due at {run.scheduled_for.isoformat()}",
                           {"schedule": run.schedule, "scheduled_for": run.scheduled_for.isoformat(),
                            "missed_runs": run.missed}))
    if spec.data_change and s.changed_files:
        names = sorted(s.changed_files)
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        wanted.append(Fire("data_change", f"{sum(s.changed_files.values())} new rows from changed file(s) {shown}",
                           {"files": dict(sorted(s.changed_files.items()))}))
    if spec.new_samples is not None and s.new_samples >= spec.new_samples:
        wanted.append(Fire("sample_count", f"{s.new_samples} new samples (threshold {spec.new_samples})",
                           {"new_samples": s.new_samples, "threshold": spec.new_samples}))
    limit_days = age_limit_days(spec, s.live)
    if limit_days is not None and s.champion_since is not None:
        age = (s.now - s.champion_since) / timedelta(days=1)
        if age >= limit_days:
            wanted.append(Fire("age", f"champion is {age:.1f} days old (limit {limit_days:.1f})",
                               {"age_days": age, "limit_days": limit_days,
                                "adaptive": limit_days != spec.max_age_days}))
    return wanted


def catching_up(concept_rows: int, trained_rows: int) -> bool:
    """Whether a champion that learnt the current concept from ``trained_rows`` rows is due for a
    retraining on the ``concept_rows`` there are now: geometric, so a concept of N rows costs at most
    log_CATCH_UP(N / trained_rows) of them."""
    return concept_rows >= CATCH_UP * max(trained_rows, 1)


def evaluate(spec: TriggersSpec, s: Signals) -> Assessment:
    """Whether to request a retraining now, and why (or why not)."""
    if s.in_flight is not None:
        flight = s.in_flight
        waited = s.now - flight.requested_at
        # A failure the trainer reported ends the attempt at once; silence ends it at the timeout.
        timeout = (flight.failed_at - flight.requested_at if flight.failed_at
                   else timedelta(minutes=spec.timeout_minutes))
        if waited < timeout:
            return Assessment(None, (f"training in flight: request {flight.request_id} "
                                     f"({waited.total_seconds():.0f}s of {timeout.total_seconds():.0f}s)",))
        if flight.attempts > spec.max_retries:
            return Assessment(None, (f"gave up on request {flight.request_id} after {flight.attempts} attempts",),
                              gave_up=flight)
        backoff = timedelta(minutes=spec.backoff_minutes * 2 ** (flight.attempts - 1))
        outcome = f"training failed ({flight.failure})" if flight.failed_at else "no candidate"
        if waited < timeout + backoff:
            return Assessment(None, (f"{outcome} for request {flight.request_id}; retry in "
                                     f"{(timeout + backoff - waited).total_seconds():.0f}s",))
        evidence: dict[str, Any] = {"attempt": flight.attempts + 1, "waited_s": waited.total_seconds()}
        if flight.failed_at:
            evidence["failure"] = flight.failure
        return Assessment(Fire(flight.kind, f"retry {flight.attempts} of {spec.max_retries}: {outcome} "
                               f"{waited.total_seconds() / 60:.1f} min after request {flight.request_id}",
                               evidence, retry_of=flight.request_id))
    if s.undecided is not None and s.now - s.undecided[1] < timedelta(minutes=spec.timeout_minutes):
        version, arrived = s.undecided
        return Assessment(None, (f"candidate v{version} awaits its decision ({(s.now - arrived).total_seconds():.0f}s"
                                 f" of {spec.timeout_minutes:g} min)",))
    if s.settling is not None:
        rows, needed = s.settling
        return Assessment(None, (f"a concept change was detected: {rows} holdout rows of the new concept, "
                                 f"the safeguard judges on {needed} (a candidate trained now would wait for "
                                 f"them, on fewer rows than it could have learnt from)",))
    wanted: list[Fire] = []
    backing_off: list[str] = []
    for fire in _wanted(spec, s):
        needed = rejection_backoff(spec, s.rejected.get(fire.kind)) if fire.kind in _BACKS_OFF else None
        if needed is not None and s.rejected[fire.kind][1] < needed:
            streak, since = s.rejected[fire.kind]
            backing_off.append(f"{fire.kind}: {fire.reason} — held: {streak} candidate{'s' * (streak > 1)} it caused "
                               f"rejected in a row; backing off until {needed} new samples ({since} so far)")
        else:
            wanted.append(fire)
    if not wanted:
        return Assessment(None, tuple(backing_off))
    reasons = tuple(f"{w.kind}: {w.reason}" for w in wanted)
    if s.last_fired_at is not None and s.now - s.last_fired_at < timedelta(minutes=spec.cooldown_minutes):
        return Assessment(None, tuple(f"{r} — held: cooldown of {spec.cooldown_minutes:g} min" for r in reasons)
                          + tuple(backing_off))
    if s.new_samples < spec.min_new_samples:
        return Assessment(None, tuple(f"{r} — held: only {s.new_samples} new samples "
                                      f"(need {spec.min_new_samples})" for r in reasons) + tuple(backing_off))
    first = wanted[0]
    others = [w.kind for w in wanted[1:]]
    return Assessment(Fire(first.kind, first.reason, {**first.evidence, "also": others} if others else first.evidence),
                      tuple(backing_off))


def rejection_backoff(spec: TriggersSpec, rejected: tuple[int, int] | None) -> int | None:
    """The new samples a trigger kind waits for after ``rejected`` = (rejections in a row, samples since the
    latest): ``rejection_backoff_samples`` doubled per rejection after the first, at most the cap."""
    if rejected is None or rejected[0] < 1 or spec.rejection_backoff_samples == 0:
        return None
    return min(spec.rejection_backoff_samples * 2 ** min(rejected[0] - 1, 30), spec.rejection_backoff_max_samples)
