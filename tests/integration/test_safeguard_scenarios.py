"""Safeguard scenarios with real models: fitted and converted by the trainer's code, judged by the monitor's.

No metric dictionaries are written by hand: every number comes from a scikit-learn
pipeline trained on a bundled dataset, converted to ONNX and scored with onnxruntime
on a holdout chosen by the shared split, exactly as the services do it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_digits

from refit.core.split import is_holdout
from refit.events import ArtifactRef, CandidateTrained, InputSignature, TrainingStats
from refit.onnx_model import OnnxModel
from refit.specs import ModelSpec, load_specs
from services.monitor.judge import Judgement, assess
from services.monitor.registry import Holdout
from tests.conftest import SPECS
from tests.support.training import Row, fit

pytestmark = pytest.mark.integration
AT = "2026-01-01T00:00:00+00:00"


def digits_rows() -> list[Row]:
    x, y = load_digits(return_X_y=True)
    names = [f"p{j}" for j in range(64)]
    return [Row(f"d{i}", dict(zip(names, map(float, x[i]), strict=True)), None, str(int(y[i])), None, AT)
            for i in range(len(y))]


def diabetes_rows() -> list[Row]:
    x, y = load_diabetes(return_X_y=True)
    names = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    return [Row(f"r{i}", dict(zip(names, map(float, x[i]), strict=True)), None, repr(float(y[i])), None, AT)
            for i in range(len(y))]


class Scenario:
    """One model spec, its data split by the shared holdout function, and a way to train candidates."""

    def __init__(self, spec: ModelSpec, rows: list[Row]) -> None:
        self.spec = spec
        held = [is_holdout(r.sample_id, spec.training.holdout_fraction, spec.name) for r in rows]
        self.train = [r for r, h in zip(rows, held, strict=True) if not h]
        hold = [r for r, h in zip(rows, held, strict=True) if h]
        self.holdout = Holdout([r.sample_id for r in hold], [r.features for r in hold], [r.label for r in hold])

    def candidate(self, rows: list[Row], spec: ModelSpec | None = None) -> tuple[CandidateTrained, OnnxModel]:
        spec = spec or self.spec
        fitted = fit(spec, rows)
        event = CandidateTrained(
            model=spec.name, candidate_id="c", task=spec.task,
            artifact=ArtifactRef(digest="0" * 64, size_bytes=len(fitted.onnx_bytes), uri="memory:"),
            signature=InputSignature(kind=spec.input.kind, features=list(spec.input.features)),
            classes=fitted.classes, conversion=fitted.conversion, trigger="scenario",
            training=TrainingStats(rows_seen=len(rows), rows_trained=fitted.rows_trained,
                                   rows_held_back=fitted.rows_held_back, duration_s=fitted.duration_s,
                                   estimator=spec.estimator.class_path, spec_hash=spec.spec_hash(), code_version="t"))
        return event, OnnxModel(fitted.onnx_bytes)

    def judge(self, candidate_rows: list[Row], champion_rows: list[Row] | None,
              spec: ModelSpec | None = None) -> Judgement:
        champion = self.candidate(champion_rows)[1] if champion_rows is not None else None
        return assess(self.spec, *self.candidate(candidate_rows, spec), champion, self.holdout)


def failed(outcome: Judgement) -> list[tuple[str, str]]:
    return [(c.metric, c.kind) for c in outcome.checks if not c.passed]


def corrupt(rows: list[Row], fraction: float, relabel: Callable[[np.random.Generator, Row], str]) -> list[Row]:
    rng = np.random.default_rng(11)
    return [Row(r.sample_id, r.features, r.text, relabel(rng, r) if rng.random() < fraction else r.label,
                r.confidence, r.occurred_at) for r in rows]


@pytest.fixture(scope="module")
def digits() -> Scenario:
    return Scenario(load_specs(SPECS).get("digits"), digits_rows())


@pytest.fixture(scope="module")
def diabetes() -> Scenario:
    return Scenario(load_specs(SPECS).get("diabetes"), diabetes_rows())


# classification ----------------------------------------------------------------------------------

def test_classification_more_clean_data_is_promoted(digits: Scenario) -> None:
    outcome = digits.judge(digits.train, digits.train[:300])
    assert outcome.promote, outcome.reasons
    assert outcome.candidate_scores["accuracy"] > outcome.champion_scores["accuracy"]
    assert outcome.intervals["accuracy"].low > 0  # significantly better, not just by a point


def test_classification_thirty_percent_label_noise_is_rejected(digits: Scenario) -> None:
    noisy = corrupt(digits.train, 0.3, lambda rng, r: str(rng.integers(0, 10)))
    outcome = digits.judge(noisy, digits.train)
    assert not outcome.promote
    assert ("accuracy", "tolerance") in failed(outcome)


def test_classification_marginal_change_inside_the_tolerance_is_promoted(digits: Scenario) -> None:
    outcome = digits.judge(digits.train[10:], digits.train)
    assert outcome.promote, outcome.reasons
    for check in outcome.checks:
        if check.kind == "tolerance":
            assert abs(check.difference) < 0.01 * check.champion


def test_classification_accuracy_up_but_a_starved_class_sinks_f1_macro_is_rejected() -> None:
    # A stream where 8s are rare (2%): starving the candidate of them barely moves accuracy,
    # but the class's F1 falls to 0 and F1-macro with it.
    rows = [r for r in digits_rows() if r.label != "8"] + [r for r in digits_rows() if r.label == "8"][:33]
    scenario = Scenario(load_specs(SPECS).get("digits"), rows)
    eights = [r for r in scenario.train if r.label == "8"]
    champion = [r for r in scenario.train[:500] if r.label != "8"] + eights
    starved = [r for r in scenario.train if r.label != "8"]
    outcome = scenario.judge(starved, champion)
    assert outcome.candidate_scores["accuracy"] > outcome.champion_scores["accuracy"]
    assert failed(outcome) == [("f1_macro", "tolerance")]
    assert not outcome.promote


def test_classification_onnx_mismatch_is_rejected(digits: Scenario) -> None:
    # A tolerance below float32 precision makes the real ONNX/scikit-learn differences a mismatch.
    strict = digits.spec.model_copy(update={"safeguard": digits.spec.safeguard.model_copy(
        update={"conversion_tolerance": 1e-12})})
    outcome = digits.judge(digits.train, None, spec=strict)
    assert not outcome.promote
    assert failed(outcome) == [("onnx_vs_sklearn", "conversion")]
    assert "ONNX output disagrees with scikit-learn" in outcome.reasons[0]


def test_classification_first_model_passes_only_the_gates(digits: Scenario) -> None:
    good = digits.judge(digits.train, None)
    assert good.promote and good.champion_scores is None and good.intervals is None
    assert {c.kind for c in good.checks} == {"gate"}
    weak = digits.judge(digits.train[:25], None)
    assert not weak.promote
    assert {kind for _, kind in failed(weak)} == {"gate"}


# regression --------------------------------------------------------------------------------------

def test_regression_more_clean_data_is_promoted(diabetes: Scenario) -> None:
    outcome = diabetes.judge(diabetes.train, diabetes.train[:70])
    assert outcome.promote, outcome.reasons
    assert outcome.candidate_scores["rmse"] < outcome.champion_scores["rmse"]


def test_regression_thirty_percent_label_noise_is_rejected(diabetes: Scenario) -> None:
    targets = [float(r.label) for r in diabetes.train]
    noisy = corrupt(diabetes.train, 0.3, lambda rng, r: repr(float(rng.choice(targets))))
    outcome = diabetes.judge(noisy, diabetes.train)
    assert not outcome.promote
    assert ("rmse", "tolerance") in failed(outcome)


def test_regression_marginal_change_inside_the_tolerance_is_promoted(diabetes: Scenario) -> None:
    outcome = diabetes.judge(diabetes.train[3:], diabetes.train)
    assert outcome.promote, outcome.reasons


def test_regression_onnx_mismatch_is_rejected(diabetes: Scenario) -> None:
    strict = diabetes.spec.model_copy(update={"safeguard": diabetes.spec.safeguard.model_copy(
        update={"conversion_tolerance": 1e-12})})
    outcome = diabetes.judge(diabetes.train, None, spec=strict)
    assert failed(outcome) == [("onnx_vs_sklearn", "conversion")]


def test_regression_first_model_passes_only_the_gates(diabetes: Scenario) -> None:
    good = diabetes.judge(diabetes.train, None)
    assert good.promote and {c.kind for c in good.checks} == {"gate"}
    weak = diabetes.judge(diabetes.train[:12], None)
    assert not weak.promote
    assert failed(weak) == [("r2", "gate")]


def test_not_significantly_worse_can_be_required(digits: Scenario) -> None:
    """With the option on, a candidate needs its bootstrap interval to reach 'no worse' too."""
    spec = digits.spec.model_copy(update={"safeguard": digits.spec.safeguard.model_copy(
        update={"require_not_significantly_worse": True})})
    scenario = Scenario(spec, digits_rows())
    better = scenario.judge(scenario.train, scenario.train[:300])
    assert better.promote
    assert {c.metric for c in better.checks if c.kind == "significance"} == {"accuracy", "f1_macro", "f1_weighted"}
    noisy = corrupt(scenario.train, 0.3, lambda rng, r: str(rng.integers(0, 10)))
    worse = scenario.judge(noisy, scenario.train)
    assert ("accuracy", "significance") in failed(worse)


# a poisoned holdout (issue 17, defects 10 and 12): rows stored before the spec's bounds ------------------

def test_a_holdout_row_at_3e38_no_longer_crashes_judging_and_decides_nothing(diabetes: Scenario) -> None:
    """Every feature at 3e38 made the float32 model predict NaN and scikit-learn raised out of judging."""
    clean = diabetes.judge(diabetes.train, diabetes.train[:70])
    h = diabetes.holdout
    poisoned = Scenario(diabetes.spec, [])
    poisoned.holdout = Holdout([*h.ids, "p-1", "p-2"], [*h.rows, dict.fromkeys(diabetes.spec.input.features, 3e38),
                                                          h.rows[0]], [*h.labels, "150.0", "1e+38"])
    outcome = poisoned.judge(diabetes.train, diabetes.train[:70])
    assert outcome.promote is clean.promote is True, outcome.reasons
    assert outcome.candidate_scores["r2"] > 0.3 and outcome.candidate_scores["r2"] < clean.candidate_scores["r2"]
