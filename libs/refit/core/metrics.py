"""Quality metrics by task, computed from true and predicted values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error, r2_score


def classification_scores(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, float]:
    """Accuracy, F1-macro and F1-weighted over the labels present in either sequence."""
    t, p = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    return {
        "accuracy": float(accuracy_score(t, p)),
        "f1_macro": float(f1_score(t, p, average="macro", zero_division=0)),
        "f1_weighted": float(f1_score(t, p, average="weighted", zero_division=0)),
    }


def regression_scores(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    """RMSE, MAE and R²."""
    t, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    return {
        "rmse": float(np.sqrt(mean_squared_error(t, p))),
        "mae": float(mean_absolute_error(t, p)),
        "r2": float(r2_score(t, p)),
    }


def scores(task: str, y_true: Sequence[str] | Sequence[float], y_pred: Sequence[str] | Sequence[float]) -> dict[str, float]:
    if task == "classification":
        return classification_scores(y_true, y_pred)  # type: ignore[arg-type]
    return regression_scores(y_true, y_pred)  # type: ignore[arg-type]
