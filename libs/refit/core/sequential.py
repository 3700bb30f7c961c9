"""An anytime-valid sequential test of a challenger against the champion on paired live outcomes.

Each labeled request that both models answered gives one paired outcome ``d``: ``+1`` when the
challenger's loss is smaller, ``-1`` when it is larger, ``0`` on a tie (0/1 loss for
classification, absolute error for regression). Counting signs, not losses, is what lets one
extreme row weigh as one row, and keeps ``d`` bounded whatever the labels.

The test is a betting e-process (Waudby-Smith & Ramdas, 2023; Shafer, 2021). For a bet ``λ`` in
``[0, 1)``, the wealth ``W_t(λ) = Π (1 + λ d_i)`` is a nonnegative supermartingale while the
challenger is no better (``E[d] ≤ 0``); the test keeps the average over a fixed grid of bets,
itself such a supermartingale. By Ville's inequality the chance that it *ever* reaches
``1/alpha`` under that hypothesis is at most ``alpha``. So the test may be read after every label,
stopped at any time, and never inflates its error rate by being looked at: the property a
monitor checking after each label needs, and a fixed-sample test lacks.

The same bets on ``-d`` tell when the challenger is significantly *worse*: after a promotion,
with the previous champion as challenger, that is the evidence for a rollback. Neither side
decides on fewer than ``min_pairs`` pairs.

A challenger that wins 55% of the pairs, loses 25% and ties 20% (``E[d] = 0.3``):

>>> import numpy as np
>>> rng = np.random.default_rng(7)
>>> test = PairedTest(alpha=0.05, min_pairs=40)
>>> for d in rng.choice([1, -1, 0], size=400, p=[0.55, 0.25, 0.20]):
...     test.update(float(d))
...     if test.better:
...         break
>>> test.better, test.pairs
(True, 43)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# The bets averaged: small ones win slowly but surely against small edges, large ones quickly
# against large edges; the average is never far below the best of them in hindsight.
BETS: tuple[float, ...] = (0.025, 0.05, 0.1, 0.2, 0.35, 0.5)


def paired_outcome(champion_loss: float, challenger_loss: float) -> int:
    """``+1`` when the challenger did better on this row, ``-1`` when worse, ``0`` on a tie."""
    if not (math.isfinite(champion_loss) and math.isfinite(challenger_loss)):
        raise ValueError(f"losses must be finite, got {champion_loss!r} and {challenger_loss!r}")
    return (challenger_loss < champion_loss) - (challenger_loss > champion_loss)


def log_wealth_paths(outcomes: np.ndarray, bets: Sequence[float] = BETS) -> np.ndarray:
    """The log of the mixture wealth after each outcome along the last axis (the test's whole path,
    for many streams at once: ``outcomes`` of shape (..., n) gives (..., n))."""
    d = np.asarray(outcomes, dtype=np.float64)
    if np.any(np.abs(d) > 1) or not np.all(np.isfinite(d)):
        raise ValueError("paired outcomes must lie in [-1, 1]")
    per_bet = np.cumsum(np.log1p(np.multiply.outer(d, np.asarray(bets))), axis=-2)  # (..., n, bets)
    return np.logaddexp.reduce(per_bet, axis=-1) - math.log(len(bets))


@dataclass
class PairedTest:
    """The running test for one challenger against one champion (``update`` then read)."""

    alpha: float = 0.05
    min_pairs: int = 1
    bets: tuple[float, ...] = BETS
    pairs: int = 0
    wins: int = 0
    losses: int = 0
    _up: list[float] = field(default_factory=list)  # log wealth per bet, betting the challenger is better
    _down: list[float] = field(default_factory=list)  # … betting it is worse

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1 or self.min_pairs < 1 or not all(0 < b < 1 for b in self.bets):
            raise ValueError("PairedTest needs 0 < alpha < 1, min_pairs >= 1 and bets in (0, 1)")
        self._up = self._up or [0.0] * len(self.bets)
        self._down = self._down or [0.0] * len(self.bets)

    def update(self, d: float) -> None:
        if not -1 <= d <= 1:  # also refuses NaN
            raise ValueError(f"a paired outcome lies in [-1, 1], got {d!r}")
        self.pairs += 1
        self.wins += d > 0
        self.losses += d < 0
        for i, bet in enumerate(self.bets):
            self._up[i] += math.log1p(bet * d)
            self._down[i] += math.log1p(-bet * d)

    @staticmethod
    def _mixture(logs: list[float]) -> float:
        top = max(logs)
        return top + math.log(sum(math.exp(v - top) for v in logs) / len(logs))

    @property
    def e_better(self) -> float:
        """The evidence that the challenger is better: reject "no better" once it reaches 1/alpha."""
        return math.exp(min(self._mixture(self._up), 700.0))

    @property
    def e_worse(self) -> float:
        return math.exp(min(self._mixture(self._down), 700.0))

    @property
    def better(self) -> bool:
        return self.pairs >= self.min_pairs and self.e_better >= 1 / self.alpha

    @property
    def worse(self) -> bool:
        return self.pairs >= self.min_pairs and self.e_worse >= 1 / self.alpha

    @staticmethod
    def confidence(e_value: float) -> float:
        """``1 - 1/e``, in [0, 1]: how close the evidence is to a decision (``1 - alpha`` at the threshold)."""
        return max(0.0, 1.0 - 1.0 / e_value) if e_value > 0 else 0.0

    def as_dict(self) -> dict[str, float | int | bool]:
        return {"pairs": self.pairs, "wins": self.wins, "losses": self.losses,
                "ties": self.pairs - self.wins - self.losses, "alpha": self.alpha, "min_pairs": self.min_pairs,
                "e_better": self.e_better, "e_worse": self.e_worse, "better": self.better, "worse": self.worse,
                "confidence_better": self.confidence(self.e_better),
                "confidence_worse": self.confidence(self.e_worse)}
