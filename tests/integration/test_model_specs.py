"""Every model in config/models.yaml trains on its real bundled dataset, converts, and passes its own gates.

No broker, no processes: the trainer's ``fit`` on rows shaped like the trainer's store, then the
monitor's scoring (ONNX, on the rows ``is_holdout`` reserves for the monitor) and the safeguard's
verdict for a first model (no champion, so only the absolute gates apply).
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Callable
from importlib.resources import files

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

from refit.core.metrics import scores
from refit.core.safeguard import judge
from refit.core.split import is_holdout
from refit.onnx_model import OnnxModel
from refit.specs import ModelSpec, load_specs
from services.trainer.fit import _convert, build_pipeline, check_conversion
from tests.conftest import SPECS
from tests.support.training import Row, fit

OCCURRED_AT = "2024-05-01T12:00:00+00:00"
SPEC_LIST = load_specs(SPECS).models


def _numeric(x: np.ndarray, y: np.ndarray, names: list[str]) -> Callable[[ModelSpec], list[tuple[object, str]]]:
    def rows(spec: ModelSpec) -> list[tuple[object, str]]:
        assert list(spec.input.features) == names, "spec features must follow the dataset's column order"
        return [(dict(zip(names, map(float, xi), strict=True)), label) for xi, label in zip(x, y, strict=True)]
    return rows


def digits(spec: ModelSpec) -> list[tuple[object, str]]:
    data = load_digits()
    return _numeric(data.data, data.target.astype(str), [f"p{i}" for i in range(64)])(spec)


def diabetes(spec: ModelSpec) -> list[tuple[object, str]]:
    data = load_diabetes()
    return _numeric(data.data, np.array([str(float(v)) for v in data.target]), list(data.feature_names))(spec)


def breast_cancer(spec: ModelSpec) -> list[tuple[object, str]]:
    data = load_breast_cancer()
    names = [n.replace(" ", "_") for n in data.feature_names]
    return _numeric(data.data, data.target_names[data.target], names)(spec)


def food_mood_csv() -> list[dict[str, str]]:
    text = (files("refit") / "data" / "food_mood.csv").read_text(encoding="ascii")
    return list(csv.DictReader(io.StringIO(text)))


def food_mood(spec: ModelSpec) -> list[tuple[object, str]]:
    return [(r["text"], r["label"]) for r in food_mood_csv()]


DATASETS: dict[str, Callable[[ModelSpec], list[tuple[object, str]]]] = {
    "digits": digits, "diabetes": diabetes, "breast-cancer": breast_cancer, "food-mood": food_mood}


def as_rows(spec: ModelSpec) -> list[Row]:
    """The dataset as the trainer's store would hand it over, in a seeded arrival order."""
    data = DATASETS[spec.name](spec)
    order = np.random.default_rng(20240501).permutation(len(data))
    text = spec.input.kind == "text"
    return [Row(sample_id=f"{spec.name}-{i}", features=None if text else data[i][0],  # type: ignore[arg-type]
                text=data[i][0] if text else None, label=data[i][1], confidence=None, occurred_at=OCCURRED_AT)
            for i in order]


def split(spec: ModelSpec, rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """(training rows, monitor holdout rows), decided by the same function the services use."""
    held = [is_holdout(r.sample_id, spec.training.holdout_fraction, spec.name) for r in rows]
    return ([r for r, h in zip(rows, held, strict=True) if not h],
            [r for r, h in zip(rows, held, strict=True) if h])


def test_every_spec_has_a_bundled_dataset() -> None:
    assert sorted(DATASETS) == sorted(s.name for s in SPEC_LIST)


@pytest.mark.parametrize("spec", SPEC_LIST, ids=lambda s: s.name)
def test_first_model_trains_converts_and_passes_every_gate(spec: ModelSpec) -> None:
    train, holdout = split(spec, as_rows(spec))
    assert {r.sample_id for r in train}.isdisjoint(r.sample_id for r in holdout)
    assert len(train) >= spec.training.min_samples
    assert len(holdout) >= spec.safeguard.min_holdout
    if spec.labels is not None:
        assert {r.label for r in train + holdout} <= set(spec.labels)

    fitted = fit(spec, train)

    assert fitted.conversion.passed, fitted.conversion
    assert fitted.rows_trained + fitted.rows_held_back == len(train)
    model = OnnxModel(fitted.onnx_bytes)
    assert model.task == spec.task and model.input_kind == spec.input.kind
    batch = model.matrix([r.text for r in holdout] if spec.input.kind == "text"
                         else [r.features for r in holdout])  # type: ignore[misc]
    predicted = model.run(batch)
    if spec.task == "classification":
        assert model.classes == fitted.classes
        got = scores(spec.task, [r.label for r in holdout], predicted.labels or [])
    else:
        got = scores(spec.task, [float(r.label) for r in holdout], predicted.values or [])
    verdict = judge(got, None, spec.safeguard)
    print(f"\n{spec.name}: trained on {fitted.rows_trained} (+{fitted.rows_held_back} held back, conversion "
          f"max diff {fitted.conversion.max_abs_diff:.2g}), holdout {len(holdout)}: "
          + ", ".join(f"{k}={v:.4f}" for k, v in got.items()))
    assert any(c.kind == "gate" for c in verdict.checks), "every model should have at least one absolute gate"
    assert verdict.promote, verdict.reasons


# --- the food-mood dataset ----------------------------------------------------------------------------


def test_food_mood_csv_is_a_usable_labeled_dataset() -> None:
    raw = (files("refit") / "data" / "food_mood.csv").read_bytes()
    assert raw.isascii()
    assert raw.decode().splitlines()[0] == "text,label"
    rows = food_mood_csv()
    assert len(rows) >= 240
    assert all(set(r) == {"text", "label"} for r in rows)
    assert all(r["text"].strip() == r["text"] and r["text"] for r in rows)

    counts = Counter(r["label"] for r in rows)
    assert 4 <= len(counts) <= 6
    assert min(counts.values()) >= 0.8 * max(counts.values()), counts
    spec = next(s for s in SPEC_LIST if s.name == "food-mood")
    assert set(counts) == set(spec.labels or ())

    normalized = [" ".join(re.findall(r"\w+", r["text"].lower())) for r in rows]
    duplicates = [t for t, n in Counter(normalized).items() if n > 1]
    assert duplicates == []
    # Every query has at least one token the vectorizer (and its ONNX tokenizer) keeps.
    assert all(re.search(r"\b\w\w+\b", r["text"]) for r in rows)


def test_food_mood_onnx_matches_scikit_learn_on_every_text() -> None:
    """Tokenization parity beyond the held-back rows: all queries, unseen words, case and punctuation."""
    spec = next(s for s in SPEC_LIST if s.name == "food-mood")
    train, _ = split(spec, as_rows(spec))
    pipeline = build_pipeline(spec)
    pipeline.fit([r.text for r in train], [r.label for r in train])
    onnx_bytes = _convert(spec, pipeline, [str(c) for c in pipeline.classes_])
    texts = [r["text"] for r in food_mood_csv()] + [
        "Warm, CHEESY... and cozy?!", "zzz qqq", "a", "", "party-time: cake & bubbly!!",
        "I'm tired -- need fuel (protein) before the 10k run", "tea\tbefore\nbed", "  calm   down  "]
    check = check_conversion(spec, pipeline, onnx_bytes, np.array([[t] for t in texts], dtype=object))
    assert check.passed, check
