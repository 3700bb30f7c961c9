"""The safeguard: a candidate replaces the champion only if no metric degrades beyond tolerance."""

from __future__ import annotations

import random

import pytest

from refit.core.bootstrap import Interval
from refit.core.safeguard import SafeguardCheck, judge
from refit.specs import HIGHER_IS_BETTER, SafeguardSpec


# --- the relative tolerance (1% by default), both directions -------------------------------------


@pytest.mark.parametrize(
    ("champion", "candidate", "promote"),
    [
        (0.9, 0.95, True),  # better
        (0.9, 0.9, True),  # equal
        (0.9, 0.891, True),  # exactly 1% worse: the boundary passes
        (0.9, 0.8909, False),  # just beyond 1% worse
        (0.9, 0.5, False),
    ],
)
def test_higher_is_better_metric_may_drop_at_most_one_percent(make_policy, champion, candidate, promote):
    verdict = judge({"accuracy": candidate}, {"accuracy": champion}, make_policy(accuracy={}))

    assert verdict.promote is promote
    assert [(c.metric, c.kind, c.passed) for c in verdict.checks] == [("accuracy", "tolerance", promote)]


@pytest.mark.parametrize(
    ("metric", "champion", "candidate", "promote"),
    [
        ("rmse", 10.0, 9.0, True),  # better (lower)
        ("rmse", 10.0, 10.0, True),
        ("rmse", 10.0, 10.1, True),  # exactly 1% worse
        ("rmse", 10.0, 10.1001, False),
        ("mae", 2.0, 2.02, True),
        ("mae", 2.0, 2.0201, False),
        ("mae", 2.0, 0.0, True),
    ],
)
def test_lower_is_better_metric_may_rise_at_most_one_percent(make_policy, metric, champion, candidate, promote):
    verdict = judge({metric: candidate}, {metric: champion}, make_policy(**{metric: {}}))

    assert verdict.promote is promote


@pytest.mark.parametrize(
    ("metric", "champion", "boundary", "beyond"),
    [
        ("accuracy", 0.9, 0.891, 0.8909),
        ("f1_macro", 0.8, 0.792, 0.7919),
        ("f1_weighted", 0.5, 0.495, 0.4949),
        ("r2", 0.6, 0.594, 0.5939),
        ("rmse", 3.0, 3.03, 3.0301),
        ("mae", 0.5, 0.505, 0.5051),
    ],
)
def test_every_metric_has_its_direction(make_policy, metric, champion, boundary, beyond):
    policy = make_policy(**{metric: {}})

    assert judge({metric: boundary}, {metric: champion}, policy).promote is True
    assert judge({metric: beyond}, {metric: champion}, policy).promote is False


def test_metric_directions_are_the_documented_ones():
    assert HIGHER_IS_BETTER == {"accuracy": True, "f1_macro": True, "f1_weighted": True, "r2": True,
                                "rmse": False, "mae": False}


def test_boundary_is_exact_for_many_champion_values(make_policy):
    """Floating-point noise neither fails the exact boundary nor tolerates a hair beyond it."""
    rng = random.Random(20240601)
    for _ in range(500):
        champion = rng.uniform(0.05, 1.0)
        up, down = make_policy(accuracy={}), make_policy(rmse={})
        floor, ceiling = champion - 0.01 * champion, champion + 0.01 * champion

        assert judge({"accuracy": floor}, {"accuracy": champion}, up).promote, champion
        assert not judge({"accuracy": floor - 1e-9}, {"accuracy": champion}, up).promote, champion
        assert judge({"rmse": ceiling}, {"rmse": champion}, down).promote, champion
        assert not judge({"rmse": ceiling + 1e-9}, {"rmse": champion}, down).promote, champion


@pytest.mark.parametrize(
    ("rel", "champion", "boundary", "beyond"),
    [
        (0.0, 0.9, 0.9, 0.8999),  # no degradation tolerated at all
        (0.05, 0.8, 0.76, 0.7599),
        (0.5, 0.8, 0.4, 0.3999),
    ],
)
def test_relative_tolerance_is_configurable(make_policy, rel, champion, boundary, beyond):
    policy = make_policy(accuracy={"max_relative_degradation": rel})

    assert judge({"accuracy": boundary}, {"accuracy": champion}, policy).promote is True
    assert judge({"accuracy": beyond}, {"accuracy": champion}, policy).promote is False


# --- negative champion values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "promote"),
    [
        (0.1, True),
        (-0.5, True),
        (-0.505, True),  # 1% of |-0.5| below
        (-0.5051, False),
        (-0.495, True),
    ],
)
def test_negative_champion_uses_its_absolute_value(make_policy, candidate, promote):
    verdict = judge({"r2": candidate}, {"r2": -0.5}, make_policy(r2={}))

    assert verdict.promote is promote
    assert verdict.checks[0].threshold == pytest.approx(-0.505, abs=1e-15)


