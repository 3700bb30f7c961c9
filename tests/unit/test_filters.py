"""The data-quality filters: every removed row counted under exactly one reason."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from refit.core.filters import malformed_reason
from refit.specs import ModelSpec
from tests.support.training import apply_filters


@dataclass(frozen=True)
class R:
    features: dict[str, float] | None
    label: str
    confidence: float | None = None
    text: str | None = None


def spec(**quality: object) -> ModelSpec:
    return ModelSpec.model_validate({
        "name": "m", "task": "classification", "labels": ["a", "b", "c"],
        "input": {"kind": "numeric", "features": ["x", "y"]},
        "estimator": {"class": "sklearn.linear_model.LogisticRegression"}, "quality": quality})


def row(x: float, label: str = "a", confidence: float | None = None) -> R:
    return R({"x": x, "y": 0.0}, label, confidence)


def stats(s: ModelSpec, rows: list[R]) -> dict[str, int]:
    return apply_filters(s, rows)[1].as_dict()


def test_clean_rows_pass_untouched_and_in_order() -> None:
    rows = [row(3), row(1, "b"), row(2, "c")]
    kept, st = apply_filters(spec(), rows)
    assert kept == rows
    assert st.as_dict() == {"seen": 3, "malformed": 0, "low_confidence": 0, "duplicates": 0, "conflicts": 0,
                            "rare_class": 0, "kept": 3}


def test_exact_duplicates_keep_the_first() -> None:
    first = row(1)
    kept, st = apply_filters(spec(), [first, row(2), row(1), row(1)])
    assert kept == [first, row(2)] and kept[0] is first
    assert (st.duplicates, st.kept) == (2, 2)


def test_duplicates_can_be_kept() -> None:
    assert stats(spec(drop_duplicates=False), [row(1), row(1)])["kept"] == 2


@pytest.mark.parametrize(("policy", "rows", "kept_labels", "duplicates", "conflicts"), [
    ("majority", ["a", "a", "b"], ["a"], 1, 1),
    ("majority", ["a", "b"], [], 0, 2),                 # a tie drops the whole input
    ("majority", ["a", "b", "a", "c", "a"], ["a"], 2, 2),
    ("drop_all", ["a", "a", "b"], [], 0, 3),
    ("keep", ["a", "a", "b"], ["a", "b"], 1, 0),
])
def test_label_conflicts_follow_the_policy(policy, rows, kept_labels, duplicates, conflicts) -> None:
    kept, st = apply_filters(spec(conflicts=policy), [row(7, label) for label in rows] + [row(8)])
    assert [r.label for r in kept if r.features["x"] == 7] == kept_labels
    assert (st.duplicates, st.conflicts, st.kept) == (duplicates, conflicts, len(kept_labels) + 1)


@pytest.mark.parametrize(("confidence", "removed"), [(None, 0), (0.5, 0), (0.49, 1), (0.0, 1), (1.0, 0)])
def test_low_confidence_below_the_minimum_is_removed(confidence, removed) -> None:
    assert stats(spec(), [row(1, confidence=confidence)])["low_confidence"] == removed


def test_minimum_confidence_is_configurable() -> None:
    assert stats(spec(min_confidence=0.9), [row(1, confidence=0.8), row(2, confidence=0.95)])["kept"] == 1


@pytest.mark.parametrize(("bad", "reason"), [
    (R({"x": float("nan"), "y": 0.0}, "a"), "feature x missing or not a finite number"),
    (R({"x": float("inf"), "y": 0.0}, "a"), "feature x missing or not a finite number"),
    (R({"y": 0.0}, "a"), "feature x missing or not a finite number"),
    (R(None, "a"), "feature x missing or not a finite number"),
    (R({"x": 1.0, "y": 0.0}, "z"), "label 'z' not in the label set"),
    # stored before the spec's bounds (issue 17): finite as float32, beyond the default ±1e15
    (R({"x": 3e38, "y": 0.0}, "a"), "feature x outside the spec's bounds"),
    (R({"x": 0.0, "y": -1.5e15}, "a"), "feature y outside the spec's bounds"),
])
def test_malformed_rows_are_removed_with_a_reason(bad, reason) -> None:
    s = spec()
    assert malformed_reason(s, bad) == reason
    assert stats(s, [bad, row(1)]) == {"seen": 2, "malformed": 1, "low_confidence": 0, "duplicates": 0,
                                       "conflicts": 0, "rare_class": 0, "kept": 1}


def test_empty_text_and_bad_regression_labels_are_malformed() -> None:
    text = ModelSpec.model_validate({"name": "t", "task": "classification", "input": {"kind": "text"},
                                     "estimator": {"class": "sklearn.linear_model.LogisticRegression"}})
    assert malformed_reason(text, R(None, "a", text="  ")) == "empty text"
    assert malformed_reason(text, R(None, "a", text="fine")) is None
    reg = ModelSpec.model_validate({"name": "r", "task": "regression", "input": {"features": ["x"]},
                                    "estimator": {"class": "sklearn.linear_model.Ridge"}})
    assert malformed_reason(reg, R({"x": 1.0}, "nan")) == "label not finite"
    assert malformed_reason(reg, R({"x": 1.0}, "high")) == "label not a number"
    assert malformed_reason(reg, R({"x": 1.0}, "2.5")) is None
    assert malformed_reason(reg, R({"x": 1.0}, "1e+38")) == "label outside the spec's bounds"
    assert stats(reg, [R({"x": 1.0}, "1e+38"), R({"x": 2.0}, "2.5")])["malformed"] == 1


def test_classes_with_too_few_rows_are_removed_last() -> None:
    rows = [row(i, "a") for i in range(5)] + [row(10 + i, "b") for i in range(2)] + [row(20, "c")] * 3
    st = stats(spec(min_per_class=3), rows)
    # the three copies of c collapse to one row (2 duplicates), which is then too rare
    assert (st["duplicates"], st["rare_class"], st["kept"]) == (2, 3, 5)


def test_every_row_is_counted_once() -> None:
    rows = ([row(i) for i in range(20)] + [row(0)] * 3 + [row(1, "b")] + [row(30, confidence=0.1)]
            + [R({"x": float("nan"), "y": 0}, "a")])
    st = stats(spec(), rows)
    assert st["seen"] == st["kept"] + st["malformed"] + st["low_confidence"] + st["duplicates"] + \
        st["conflicts"] + st["rare_class"]
    # x=1 has labels a and b once each: a tie, so both rows go as conflicts.
    assert st == {"seen": 26, "malformed": 1, "low_confidence": 1, "duplicates": 3, "conflicts": 2,
                  "rare_class": 0, "kept": 19}


def test_a_text_longer_than_the_bound_is_malformed() -> None:
    """A 7 MB text stored before the bound must not be trained on (issue 17, defect 11)."""
    text = ModelSpec.model_validate({"name": "t", "task": "classification", "input": {"kind": "text"},
                                     "bounds": {"max_chars": 10},
                                     "estimator": {"class": "sklearn.linear_model.LogisticRegression"}})
    assert malformed_reason(text, R(None, "a", text="x" * 10)) is None
    assert malformed_reason(text, R(None, "a", text="x" * 11)) == "text longer than the spec's bounds"
    assert stats(text, [R(None, "a", text="x" * 11), R(None, "a", text="fine")])["malformed"] == 1
