"""Live performance: predictions joined with the labels that answer them, scored over a rolling window.

Pure: the monitor's feedback store feeds it values and keeps the state. The join key of a
prediction row is the request id of a single-row prediction, and ``"<request id>#<row>"``
(row counted from 0) for each row of a multi-row prediction; a label names it in its
``request_id``.

>>> row_keys("req-7", 1), row_keys("req-8", 2)
(['req-7'], ['req-8#0', 'req-8#1'])
>>> live_scores("classification", [outcome("classification", "3", "3"), outcome("classification", "3", "5")])
{'accuracy': 0.5}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ROW_SEPARATOR = "#"


def row_keys(request_id: str, rows: int) -> list[str]:
    """The join key of every row of a prediction of ``rows`` rows."""
    if rows == 1:
        return [request_id]
    return [f"{request_id}{ROW_SEPARATOR}{i}" for i in range(rows)]


@dataclass(frozen=True)
class Outcome:
    """What one joined prediction turned out to be: right or wrong, or how far off."""

    correct: bool | None = None  # classification
    error: float | None = None  # regression: |predicted - label|


def outcome(task: str, predicted: str, label: str) -> Outcome:
    """Compare a stored prediction with its label (both as stored: strings)."""
    if task == "classification":
        return Outcome(correct=predicted == label)
    return Outcome(error=abs(float(predicted) - float(label)))


def live_scores(task: str, outcomes: Sequence[Outcome]) -> dict[str, float]:
    """Accuracy (classification) or MAE and RMSE (regression) over ``outcomes``; empty for none."""
    if not outcomes:
        return {}
    if task == "classification":
        return {"accuracy": sum(bool(o.correct) for o in outcomes) / len(outcomes)}
    errors = [o.error for o in outcomes if o.error is not None]
    if not errors:
        return {}
    return {"mae": math.fsum(errors) / len(errors),
            "rmse": math.sqrt(math.fsum(e * e for e in errors) / len(errors))}