def test_zero_champion_tolerates_nothing_without_an_absolute_tolerance(make_policy):
    assert judge({"r2": 0.0}, {"r2": 0.0}, make_policy(r2={})).promote is True
    assert judge({"r2": -1e-6}, {"r2": 0.0}, make_policy(r2={})).promote is False
    assert judge({"r2": -0.01}, {"r2": 0.0}, make_policy(r2={"max_absolute_degradation": 0.01})).promote is True


# --- the absolute tolerance: the larger of the two slacks applies -----------------------------------


@pytest.mark.parametrize(
    ("metric", "absolute", "champion", "boundary", "beyond"),
    [
        ("accuracy", 0.05, 0.9, 0.85, 0.8499),  # absolute (0.05) > relative (0.009)
        ("accuracy", 0.001, 0.9, 0.891, 0.8909),  # relative (0.009) > absolute (0.001)
        ("rmse", 0.5, 10.0, 10.5, 10.5001),  # absolute (0.5) > relative (0.1)
        ("rmse", 0.01, 10.0, 10.1, 10.1001),  # relative wins
        ("mae", 0.0, 2.0, 2.02, 2.0201),  # absolute 0 leaves the relative tolerance
    ],
)
def test_absolute_tolerance_widens_but_never_narrows(make_policy, metric, absolute, champion, boundary, beyond):
    policy = make_policy(**{metric: {"max_absolute_degradation": absolute}})

    assert judge({metric: boundary}, {metric: champion}, policy).promote is True
    assert judge({metric: beyond}, {metric: champion}, policy).promote is False


# --- absolute gates and the first model --------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "candidate", "promote"),
    [
        ({"min": 0.8}, 0.8, True),  # exactly on the gate passes
        ({"min": 0.8}, 0.7999, False),
        ({"max": 0.99}, 0.99, True),
        ({"max": 0.99}, 0.9901, False),
        ({"min": 0.8, "max": 0.99}, 0.9, True),
    ],
)
def test_gates_are_inclusive(make_policy, rule, candidate, promote):
    verdict = judge({"accuracy": candidate}, None, make_policy(accuracy=rule))

    assert verdict.promote is promote


def test_lower_is_better_metric_has_gates_too(make_policy):
    policy = make_policy(rmse={"max": 5.0})

    assert judge({"rmse": 5.0}, None, policy).promote is True
    assert judge({"rmse": 5.01}, None, policy).promote is False


def test_first_model_is_judged_on_the_gates_only(make_policy):
    policy = make_policy(accuracy={"min": 0.5}, f1_macro={})

    verdict = judge({"accuracy": 0.5, "f1_macro": 0.01}, None, policy)

    assert verdict.promote is True
    assert SafeguardCheck("accuracy", "gate", 0.5, None, None, 0.5, True, "accuracy 0.5 must be >= 0.5") in verdict.checks
    assert all(c.kind != "tolerance" and c.champion is None and c.passed for c in verdict.checks)
    assert verdict.reasons == ("every check passed",)


def test_first_model_without_gates_is_promoted(make_policy):
    verdict = judge({"accuracy": 0.1, "f1_macro": 0.1, "f1_weighted": 0.1}, None,
                    make_policy(accuracy={}, f1_macro={}, f1_weighted={}))

    assert verdict.promote is True
    assert all(c.kind != "tolerance" and c.passed for c in verdict.checks)


def test_first_model_failing_a_gate_is_rejected(make_policy):
    verdict = judge({"r2": 0.1}, None, make_policy(r2={"min": 0.2}))

    assert verdict.promote is False
    assert verdict.reasons == ("r2 0.1 must be >= 0.2",)


def test_gates_apply_even_when_the_candidate_beats_the_champion(make_policy):
    verdict = judge({"accuracy": 0.7}, {"accuracy": 0.6}, make_policy(accuracy={"min": 0.8}))

    assert verdict.promote is False
    assert [(c.kind, c.passed) for c in verdict.checks] == [("gate", False), ("tolerance", True)]


# --- missing values -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "champion"),
    [
        ({}, {"accuracy": 0.9, "f1_macro": 0.9}),  # judged against a champion
        ({"min": 0.5}, {"accuracy": 0.9, "f1_macro": 0.9}),  # gated and judged
        ({"min": 0.5}, None),  # first model with a gate
        ({}, {"accuracy": 0.9}),  # a champion scored before the metric existed
        ({}, None),  # first model without a gate: still a missing score
    ],
    ids=["champion", "champion+gate", "first+gate", "champion-without-metric", "first"],
)
def test_a_missing_candidate_metric_fails(make_policy, rule, champion):
    policy = make_policy(accuracy={}, f1_macro=rule)

    verdict = judge({"accuracy": 0.95}, champion, policy)

    assert verdict.promote is False
    failed = [c for c in verdict.checks if not c.passed]
    assert failed and all(c.metric == "f1_macro" and c.candidate is None for c in failed)


