"""Streaming change detectors for a model's live error stream.

Each detector eats one value at a time — ``1.0``/``0.0`` for a wrong/right classification,
or the absolute error of a regression — and says whether the stream's mean has just
changed. The interface is River's (``river.drift``): ``update(x)`` then the read-only
``drift_detected``, true only on the update that detected the change; ``reset()`` forgets
everything. The detectors are pure and synchronous, and deterministic (neither draws random
numbers), so the same stream always alarms at the same positions.

* :class:`PageHinkley` — a CUSUM of deviations from the running mean; cheap, one-sided
  (rising error by default), its parameters are in the stream's units.
* :class:`ADWIN` — adaptive windowing (Bifet & Gavaldà, 2007): keeps the longest recent
  window whose older and newer parts have statistically equal means; scale-free, with a
  false-alarm probability bounded by ``delta`` per check.
* :class:`CUSUM` — Page's CUSUM on values standardised by the mean and spread of those before
  them (self-starting); tuned to a rise of a quarter of a standard deviation, which it finds
  several times sooner than ADWIN on continuous values (a regression's errors).
* :class:`BernoulliCUSUM` — the same CUSUM on the likelihood ratio of a doubled error rate, for
  0/1 errors (standardised, one rare error is many standard deviations, and a few close
  together would alarm).

Defaults fit 0/1 error streams; ``docs/drift.md`` gives their measured false-alarm counts
and detection delays.

A model wrong on one sample in four, then on three in four, from sample 400 on:

>>> stream = [0.0, 0.0, 0.0, 1.0] * 100 + [1.0, 1.0, 0.0, 1.0] * 50
>>> def alarms(detector):
...     found = []
...     for i, error in enumerate(stream):
...         detector.update(error)
...         if detector.drift_detected:
...             found.append(i)
...     return found
>>> alarms(PageHinkley()), alarms(ADWIN())
([443], [447, 479])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable


@runtime_checkable
class ChangeDetector(Protocol):
    """What the monitor needs of a detector; every implementation passes one contract suite."""

    @property
    def drift_detected(self) -> bool: ...

    def update(self, x: float) -> None: ...

    def reset(self) -> None: ...


def _finite(x: float) -> float:
    value = float(x)
    if not math.isfinite(value):
        raise ValueError(f"a change detector needs finite values, got {x!r}")
    return value


class PageHinkley:
    """Page-Hinkley test for a change in the mean of a stream.

    With running mean ``m_t`` the statistic is ``S_t = sum(x_i - m_i - delta)``; a rise is
    declared when ``S_t - min(S) > threshold`` (``mode="up"``), a fall symmetrically
    (``"down"``), either with ``"both"``. ``delta`` is the change in the mean that is
    tolerated (the statistic drifts down by ``delta`` per sample while nothing changes), and
    ``threshold`` trades delay for false alarms. Both are in the stream's units: the
    defaults suit 0/1 errors; for absolute errors scale them by the errors' typical size.
    After a detection the detector starts afresh.
    """

    def __init__(self, delta: float = 0.03, threshold: float = 20.0, min_instances: int = 30,
                 mode: Literal["up", "down", "both"] = "up") -> None:
        if delta < 0 or threshold <= 0 or min_instances < 1 or mode not in ("up", "down", "both"):
            raise ValueError("PageHinkley needs delta >= 0, threshold > 0, min_instances >= 1 "
                             "and mode up|down|both")
        self.delta, self.threshold, self.mode = delta, threshold, mode
        self.min_instances = min_instances
        self.reset()

    @property
    def drift_detected(self) -> bool:
        return self._drift

    @property
    def n(self) -> int:
        """Values seen since the last detection or reset."""
        return self._n

    def reset(self) -> None:
        self._drift = False
        self._n = 0
        self._mean = 0.0
        self._up = self._up_min = self._down = self._down_max = 0.0

    def update(self, x: float) -> None:
        value = _finite(x)
        self._drift = False
        self._n += 1
        self._mean += (value - self._mean) / self._n
        self._up += value - self._mean - self.delta
        self._down += value - self._mean + self.delta
        self._up_min = min(self._up_min, self._up)
        self._down_max = max(self._down_max, self._down)
        if self._n < self.min_instances:
            return
        rose = self.mode != "down" and self._up - self._up_min > self.threshold
        fell = self.mode != "up" and self._down_max - self._down > self.threshold
        if rose or fell:
            self.reset()
            self._drift = True


class ADWIN:
    """ADWIN2: adaptive windowing over an exponential histogram of buckets.

    The window is kept in buckets of 1, 2, 4, … values (at most ``max_buckets`` of each
    size), each holding its sum and variance, so memory and time per check grow with the log
    of the window. Every ``clock`` updates (once the window is longer than ``grace_period``)
    every split of the window into an older and a newer part — both at least
    ``min_window_length`` long — is tested; while some split's means differ by more than the
    Hoeffding/Bernstein bound at confidence ``delta`` the oldest bucket is dropped and a
    drift is reported. The window is not emptied: it shrinks to the values after the change.
    """

    def __init__(self, delta: float = 0.002, clock: int = 32, max_buckets: int = 5,
                 min_window_length: int = 5, grace_period: int = 10) -> None:
        if (not 0 < delta < 1 or clock < 1 or max_buckets < 2 or min_window_length < 1
                or grace_period < 0):
            raise ValueError("ADWIN needs 0 < delta < 1, clock >= 1, max_buckets >= 2, "
                             "min_window_length >= 1 and grace_period >= 0")
        self.delta, self.clock, self.max_buckets = delta, clock, max_buckets
        self.min_window_length, self.grace_period = min_window_length, grace_period
        self.reset()

    @property
    def drift_detected(self) -> bool:
        return self._drift

    @property
    def width(self) -> int:
        """Values in the current window."""
        return self._width

    @property
    def estimation(self) -> float:
        """Mean of the current window (0 when empty)."""
        return self._total / self._width if self._width else 0.0

    @property
    def variance(self) -> float:
        """Population variance of the current window (0 when empty)."""
        return self._m2 / self._width if self._width else 0.0

    def reset(self) -> None:
        self._drift = False
        # _rows[i] holds buckets of 2**i values as (sum, M2), oldest first; all of row i+1 is
        # older than all of row i.
        self._rows: list[list[tuple[float, float]]] = [[]]
        self._width = 0
        self._total = 0.0
        self._m2 = 0.0  # sum of squared deviations from the window mean
        self._ticks = 0

    def state(self) -> dict[str, Any]:
        """Everything the window holds, as plain JSON values: :meth:`restore` continues from it exactly."""
        return {"rows": [[list(b) for b in row] for row in self._rows], "width": self._width,
                "total": self._total, "m2": self._m2, "ticks": self._ticks, "drift": self._drift}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state` (a restarted monitor keeps its window and its clock)."""
        self._rows = [[(float(s), float(v)) for s, v in row] for row in state["rows"]] or [[]]
        self._width, self._total, self._m2 = int(state["width"]), float(state["total"]), float(state["m2"])
        self._ticks, self._drift = int(state["ticks"]), bool(state["drift"])

    def update(self, x: float) -> None:
        value = _finite(x)
        if self._width:
            mean = self._total / self._width
            self._m2 += self._width * (value - mean) ** 2 / (self._width + 1)
        self._width += 1
        self._total += value
        self._rows[0].append((value, 0.0))
        self._compress()
        self._ticks += 1
        self._drift = False
        if self._ticks % self.clock == 0 and self._width > self.grace_period:
            while self._cut_found():
                self._drift = True
                self._drop_oldest()

    def _compress(self) -> None:
        for i, row in enumerate(self._rows):
            if len(row) <= self.max_buckets:
                break
            (s1, v1), (s2, v2) = row.pop(0), row.pop(0)
            size = 2**i
            merged = (s1 + s2, v1 + v2 + size * (s1 / size - s2 / size) ** 2 / 2)
            if i + 1 == len(self._rows):
                self._rows.append([])
            self._rows[i + 1].append(merged)

    def _drop_oldest(self) -> None:
        i = max(j for j, row in enumerate(self._rows) if row)
        total, m2 = self._rows[i].pop(0)
        size, rest = 2**i, self._width - 2**i
        if rest:
            rest_mean, mean = (self._total - total) / rest, total / size
            self._m2 -= m2 + size * rest * (rest_mean - mean) ** 2 / self._width
        self._m2 = max(self._m2, 0.0) if rest else 0.0
        self._width, self._total = rest, self._total - total
        while len(self._rows) > 1 and not self._rows[-1]:
            self._rows.pop()

    def _cut_found(self) -> bool:
        """Whether some older/newer split of the window has significantly different means."""
        if self._width < 2 * self.min_window_length:
            return False
        variance = self._m2 / self._width
        log_term = math.log(2 * math.log(self._width) / self.delta)
        n0, s0 = 0, 0.0
        for i in range(len(self._rows) - 1, -1, -1):
            size = 2**i
            for total, _ in self._rows[i]:
                n0, s0 = n0 + size, s0 + total
                n1 = self._width - n0
                if n1 < self.min_window_length:
                    return False
                if n0 < self.min_window_length:
                    continue
                m = 1 / (n0 - self.min_window_length + 1) + 1 / (n1 - self.min_window_length + 1)
                bound = math.sqrt(2 * m * variance * log_term) + 2 / 3 * m * log_term
                if abs(s0 / n0 - (self._total - s0) / n1) >= bound:
                    return True
        return False


