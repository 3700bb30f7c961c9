"""The safeguard: may a candidate replace the champion?

For a metric where higher is better, with champion value ``c`` and candidate
value ``n``, the tolerated floor is ``c - max(rel * |c|, abs)`` where ``rel`` is
the allowed relative degradation (default 1%) and ``abs`` the allowed absolute
degradation (default 0). The candidate passes when ``n >= floor``; for a metric
where lower is better the ceiling is ``c + max(rel * |c|, abs)`` and it passes
when ``n <= ceiling``. Exactly on the boundary passes. Every metric must also
lie within its absolute gates ``[min, max]``. With no champion only the gates
apply. With ``require_not_significantly_worse``, each metric's paired-bootstrap
interval of (candidate − champion) must also reach the "no worse" side: its
upper bound ≥ 0 where higher is better, its lower bound ≤ 0 where lower is
better. The candidate is promoted only when every check passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from refit.core.bootstrap import Interval
from refit.specs import MetricRule, SafeguardSpec

# Floating point noise must not turn an exact boundary into a failure.
_EPS = 1e-12


@dataclass(frozen=True)
class SafeguardCheck:
    """One check of the verdict; the decision event carries it as ``refit.events.Check``."""

    metric: str
    kind: str  # "gate" | "tolerance" | "significance"
    candidate: float | None
    champion: float | None
    difference: float | None
    threshold: float | None
    passed: bool
    detail: str


@dataclass(frozen=True)
class Verdict:
    promote: bool
    checks: tuple[SafeguardCheck, ...]

    @property
    def reasons(self) -> tuple[str, ...]:
        failed = [c.detail for c in self.checks if not c.passed]
        return tuple(failed) if failed else ("every check passed",)


def _gates(rule: MetricRule, value: float | None) -> list[SafeguardCheck]:
    checks = []
    for bound, threshold in (("min", rule.min), ("max", rule.max)):
        if threshold is None:
            continue
        ok = value is not None and (value >= threshold - _EPS if bound == "min" else value <= threshold + _EPS)
        op = ">=" if bound == "min" else "<="
        checks.append(SafeguardCheck(rule.name, "gate", value, None, None, threshold, ok,
                            f"{rule.name} {value} must be {op} {threshold}"))
    return checks


def _tolerance(rule: MetricRule, value: float | None, champion: float) -> SafeguardCheck:
    slack = max(rule.max_relative_degradation * abs(champion), rule.max_absolute_degradation or 0.0)
    if rule.higher_is_better:
        threshold = champion - slack
        ok = value is not None and value >= threshold - _EPS
        op = ">="
    else:
        threshold = champion + slack
        ok = value is not None and value <= threshold + _EPS
        op = "<="
    diff = None if value is None else value - champion
    detail = (f"{rule.name} {value} vs champion {champion}: must be {op} {threshold:.6g} "
              f"(tolerance {rule.max_relative_degradation:.2%} relative"
              f"{'' if rule.max_absolute_degradation is None else f', {rule.max_absolute_degradation} absolute'})")
    return SafeguardCheck(rule.name, "tolerance", value, champion, diff, threshold, ok, detail)


def _significance(rule: MetricRule, interval: Interval) -> SafeguardCheck:
    if rule.higher_is_better:
        ok, side = interval.high >= -_EPS, "upper"
    else:
        ok, side = interval.low <= _EPS, "lower"
    detail = (f"{rule.name} difference {interval.observed:+.4g}, {interval.confidence:.0%} interval "
              f"[{interval.low:+.4g}, {interval.high:+.4g}]: {'not ' if ok else ''}significantly worse "
              f"({side} bound must reach 0)")
    # candidate/champion stay empty: this check is about the difference, not about either value.
    return SafeguardCheck(rule.name, "significance", None, None, interval.observed, 0.0, ok, detail)


def judge(candidate: Mapping[str, float], champion: Mapping[str, float] | None,
          policy: SafeguardSpec, intervals: Mapping[str, Interval] | None = None) -> Verdict:
    """Judge candidate scores against champion scores (both measured on the same holdout)."""
    checks: list[SafeguardCheck] = []
    for rule in policy.metrics:
        value = candidate.get(rule.name)
        gates = _gates(rule, value)
        compared = champion is not None and rule.name in champion
        if value is None and not gates and not compared:
            gates = [SafeguardCheck(rule.name, "gate", None, None, None, None, False,
                           f"{rule.name} was not measured for the candidate")]
        checks.extend(gates)
        if compared:
            assert champion is not None
            checks.append(_tolerance(rule, value, champion[rule.name]))
            if policy.require_not_significantly_worse:
                interval = (intervals or {}).get(rule.name)
                checks.append(_significance(rule, interval) if interval is not None else SafeguardCheck(
                    rule.name, "significance", None, None, None, 0.0, False,
                    f"{rule.name}: no confidence interval, so 'not significantly worse' cannot be shown"))
    return Verdict(promote=all(c.passed for c in checks), checks=tuple(checks))