def test_a_missing_candidate_metric_reports_no_difference(make_policy):
    verdict = judge({}, {"accuracy": 0.9}, make_policy(accuracy={}))

    (check,) = verdict.checks
    assert (check.candidate, check.champion, check.difference, check.passed) == (None, 0.9, None, False)
    assert check.threshold == pytest.approx(0.891, abs=1e-15)
    assert verdict.reasons == (check.detail,)


def test_a_metric_the_champion_never_had_is_judged_on_its_gates(make_policy):
    """A metric added to the spec after the champion was scored cannot be compared with it."""
    policy = make_policy(accuracy={}, f1_macro={"min": 0.5})

    verdict = judge({"accuracy": 0.9, "f1_macro": 0.6}, {"accuracy": 0.9}, policy)

    assert verdict.promote is True
    assert [(c.metric, c.kind) for c in verdict.checks] == [("accuracy", "tolerance"), ("f1_macro", "gate")]


def test_scores_the_policy_does_not_name_are_ignored(make_policy):
    verdict = judge({"accuracy": 0.9, "r2": -100.0}, {"accuracy": 0.9, "r2": 0.9}, make_policy(accuracy={}))

    assert verdict.promote is True
    assert [c.metric for c in verdict.checks] == ["accuracy"]


# --- every check reports every number, and the verdict its reasons ---------------------------------------


def test_tolerance_check_reports_both_values_difference_threshold_and_outcome(make_policy):
    verdict = judge({"accuracy": 0.88}, {"accuracy": 0.9}, make_policy(accuracy={}))

    (check,) = verdict.checks
    assert (check.metric, check.kind, check.candidate, check.champion, check.passed) == (
        "accuracy", "tolerance", 0.88, 0.9, False)
    assert check.difference == pytest.approx(-0.02, abs=1e-15)
    assert check.threshold == pytest.approx(0.891, abs=1e-15)
    assert check.detail == ("accuracy 0.88 vs champion 0.9: must be >= 0.891 (tolerance 1.00% relative)")


def test_lower_is_better_check_reports_a_ceiling(make_policy):
    verdict = judge({"rmse": 9.5}, {"rmse": 10.0}, make_policy(rmse={"max_absolute_degradation": 0.5}))

    (check,) = verdict.checks
    assert (check.candidate, check.champion, check.difference, check.threshold, check.passed) == (
        9.5, 10.0, -0.5, 10.5, True)
    assert check.detail == "rmse 9.5 vs champion 10.0: must be <= 10.5 (tolerance 1.00% relative, 0.5 absolute)"


def test_checks_come_in_policy_order_gates_before_tolerance(make_policy):
    policy = make_policy(f1_macro={"min": 0.1, "max": 1.0}, accuracy={"min": 0.2})

    verdict = judge({"accuracy": 0.9, "f1_macro": 0.9}, {"accuracy": 0.9, "f1_macro": 0.9}, policy)

    assert [(c.metric, c.kind, c.threshold) for c in verdict.checks] == [
        ("f1_macro", "gate", 0.1),
        ("f1_macro", "gate", 1.0),
        ("f1_macro", "tolerance", pytest.approx(0.891)),
        ("accuracy", "gate", 0.2),
        ("accuracy", "tolerance", pytest.approx(0.891)),
    ]


def test_one_failing_metric_rejects_and_is_the_only_reason(make_policy):
    policy = make_policy(rmse={}, mae={}, r2={"min": 0.2})

    verdict = judge({"rmse": 50.0, "mae": 41.0, "r2": 0.45}, {"rmse": 50.0, "mae": 40.0, "r2": 0.44}, policy)

    assert verdict.promote is False
    assert [c.metric for c in verdict.checks if not c.passed] == ["mae"]
    assert verdict.reasons == ("mae 41.0 vs champion 40.0: must be <= 40.4 (tolerance 1.00% relative)",)


def test_every_failure_is_a_reason_in_check_order(make_policy):
    policy = make_policy(accuracy={"min": 0.8}, f1_macro={})

    verdict = judge({"accuracy": 0.7, "f1_macro": 0.5}, {"accuracy": 0.9, "f1_macro": 0.9}, policy)

    assert verdict.reasons == (
        "accuracy 0.7 must be >= 0.8",
        "accuracy 0.7 vs champion 0.9: must be >= 0.891 (tolerance 1.00% relative)",
        "f1_macro 0.5 vs champion 0.9: must be >= 0.891 (tolerance 1.00% relative)",
    )


