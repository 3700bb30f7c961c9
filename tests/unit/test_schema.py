"""Validation of one sample against a model's input schema; errors name the field first."""

from __future__ import annotations

import re

import pytest

from refit.core.schema import validate_features, validate_label, validate_sample, validate_text
from refit.errors import SchemaError

FIELD_FIRST = re.compile(r"^(features(\.[A-Za-z0-9_]+)?|label|text): \S")


@pytest.fixture
def numeric(make_spec):
    return make_spec(input={"kind": "numeric", "features": ["a", "b", "c"]})


@pytest.fixture
def digits(make_spec):
    return make_spec(name="digits", input={"features": {"prefix": "p", "count": 8}},
                     labels=[str(i) for i in range(10)])


@pytest.fixture
def regression(make_spec):
    return make_spec(name="diabetes", task="regression", estimator={"class": "sklearn.linear_model.Ridge"})


def _schema_error(call, *args) -> str:
    with pytest.raises(SchemaError) as info:
        call(*args)
    message = str(info.value)
    assert FIELD_FIRST.match(message), message
    return message


# --- features ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "features",
    [
        {"a": 1, "b": 2.5, "c": -3},
        {"c": -3, "a": 1, "b": 2.5},  # any key order
        [1, 2.5, -3],  # a list is taken in spec order
        (1, 2.5, -3),
    ],
)
def test_valid_features_come_back_as_floats_in_spec_order(numeric, features):
    result = validate_features(numeric, features)

    assert result == {"a": 1.0, "b": 2.5, "c": -3.0}
    assert list(result) == ["a", "b", "c"]
    assert all(type(v) is float for v in result.values())


def test_shorthand_features_are_validated_by_their_expanded_names(digits):
    assert validate_features(digits, list(range(8))) == {f"p{i}": float(i) for i in range(8)}
    assert _schema_error(validate_features, digits, {f"p{i}": 0 for i in range(7)}) == "features: missing ['p7']"


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ({"a": 1, "b": 2}, "features: missing ['c']"),
        ({}, "features: missing ['a', 'b', 'c']"),
        ({"a": 1, "b": 2, "c": 3, "z": 4}, "features: unknown ['z']"),
        ({"a": 1, "b": 2, "c": 3, "z": 4, "y": 5}, "features: unknown ['y', 'z']"),
        ([1, 2], "features: expected 3 values, got 2"),
        ([1, 2, 3, 4], "features: expected 3 values, got 4"),
        ([], "features: expected 3 values, got 0"),
        ("1,2,3", "features: expected an object of named numbers or a list of numbers"),
        (b"123", "features: expected an object of named numbers or a list of numbers"),
        (None, "features: expected an object of named numbers or a list of numbers"),
        (7, "features: expected an object of named numbers or a list of numbers"),
    ],
)
def test_wrong_shape_is_refused(numeric, features, message):
    assert _schema_error(validate_features, numeric, features) == message


def test_many_missing_features_are_abbreviated(digits):
    assert _schema_error(validate_features, digits, {"p0": 1.0}) == (
        "features: missing ['p1', 'p2', 'p3', 'p4', 'p5'] …")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "features.b: expected a number, got bool"),
        (False, "features.b: expected a number, got bool"),
        ("1.5", "features.b: expected a number, got str"),  # string numbers are not numbers
        (None, "features.b: expected a number, got NoneType"),
        ([1.0], "features.b: expected a number, got list"),
        ({"v": 1}, "features.b: expected a number, got dict"),
        (float("nan"), "features.b: must be finite (within ±3.4e38)"),
        (float("inf"), "features.b: must be finite (within ±3.4e38)"),
        (float("-inf"), "features.b: must be finite (within ±3.4e38)"),
    ],
)
@pytest.mark.parametrize("as_list", [False, True], ids=["object", "list"])
def test_wrong_values_are_refused_by_name(numeric, value, message, as_list):
    features = [1.0, value, 3.0] if as_list else {"a": 1.0, "b": value, "c": 3.0}

    assert _schema_error(validate_features, numeric, features) == message


def test_an_integer_too_large_for_a_float_is_a_schema_error(numeric):
    """JSON allows arbitrarily large integers; they must become a 4xx, not an OverflowError (a 500)."""
    assert _schema_error(validate_features, numeric, [1, 10**400, 3]).startswith("features.b: ")


def test_schema_error_is_a_value_error():
    assert issubclass(SchemaError, ValueError)


# --- labels --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("label", "expected"), [("setosa", "setosa"), (3, "3"), (0, "0"), (-1, "-1"), (" x ", " x ")])
def test_classification_label_becomes_a_string(numeric, label, expected):
    assert validate_label(numeric, label) == expected


@pytest.mark.parametrize("label", [True, False, "", None, 1.5, 1.0, ["a"], {"a": 1}])
def test_classification_label_must_be_a_non_empty_string_or_an_integer(numeric, label):
    assert _schema_error(validate_label, numeric, label) == (
        "label: a classification label must be a non-empty string or an integer")


@pytest.mark.parametrize(("label", "expected"), [("7", "7"), (7, "7"), ("0", "0")])
def test_closed_label_set_accepts_its_members(digits, label, expected):
    assert validate_label(digits, label) == expected


@pytest.mark.parametrize(("label", "shown"), [("10", "'10'"), (10, "'10'"), ("seven", "'seven'"), ("07", "'07'")])
def test_closed_label_set_refuses_others(digits, label, shown):
    assert _schema_error(validate_label, digits, label) == (
        f"label: {shown} is not one of ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']")


