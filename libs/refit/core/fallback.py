"""What a replica answers with when it cannot serve a model's champion (``serving.fallback``).

Pure: the answers of the ``prior`` and ``rules`` kinds, and which kind answers. ``previous`` (the
last champion that loads) is what :class:`services.inference.serving.Champions` keeps serving when
a newer champion's artifact does not load; here it is only a name in the order.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from refit.onnx_model import Prediction
from refit.specs import FallbackKind, RulesSpec, ServingSpec

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Prior:
    """The class frequencies (classification) or the mean (regression) of a model's holdout labels."""

    classes: tuple[str, ...] = ()
    probabilities: tuple[float, ...] = ()
    mean: float | None = None
    rows: int = 0

    @classmethod
    def of(cls, task: str, labels: Sequence[str]) -> Prior | None:
        """The prior of these labels; None without any (a model with no holdout yet has none)."""
        if not labels:
            return None
        if task == "regression":
            return cls(mean=float(np.mean(np.asarray(labels, dtype=np.float64))), rows=len(labels))
        counts = Counter(labels)
        classes = tuple(sorted(counts))
        return cls(classes, tuple(counts[c] / len(labels) for c in classes), rows=len(labels))

    def predict(self, rows: int) -> Prediction:
        """Every row answered with the prior: the most frequent class and the frequencies, or the mean."""
        if self.mean is not None:
            return Prediction(labels=None, probabilities=None, values=[self.mean] * rows)
        likeliest = self.classes[int(np.argmax(self.probabilities))]
        return Prediction(labels=[likeliest] * rows, probabilities=np.tile(np.asarray(self.probabilities), (rows, 1)),
                          values=None)


class KeywordRules:
    """A text model's keyword rules: per text, the first label one of whose keywords it contains."""

    def __init__(self, rules: RulesSpec, labels: Sequence[str] | None = None) -> None:
        self.rules = rules
        # the answer's probability columns: the model's labels, or the labels the rules name
        self.classes = list(labels) if labels else sorted({*rules.keywords, rules.default})

    def label(self, text: str) -> str:
        lowered = text.lower()
        words = set(_WORD.findall(lowered))
        for label, keywords in self.rules.keywords.items():
            if any(k in words if " " not in k else k in lowered for k in keywords):
                return label
        return self.rules.default

    def predict(self, texts: Sequence[str]) -> Prediction:
        """One label per text; its probability is 1 (a rule is not a model: it has no doubt to report)."""
        labels = [self.label(t) for t in texts]
        probabilities = np.zeros((len(labels), len(self.classes)))
        for i, label in enumerate(labels):
            probabilities[i, self.classes.index(label)] = 1.0
        return Prediction(labels=labels, probabilities=probabilities, values=None)


def prior_from_json(body: dict[str, object]) -> Prior:
    """The prior as the monitor's ``GET /v1/models/{name}/prior`` answers it."""
    rows = int(body["rows"])  # type: ignore[call-overload]
    if body.get("mean") is not None:
        return Prior(mean=float(body["mean"]), rows=rows)  # type: ignore[arg-type]
    classes: dict[str, float] = body["classes"]  # type: ignore[assignment]
    return Prior(tuple(classes), tuple(float(p) for p in classes.values()), rows=rows)


def without_champion(serving: ServingSpec, text: bool, prior: Prior | None) -> FallbackKind | None:
    """The kind that answers when no champion (nor an earlier one) is loaded: the first in the order
    that can; None when none can (the replica then answers 503, as without a fallback)."""
    for kind in serving.fallback:
        if kind == "rules" and text and serving.rules is not None:
            return kind
        if kind == "prior" and prior is not None:
            return kind
    return None