def test_nan_candidate_score_fails(make_policy):
    verdict = judge({"accuracy": float("nan")}, {"accuracy": 0.9}, make_policy(accuracy={"min": 0.5}))

    assert verdict.promote is False
    assert [c.passed for c in verdict.checks] == [False, False]


def test_spec_default_policy_judges_every_task_metric(make_spec):
    policy = make_spec().safeguard
    champion = {"accuracy": 0.9, "f1_macro": 0.8, "f1_weighted": 0.85}

    assert judge(dict(champion), champion, policy).promote is True
    assert judge({**champion, "f1_weighted": 0.84}, champion, policy).promote is False
    assert [c.metric for c in judge(champion, champion, policy).checks] == ["accuracy", "f1_macro", "f1_weighted"]


def test_verdict_and_checks_are_frozen(make_policy):
    verdict = judge({"accuracy": 0.9}, {"accuracy": 0.9}, make_policy(accuracy={}))

    with pytest.raises(AttributeError):
        verdict.promote = False  # type: ignore[misc]
    with pytest.raises(AttributeError):
        verdict.checks[0].passed = False  # type: ignore[misc]


# --- the optional "not significantly worse" check on paired-bootstrap intervals ------------------------------


def _interval(low: float, high: float, observed: float | None = None) -> Interval:
    return Interval(observed=(low + high) / 2 if observed is None else observed, low=low, high=high,
                    confidence=0.95, resamples=1000)


@pytest.fixture
def significance_policy(make_policy):
    def make(**rules: dict) -> SafeguardSpec:
        return make_policy(**rules).model_copy(update={"require_not_significantly_worse": True})

    return make


@pytest.mark.parametrize(
    ("metric", "low", "high", "passed"),
    [
        ("accuracy", -0.02, 0.01, True),  # interval straddles 0: not significantly worse
        ("accuracy", -0.02, 0.0, True),  # upper bound exactly 0 reaches "no worse"
        ("accuracy", -0.02, -0.001, False),  # entirely below 0: significantly worse
        ("r2", 0.01, 0.05, True),  # significantly better
        ("rmse", -0.5, 0.3, True),
        ("rmse", 0.0, 0.3, True),  # lower bound exactly 0
        ("rmse", 0.001, 0.3, False),  # entirely above 0: significantly worse
        ("mae", -0.3, -0.1, True),
    ],
)
def test_significance_check_direction(significance_policy, metric, low, high, passed):
    verdict = judge({metric: 1.0}, {metric: 1.0}, significance_policy(**{metric: {}}),
                    {metric: _interval(low, high)})

    assert verdict.promote is passed
    significance = [c for c in verdict.checks if c.kind == "significance"]
    assert [(c.metric, c.threshold, c.passed) for c in significance] == [(metric, 0.0, passed)]


def test_significance_failure_explains_the_interval(significance_policy):
    verdict = judge({"accuracy": 0.9}, {"accuracy": 0.9}, significance_policy(accuracy={}),
                    {"accuracy": _interval(-0.03, -0.01, observed=-0.02)})

    assert verdict.reasons == ("accuracy difference -0.02, 95% interval [-0.03, -0.01]: significantly worse "
                               "(upper bound must reach 0)",)


def test_significance_is_reported_only_when_required(make_policy):
    intervals = {"accuracy": _interval(-0.03, -0.01)}

    verdict = judge({"accuracy": 0.9}, {"accuracy": 0.9}, make_policy(accuracy={}), intervals)

    assert verdict.promote is True
    assert [c.kind for c in verdict.checks] == ["tolerance"]


def test_first_model_has_no_significance_check(significance_policy):
    verdict = judge({"accuracy": 0.9}, None, significance_policy(accuracy={}), {"accuracy": _interval(-0.3, -0.1)})

    assert verdict.promote is True
    assert all(c.kind != "significance" for c in verdict.checks)


@pytest.mark.parametrize("intervals", [None, {}, {"f1_macro": _interval(-0.01, 0.01)}],
                         ids=["none", "empty", "other-metric"])
def test_a_required_significance_check_without_its_interval_fails(significance_policy, intervals):
    """Evidence the policy requires but nobody supplied must not count as a pass."""
    verdict = judge({"accuracy": 0.9, "f1_macro": 0.9}, {"accuracy": 0.9, "f1_macro": 0.9},
                    significance_policy(accuracy={}, f1_macro={}), intervals)

    assert verdict.promote is False
    assert any(c.metric == "accuracy" and not c.passed for c in verdict.checks)
