"""The bundled datasets behind the shipped model specs, as rows ingest accepts.

Nothing is downloaded: scikit-learn ships digits, diabetes and breast-cancer, and the
food-mood queries are written for this project (``refit/data/food_mood.csv``).
"""

from __future__ import annotations

import csv
import io
from importlib.resources import files
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

DIABETES_FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def food_mood() -> list[tuple[str, str]]:
    text = files("refit").joinpath("data", "food_mood.csv").read_text()
    return [(r["text"], r["label"]) for r in csv.DictReader(io.StringIO(text))]


def _numeric(x: np.ndarray, labels: list[Any], names: list[str], model: str) -> list[dict[str, Any]]:
    return [{"features": dict(zip(names, map(float, row), strict=True)), "label": label,
             "idempotency_key": f"{model}-{i}"} for i, (row, label) in enumerate(zip(x, labels, strict=True))]


def sample_rows(model: str, seed: int = 7) -> list[dict[str, Any]]:
    """Every row of the model's dataset, shuffled with ``seed``, each with a stable idempotency key."""
    if model == "digits":
        x, y = load_digits(return_X_y=True)
        rows = _numeric(x, [str(int(v)) for v in y], [f"p{i}" for i in range(64)], model)
    elif model == "diabetes":
        x, y = load_diabetes(return_X_y=True)
        rows = _numeric(x, [float(v) for v in y], DIABETES_FEATURES, model)
    elif model == "breast-cancer":
        data = load_breast_cancer()
        names = [n.replace(" ", "_") for n in data.feature_names]
        rows = _numeric(data.data, [str(data.target_names[v]) for v in data.target], names, model)
    elif model == "food-mood":
        rows = [{"text": t, "label": label, "idempotency_key": f"{model}-{i}"}
                for i, (t, label) in enumerate(food_mood())]
    else:
        raise KeyError(f"no bundled dataset for {model!r}")
    order = np.random.default_rng(seed).permutation(len(rows))
    return [rows[i] for i in order]