class CUSUM:
    """Page's upper CUSUM for a rise in the mean, self-starting.

    Each value is standardised by the mean and standard deviation of the values before it,
    ``z = (x - mean) / sd``; the statistic ``S = max(0, S + z - k)`` alarms above ``h``, and the
    detector then starts afresh (baseline too: the values after a change are the new normal).
    Nothing is tested before ``warmup`` values have set the baseline. ``k`` is half the rise it
    is tuned to (0.125: a rise of a quarter of a standard deviation, about what a 20 % rise of a
    regression's RMSE does to its absolute errors); ``h`` trades delay for false alarms. The defaults
    were measured on the monitor's regression signals (absolute errors over three times the holdout
    RMSE, capped at 1): 16 false alarms in 1,000,000 stationary values (ADWIN: 0), a 40 % rise of the
    RMSE found after a median of 71 values (ADWIN: 248; ``docs/drift.md``).
    """

    kind = "normal"

    def __init__(self, k: float = 0.125, h: float = 31.0, warmup: int = 100) -> None:
        if k < 0 or h <= 0 or warmup < 2:
            raise ValueError("CUSUM needs k >= 0, h > 0 and warmup >= 2")
        self.k, self.h, self.warmup = k, h, warmup
        self.reset()

    @property
    def drift_detected(self) -> bool:
        return self._drift

    @property
    def statistic(self) -> float:
        return self._s

    def reset(self) -> None:
        self._drift = False
        self._n, self._mean, self._m2, self._s = 0, 0.0, 0.0, 0.0

    def state(self) -> dict[str, Any]:
        """Everything it holds, as plain JSON values: :meth:`restore` continues from it exactly."""
        return {"kind": self.kind, "n": self._n, "mean": self._mean, "m2": self._m2, "s": self._s,
                "drift": self._drift}

    def restore(self, state: Mapping[str, Any]) -> None:
        self._n, self._mean, self._m2 = int(state["n"]), float(state["mean"]), float(state["m2"])
        self._s, self._drift = float(state["s"]), bool(state["drift"])

    def update(self, x: float) -> None:
        value = _finite(x)
        self._drift = False
        if self._n >= self.warmup:
            self._s = max(0.0, self._s + self._step(value))
            if self._s > self.h:
                self.reset()
                self._drift = True
                return
        self._n += 1
        delta = value - self._mean
        self._mean += delta / self._n
        self._m2 += delta * (value - self._mean)

    def _step(self, value: float) -> float:
        """The statistic's increment for ``value``, against the baseline of the values before it."""
        sd = math.sqrt(self._m2 / (self._n - 1)) or 1e-12  # a constant baseline: any rise is one
        return (value - self._mean) / sd - self.k