@pytest.mark.parametrize(("label", "expected"), [(1, 1.0), (2.5, 2.5), (-0.25, -0.25), (0, 0.0)])
def test_regression_label_is_a_float(regression, label, expected):
    result = validate_label(regression, label)

    assert result == expected and type(result) is float


@pytest.mark.parametrize(
    "label", [True, False, "1.5", "", None, float("nan"), float("inf"), float("-inf"), [1.0],
              pytest.param(10**400, id="10**400")])
def test_regression_label_must_be_a_finite_number(regression, label):
    assert _schema_error(validate_label, regression, label) == "label: a regression label must be a finite number"


# --- text ----------------------------------------------------------------------------------------------


def test_text_is_returned_unchanged(make_spec):
    spec = make_spec(input={"kind": "text"})

    assert validate_text(spec, "  Free money!  ") == "  Free money!  "


@pytest.mark.parametrize("text", ["", "   ", "\n\t", None, 5, ["a"], b"bytes"])
def test_text_must_be_a_non_empty_string(make_spec, text):
    spec = make_spec(input={"kind": "text"})

    assert _schema_error(validate_text, spec, text) == "text: expected a non-empty string"


# --- bounds (issue 17, defects 10, 11, 12) ----------------------------------------------------------------------


def test_a_feature_finite_as_float32_but_beyond_the_default_bound_is_refused(regression):
    """Every feature at 3e38 was accepted, and a holdout row of them crashed judging (NaN predictions)."""
    assert regression.bounds.max_abs == 1e15
    assert validate_features(regression, [1e15, -1e15, 0.0]) == {"a": 1e15, "b": -1e15, "c": 0.0}
    for value in (3e38, 1.0000001e15, -3e38, 10**16):
        assert _schema_error(validate_features, regression, {"a": 0.0, "b": value, "c": 0.0}) == (
            f"features.b: {float(value):g} is outside the model's bounds [-1e+15, 1e+15]")


def test_per_feature_bounds_narrow_the_model_wide_ones(make_spec):
    spec = make_spec(bounds={"max_abs": 100, "features": {"min": 0}, "per_feature": {"b": {"max": 1}}})

    assert spec.feature_ranges == (("a", 0, 100), ("b", 0, 1), ("c", 0, 100))
    assert validate_features(spec, [100, 1, 0]) == {"a": 100.0, "b": 1.0, "c": 0.0}
    assert _schema_error(validate_features, spec, [1, 1.5, 1]) == "features.b: 1.5 is outside the model's bounds [0, 1]"
    assert _schema_error(validate_features, spec, [-0.5, 1, 1]) == (
        "features.a: -0.5 is outside the model's bounds [0, 100]")


def test_a_regression_label_beyond_its_bounds_is_refused(regression, make_spec):
    assert _schema_error(validate_label, regression, 1e38) == "label: 1e+38 is outside the model's bounds [-1e+15, 1e+15]"
    narrow = make_spec(name="diabetes", task="regression", estimator={"class": "sklearn.linear_model.Ridge"},
                       bounds={"label": {"min": 0, "max": 1000}})
    assert validate_label(narrow, 1000) == 1000.0
    assert _schema_error(validate_label, narrow, -1) == "label: -1 is outside the model's bounds [0, 1000]"


def test_a_text_longer_than_the_bound_is_refused(make_spec):
    spec = make_spec(input={"kind": "text"}, bounds={"max_chars": 5})

    assert validate_text(spec, "abcde") == "abcde"
    assert _schema_error(validate_text, spec, "abcdef") == "text: at most 5 characters, got 6"
    assert make_spec(input={"kind": "text"}).bounds.max_chars == 10_000


# --- validate_sample: the one rule of every edge ------------------------------------------------------------------


class Row:
    def __init__(self, features=None, text=None, label=None) -> None:
        self.features, self.text, self.label = features, text, label


def test_validate_sample_returns_what_the_models_take(numeric, make_spec):
    valid = validate_sample(numeric, Row(features=[1, 2, 3], label=4))
    assert (valid.features, valid.text, valid.label) == ({"a": 1.0, "b": 2.0, "c": 3.0}, None, "4")
    text = validate_sample(make_spec(input={"kind": "text"}), Row(text="warm soup", label="comfort"))
    assert (text.features, text.text, text.label) == (None, "warm soup", "comfort")


@pytest.mark.parametrize(("kind", "row", "message"), [
    ("numeric", Row(features=[1, 2, 3], text="x", label="a"), "text: this model takes numeric features"),
    ("text", Row(features={"a": 1}, text="x", label="a"), "features: this model takes text"),
    ("text", Row(text="", label="a"), "text: expected a non-empty string"),
    ("numeric", Row(features=[1, 3e38, 3], label="a"), "features.b: 3e+38 is outside the model's bounds "
                                                         "[-1e+15, 1e+15]"),
    ("numeric", Row(features=[1, 2, 3], label=True), "label: a classification label must be a non-empty string "
                                                     "or an integer"),
])
def test_validate_sample_refuses_by_field(make_spec, kind, row, message):
    spec = make_spec(input={"kind": kind, **({"features": ["a", "b", "c"]} if kind == "numeric" else {})})
    assert _schema_error(validate_sample, spec, row) == message
