"""Quality metrics by task, computed from true and predicted values.

Regression metrics are computed on values one row cannot capture (issue 17, defects 10 and 12):
labels and predictions are clipped to the holdout's *label fences*, ``[Q1 − 3·IQR, Q3 + 3·IQR]``
of the true labels (Tukey's "far out" fences), and a prediction that is not finite (a model's
float32 arithmetic overflowed on an extreme input) counts as the labels' median: the error of a
model that knows nothing, charged alike to candidate and champion, so such a row neither raises
out of judging nor decides it. On data without such rows nothing changes: the values are
scikit-learn's.
When most labels are equal (IQR 0) the fences use the labels' full range, or 1 if that is 0 too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error, r2_score

FENCE = 3.0  # IQRs beyond the quartiles; 4.7 standard deviations of normal labels


def label_fences(y_true: np.ndarray) -> tuple[float, float]:
    """The interval regression values are clipped to: ``[Q1 − 3·IQR, Q3 + 3·IQR]`` of the finite labels."""
    finite = y_true[np.isfinite(y_true)]
    if len(finite) == 0:
        return -1.0, 1.0
    q1, q3 = np.percentile(finite, [25, 75])
    spread = float(q3 - q1) or float(finite.max() - finite.min()) or 1.0
    return float(q1 - FENCE * spread), float(q3 + FENCE * spread)


def fenced(y_true: Sequence[float] | np.ndarray, y_pred: Sequence[float] | np.ndarray,
           fences: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions as the regression metrics see them: clipped to the fences, a
    prediction that is not finite replaced by the labels' median. Always finite."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    low, high = label_fences(t) if fences is None else fences
    t = np.clip(np.nan_to_num(t, nan=(low + high) / 2), low, high)
    p = np.where(np.isfinite(p), p, np.median(t) if len(t) else 0.0)
    return t, np.clip(p, low, high)


def classification_scores(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, float]:
    """Accuracy, F1-macro and F1-weighted over the labels present in either sequence."""
    t, p = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    return {
        "accuracy": float(accuracy_score(t, p)),
        "f1_macro": float(f1_score(t, p, average="macro", zero_division=0)),
        "f1_weighted": float(f1_score(t, p, average="weighted", zero_division=0)),
    }


def regression_scores(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    """RMSE, MAE and R² on the fenced values (see the module's docstring)."""
    t, p = fenced(y_true, y_pred)
    return {
        "rmse": float(np.sqrt(mean_squared_error(t, p))),
        "mae": float(mean_absolute_error(t, p)),
        "r2": float(r2_score(t, p)),
    }


def scores(task: str, y_true: Sequence[str] | Sequence[float], y_pred: Sequence[str] | Sequence[float]) -> dict[str, float]:
    if task == "classification":
        return classification_scores(y_true, y_pred)  # type: ignore[arg-type]
    return regression_scores(y_true, y_pred)  # type: ignore[arg-type]