class BernoulliCUSUM(CUSUM):
    """Page's CUSUM of the likelihood ratio for 0/1 errors: has the error rate grown ``ratio``-fold?

    The baseline rate is the smoothed rate of the values before, ``p0 = (errors + 1) / (n + 2)``; each
    value adds ``log(p1 / p0)`` for an error and ``log((1 - p1) / (1 - p0))`` for a right answer, with
    ``p1 = min(ratio * p0, (1 + p0) / 2)``, and ``h`` is in units of log-likelihood (a false alarm
    about every ``exp(h)`` values when ``p0`` is known). The standardised :class:`CUSUM` is wrong for
    these: one error of a model right 97 % of the time is six standard deviations.
    """

    kind = "bernoulli"

    def __init__(self, ratio: float = 2.0, h: float = 9.0, warmup: int = 100) -> None:
        if ratio <= 1:
            raise ValueError("BernoulliCUSUM needs ratio > 1")
        super().__init__(k=0.0, h=h, warmup=warmup)
        self.ratio = ratio

    def _step(self, value: float) -> float:
        p0 = (self._mean * self._n + 1) / (self._n + 2)
        p1 = min(self.ratio * p0, (1 + p0) / 2)
        return value * math.log(p1 / p0) + (1 - value) * math.log((1 - p1) / (1 - p0))


def restored_cusum(state: Mapping[str, Any]) -> CUSUM:
    """The :class:`CUSUM` or :class:`BernoulliCUSUM` (default parameters) a :meth:`CUSUM.state` was taken of."""
    detector = BernoulliCUSUM() if state.get("kind") == BernoulliCUSUM.kind else CUSUM()
    detector.restore(state)
    return detector


def change_point(values: Sequence[float], min_segment: int = 10) -> int:
    """Where the mean of ``values`` most likely changed: the index of the first value after the change.

    The least-squares split for one change in the mean (the CUSUM estimator): the ``k`` that maximises
    ``|mean(values[k:]) - mean(values[:k])| * sqrt(k (n - k) / n)``, each side at least ``min_segment``
    long; 0 when ``values`` are too few to split. A detector says *that* the mean changed; ADWIN's
    window after a detection starts at a bucket boundary, often hundreds of values before the change
    (its buckets double in size with age), and a window started there mixes two concepts. This says
    *where*:

    >>> change_point([0.0, 1.0, 0.0, 0.0] * 10 + [1.0] * 30)  # wrong on one in four, then always
    40
    >>> change_point([0.0] * 5 + [1.0] * 5)
    0
    """
    n = len(values)
    if n < 2 * min_segment:
        return 0
    total, prefix, best, best_k = math.fsum(values), 0.0, -1.0, 0
    for k in range(1, n - min_segment + 1):
        prefix += values[k - 1]
        if k < min_segment:
            continue
        score = abs((total - prefix) / (n - k) - prefix / k) * math.sqrt(k * (n - k) / n)
        if score > best:
            best, best_k = score, k
    return best_k
