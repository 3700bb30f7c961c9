"""The trigger policy: each trigger, their priority, and the policy around them, with exact outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from refit.core.schedule import Due
from refit.core.triggers import (Assessment, Fire, InFlight, Live, Signals, age_limit_days, catching_up,
                                 evaluate)
from refit.specs import TriggersSpec

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def spec(**changes: object) -> TriggersSpec:
    return TriggersSpec(**{"max_age_days": None, "drift": False, "performance": False, **changes})


def signals(**changes: object) -> Signals:
    return Signals(**{"now": NOW, "new_samples": 500, "champion_since": NOW - timedelta(days=1), **changes})


def kind(a: Assessment) -> str | None:
    return a.fire.kind if a.fire else None


def test_nothing_wanted_nothing_fired() -> None:
    assert evaluate(spec(), signals()) == Assessment(None)


def test_new_sample_count() -> None:
    assert kind(evaluate(spec(new_samples=500), signals(new_samples=500))) == "sample_count"
    assert kind(evaluate(spec(new_samples=501), signals(new_samples=500))) is None


@pytest.mark.parametrize(("age_days", "fires"), [(6.99, False), (7.0, True), (30, True)])
def test_champion_age(age_days, fires) -> None:
    a = evaluate(spec(max_age_days=7), signals(champion_since=NOW - timedelta(days=age_days)))
    assert (kind(a) == "age") is fires
    if fires:
        assert a.fire.evidence["limit_days"] == 7 and a.fire.evidence["adaptive"] is False


@pytest.mark.parametrize(("metric", "live", "reference", "fires"), [
    ("accuracy", 0.81, 0.90, False),   # 10.0% drop: not over 10%
    ("accuracy", 0.80, 0.90, True),    # 11.1% drop
    ("rmse", 57.0, 50.0, False),       # 14% rise
    ("rmse", 58.0, 50.0, True),        # 16% rise
])
def test_live_performance_drop(metric, live, reference, fires) -> None:
    a = evaluate(spec(performance=True), signals(live=Live(metric, live, reference, samples=200)))
    assert (kind(a) == "performance") is fires


def test_live_performance_needs_a_full_window() -> None:
    a = evaluate(spec(performance=True), signals(live=Live("accuracy", 0.5, 0.9, samples=199)))
    assert a.fire is None


def test_drift_fires_with_the_report_as_evidence() -> None:
    report = {"drifted": True, "share_drifted": 0.4, "features": [{"name": "x"}]}
    a = evaluate(spec(drift=True), signals(drift=report))
    assert kind(a) == "drift" and a.fire.evidence == report
    assert evaluate(spec(drift=False), signals(drift=report)).fire is None
    assert evaluate(spec(drift=True), signals(drift={"drifted": False})).fire is None


def test_a_due_schedule_fires_once_with_its_missed_runs() -> None:
    run = Due("weekly", NOW - timedelta(hours=1), missed=3)
    a = evaluate(spec(), signals(due=(run,)))
    assert kind(a) == "schedule" and a.fire.evidence["missed_runs"] == 3


def test_priority_and_the_others_are_named() -> None:
    a = evaluate(spec(new_samples=10, drift=True, performance=True, max_age_days=1),
                 signals(drift={"drifted": True}, live=Live("accuracy", 0.5, 0.9, 500),
                         champion_since=NOW - timedelta(days=4)))  # over the adaptive minimum of 3 days
    assert kind(a) == "performance"
    assert a.fire.evidence["also"] == ["drift", "sample_count", "age"]


def test_cooldown_holds_automatic_triggers() -> None:
    s = spec(new_samples=10, cooldown_minutes=30)
    held = evaluate(s, signals(last_fired_at=NOW - timedelta(minutes=29)))
    assert held.fire is None and "cooldown" in held.held[0]
    assert kind(evaluate(s, signals(last_fired_at=NOW - timedelta(minutes=30)))) == "sample_count"


def test_data_sufficiency_holds_automatic_triggers() -> None:
    s = spec(max_age_days=7, min_new_samples=50)
    old = NOW - timedelta(days=8)
    held = evaluate(s, signals(new_samples=49, champion_since=old))
    assert held.fire is None and "only 49 new samples (need 50)" in held.held[0]
    assert kind(evaluate(s, signals(new_samples=50, champion_since=old))) == "age"


def test_one_training_in_flight_then_retries_with_backoff_then_gives_up() -> None:
    s = spec(new_samples=10, timeout_minutes=30, backoff_minutes=1, max_retries=2)
    flight = InFlight("r1", "sample_count", NOW - timedelta(minutes=10))
    assert "training in flight" in evaluate(s, signals(in_flight=flight)).held[0]
    # Timed out, but the first backoff (1 min) has not passed.
    waiting = InFlight("r1", "sample_count", NOW - timedelta(minutes=30, seconds=30))
    assert evaluate(s, signals(in_flight=waiting)).fire is None
    retry = evaluate(s, signals(in_flight=InFlight("r1", "sample_count", NOW - timedelta(minutes=31))))
    assert retry.fire.retry_of == "r1" and retry.fire.kind == "sample_count" and retry.fire.evidence["attempt"] == 2
    # Second attempt waits timeout + 2 min; the third attempt is the last allowed (max_retries=2).
    second = InFlight("r2", "sample_count", NOW - timedelta(minutes=31, seconds=59), attempts=2)
    assert evaluate(s, signals(in_flight=second)).fire is None
    assert evaluate(s, signals(in_flight=InFlight("r2", "x", NOW - timedelta(minutes=32), attempts=2))).fire
    exhausted = InFlight("r3", "sample_count", NOW - timedelta(hours=5), attempts=3)
    gave_up = evaluate(s, signals(in_flight=exhausted))
    assert gave_up.fire is None and gave_up.gave_up == exhausted


def test_a_candidate_waiting_for_its_decision_holds_every_automatic_trigger_until_the_timeout() -> None:
    # Its training answered the request (nothing in flight), but until it is judged the live evidence
    # is still that of the champion it may replace: a second training would answer the same evidence.
    s = spec(new_samples=10, timeout_minutes=30)
    waiting = evaluate(s, signals(undecided=(4, NOW - timedelta(minutes=2))))
    assert waiting.fire is None and waiting.held == ("candidate v4 awaits its decision (120s of 30 min)",)
    # A candidate the safeguard cannot judge for longer than the timeout holds nothing any more.
    assert kind(evaluate(s, signals(undecided=(4, NOW - timedelta(minutes=30))))) == "sample_count"
    assert kind(evaluate(s, signals())) == "sample_count"


def test_after_a_detected_change_nothing_fires_until_the_safeguard_can_judge_the_new_concept() -> None:
    s = spec(new_samples=10)
    held = evaluate(s, signals(settling=(12, 30)))
    assert held.fire is None and held.held[0].startswith("a concept change was detected: 12 holdout rows")
    assert kind(evaluate(s, signals(settling=None))) == "sample_count"


def test_rows_from_a_changed_file_fire_data_change_with_the_file_in_the_evidence() -> None:
    files = {"b.csv": 40, "a.csv": 80}
    fire = evaluate(spec(data_change=True, min_new_samples=100), signals(new_samples=120, changed_files=files)).fire
    assert fire == Fire("data_change", "120 new rows from changed file(s) a.csv, b.csv",
                        {"files": {"a.csv": 80, "b.csv": 40}})
    assert evaluate(spec(data_change=False), signals(changed_files=files)).fire is None  # off by default
    held = evaluate(spec(data_change=True, min_new_samples=200), signals(new_samples=120, changed_files=files))
    assert held.fire is None and held.held == (
        "data_change: 120 new rows from changed file(s) a.csv, b.csv — held: only 120 new samples (need 200)",)
    cooling = evaluate(spec(data_change=True, cooldown_minutes=30),
                       signals(changed_files=files, last_fired_at=NOW - timedelta(minutes=5)))
    assert cooling.fire is None and "held: cooldown of 30 min" in cooling.held[0]


def test_a_reported_training_failure_ends_the_attempt_at_once_then_backs_off() -> None:
    s = spec(new_samples=10, timeout_minutes=30, backoff_minutes=1, max_retries=1)
    just_failed = InFlight("r1", "manual", NOW - timedelta(seconds=40), failed_at=NOW - timedelta(seconds=30),
                           failure="timeout")
    assert evaluate(s, signals(in_flight=just_failed)).held == (
        "training failed (timeout) for request r1; retry in 30s",)
    # a minute of backoff after the failure, not 30 minutes after the request
    retry = evaluate(s, signals(in_flight=InFlight("r1", "manual", NOW - timedelta(minutes=2),
                                                   failed_at=NOW - timedelta(minutes=1), failure="error")))
    assert retry.fire.retry_of == "r1" and retry.fire.kind == "manual"
    assert retry.fire.evidence["failure"] == "error" and retry.fire.evidence["attempt"] == 2
    last = InFlight("r2", "manual", NOW - timedelta(seconds=20), attempts=2, failed_at=NOW - timedelta(seconds=1),
                    failure="timeout")
    gave_up = evaluate(s, signals(in_flight=last))  # the last attempt failed: given up at once
    assert gave_up.fire is None and gave_up.gave_up == last


@pytest.mark.parametrize(("live", "limit"), [
    (None, 7.0),                                   # unknown live performance: the configured age
    (Live("accuracy", 0.90, 0.90, 500), 7.0),      # as good as on the holdout
    (Live("accuracy", 0.855, 0.90, 500), 5.0),     # half-way to the 10% threshold: half-way to 3 days
    (Live("accuracy", 0.70, 0.90, 500), 3.0),      # beyond the threshold: the minimum
    (Live("accuracy", 0.945, 0.90, 500), 18.5),    # 5% better: half-way to 30 days
    (Live("accuracy", 1.00, 0.90, 500), 30.0),
    (Live("rmse", 53.75, 50.0, 500), 5.0),         # 7.5% worse of a 15% threshold
    (Live("accuracy", 0.50, 0.90, 10), 7.0),       # too few live samples to adapt
])
def test_adaptive_age_limit(live, limit) -> None:
    s = spec(max_age_days=7, adaptive=True, adaptive_min_days=3, adaptive_max_days=30)
    assert age_limit_days(s, live) == pytest.approx(limit)
    assert age_limit_days(spec(max_age_days=7, adaptive=False), live) == 7


def test_a_detected_change_lets_a_shorter_window_count() -> None:
    after_change = Live("accuracy", 0.6, 0.9, samples=60, change_detected=True)
    assert kind(evaluate(spec(performance=True), signals(live=after_change))) == "performance"
    too_few = Live("accuracy", 0.6, 0.9, samples=49, change_detected=True)
    assert evaluate(spec(performance=True), signals(live=too_few)).fire is None


# -- a rejection backs off the trigger that caused it (issue 12, no churn) -----------------------------------------

def test_a_rejected_candidate_holds_its_trigger_back_doubling_per_rejection_in_a_row() -> None:
    from datetime import UTC, datetime, timedelta

    from refit.core.triggers import Live, Signals, evaluate, rejection_backoff
    from refit.specs import TriggersSpec

    spec = TriggersSpec(max_age_days=None, drift=False, min_new_samples=0, cooldown_minutes=0,
                        rejection_backoff_samples=250, rejection_backoff_max_samples=800)
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    dropped = Live("accuracy", 0.5, 0.9, 500)

    def after(samples: int, streak: int, kind: str = "performance") -> Signals:
        return Signals(now=now, new_samples=100, champion_since=now - timedelta(days=1), live=dropped,
                       rejected={kind: (streak, samples)})

    held = evaluate(spec, after(100, 1))
    assert held.fire is None and held.held[0].startswith("performance: live accuracy 0.5 vs holdout 0.9")
    assert held.held[0].endswith("held: 1 candidate it caused rejected in a row; backing off until 250 new samples "
                                 "(100 so far)")
    assert evaluate(spec, after(250, 1)).fire is not None  # 250 samples after one rejection
    assert evaluate(spec, after(499, 2)).fire is None and evaluate(spec, after(500, 2)).fire is not None
    assert rejection_backoff(spec, (5, 0)) == 800  # capped
    assert evaluate(spec, after(0, 0)).fire is not None  # a promotion ended the streak
    assert evaluate(spec.model_copy(update={"rejection_backoff_samples": 0}), after(0, 3)).fire is not None
    assert evaluate(spec, after(0, 3, kind="drift")).fire is not None  # only the kind whose candidates failed


# -- no churn: a drop counts only when significant, or after a detected change ---------------------------------------

def test_without_a_detected_change_the_drop_must_be_significant() -> None:
    noisy = Live.of("rmse", [50.0] * 190 + [300.0] * 10, 50.0)  # +48% by ten outliers, not by the window
    assert noisy.live > 50.0 * 1.15 and noisy.bound is not None and noisy.bound < 50.0 * 1.15
    assert evaluate(spec(performance=True), signals(live=noisy)).fire is None
    changed = Live.of("rmse", [50.0] * 190 + [300.0] * 10, 50.0, change_detected=True)
    assert kind(evaluate(spec(performance=True), signals(live=changed))) == "performance"
    wrong = Live.of("accuracy", [0.0] * 100 + [1.0] * 100, 0.9)  # half wrong against 90% on the holdout
    fired = evaluate(spec(performance=True), signals(live=wrong)).fire
    assert fired is not None and fired.evidence["bound"] == pytest.approx(0.5 + 3.09 * 0.5 / 200**0.5)


def performance_fires(seed: int, metric: str, significant: bool, n: int = 5000, holdout: int = 100,
                      every: int = 25) -> int:
    """Times the performance trigger fires on one stationary stream of a champion whose holdout score
    came from ``holdout`` rows of the same distribution: the live window (200) tested every ``every``
    samples and consumed when it fires, as the monitor does."""
    rng = np.random.default_rng(seed)
    draw = (lambda size: (rng.random(size) < 0.15).astype(float)) if metric == "accuracy" else \
        (lambda size: np.abs(rng.standard_t(5, size) * 40))  # heavy-tailed absolute errors
    reference_errors = draw(holdout)
    reference = 1 - reference_errors.mean() if metric == "accuracy" else float(np.sqrt((reference_errors**2).mean()))
    stream, fired, start = draw(n), 0, 0
    for end in range(every, n + 1, every):
        window = stream[max(start, end - 200):end]
        live = Live.of(metric, window.tolist(), reference)
        if not significant:
            live = Live(live.metric, live.live, live.reference, live.samples)
        if kind(evaluate(spec(performance=True), signals(live=live))) == "performance":
            fired, start = fired + 1, end
    return fired


@pytest.mark.parametrize("metric", ["accuracy", "rmse"])
def test_stationary_streams_rarely_fire_the_performance_trigger(metric: str) -> None:
    """5,000 stationary samples after a promotion judged on 100 holdout rows. Streams that ever fire, of 100:
    with the bound, 0 (accuracy) and 2 (RMSE of heavy-tailed errors, where the 100-row reference itself is
    noisy); the bare threshold fires in 29 (124 trainings) and 76 (720 trainings)."""
    with_bound = sum(performance_fires(seed, metric, True) > 0 for seed in range(100))
    bare = sum(performance_fires(seed, metric, False) > 0 for seed in range(100))
    assert with_bound <= 3 and bare >= 20, (with_bound, bare)


def test_a_champion_that_learnt_a_new_concept_from_few_rows_catches_up_geometrically() -> None:
    assert evaluate(spec(), signals(concept=(479, 120))).fire is None
    fired = evaluate(spec(), signals(concept=(480, 120))).fire
    assert fired is not None and fired.kind == "catch_up"
    assert fired.evidence == {"concept_rows": 480, "trained_rows": 120, "factor": 4}
    # the champion it gives learnt from 480 rows: the next catch-up waits for 1,920
    assert evaluate(spec(), signals(concept=(1919, 480))).fire is None
    assert kind(evaluate(spec(), signals(concept=(1920, 480)))) == "catch_up"
    # a concept of 200,000 rows caught up from 120 costs 5 trainings, not 800 (one per 250 samples)
    trained, trainings = 120, 0
    for rows in range(120, 200_001, 50):
        if catching_up(rows, trained):
            trained, trainings = rows, trainings + 1
    assert trainings == 5


def test_no_detected_change_no_catch_up_and_a_rejected_one_backs_off() -> None:
    assert evaluate(spec(), signals(concept=None)).fire is None
    held = evaluate(spec(), signals(concept=(800, 120), rejected={"catch_up": (1, 100)}))
    assert held.fire is None and "catch_up" in held.held[0] and "backing off until 250 new samples" in held.held[0]


def test_after_a_detected_change_any_drop_counts_and_without_one_only_a_significant_drop_beyond_the_limit() -> None:
    slight = [0.0] * 192 + [1.0] * 8  # 96% live against 100% on the holdout: 4% worse, the limit is 10%
    assert evaluate(spec(performance=True), signals(live=Live.of("accuracy", slight, 1.0))).fire is None
    changed = evaluate(spec(performance=True), signals(live=Live.of("accuracy", slight, 1.0, change_detected=True)))
    assert changed.fire is not None and changed.fire.evidence["threshold"] == 0.0
    better = Live.of("accuracy", slight, 0.9, change_detected=True)  # a change for the better
    assert evaluate(spec(performance=True), signals(live=better)).fire is None
