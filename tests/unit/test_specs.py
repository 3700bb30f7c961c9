"""Model specs: shorthand, defaults per task, what is refused, the spec hash, and loading files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from refit.errors import ConfigError, UnknownModelError
from refit.specs import EstimatorSpec, InputSpec, MetricRule, ModelSpec, ModelSpecs, load_specs

REPO = Path(__file__).resolve().parents[2]


def _yaml(*models: dict[str, Any]) -> str:
    return yaml.safe_dump({"models": list(models)})


def _raw(**overrides: Any) -> dict[str, Any]:
    """Raw data of a small valid spec (for parametrize, which runs before fixtures exist)."""
    data: dict[str, Any] = {
        "name": "iris",
        "task": "classification",
        "input": {"features": ["a", "b", "c"]},
        "estimator": {"class": "sklearn.linear_model.LogisticRegression"},
    }
    return {**data, **overrides}


@pytest.fixture
def write_specs(tmp_path):
    """Write ``models`` (a list of raw specs) or raw text to a spec file and return its path."""

    def write(models: list[dict] | None = None, *, text: str | bytes | None = None) -> Path:
        path = tmp_path / "models.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text if text is not None else yaml.safe_dump({"models": models}))
        return path

    return write


# --- inputs -------------------------------------------------------------------------------------------


def test_feature_shorthand_expands_in_order(make_spec):
    spec = make_spec(input={"features": {"prefix": "p", "count": 4}})

    assert spec.input.features == ("p0", "p1", "p2", "p3")


@pytest.mark.parametrize(
    "shorthand",
    [
        {"count": 3},  # no prefix
        {"prefix": "p"},  # no count
        {"prefix": "p", "count": None},
        {"prefix": "p", "count": "many"},
        {"prefix": "p", "count": 0},
        {"prefix": "p", "count": -2},
    ],
    ids=["no-prefix", "no-count", "null-count", "text-count", "zero-count", "negative-count"],
)
def test_bad_feature_shorthand_is_a_validation_error(make_spec, shorthand):
    with pytest.raises(ValidationError):
        make_spec(input={"features": shorthand})


@pytest.mark.parametrize(
    ("input_", "message"),
    [
        ({"kind": "numeric", "features": []}, "a numeric input needs at least one feature"),
        ({"kind": "text", "features": ["a"]}, "a text input has no named features"),
        ({"features": ["a", "b", "a"]}, "feature names must be unique"),
    ],
)
def test_invalid_inputs_are_refused(make_spec, input_, message):
    with pytest.raises(ValidationError, match=message):
        make_spec(input=input_)


def test_text_input_has_no_features(make_spec):
    assert make_spec(input={"kind": "text"}).input == InputSpec(kind="text", features=())


# --- metrics: defaults per task, wrong metrics refused -----------------------------------------------------


@pytest.mark.parametrize(
    ("task", "estimator", "metrics"),
    [
        ("classification", "sklearn.linear_model.LogisticRegression", ("accuracy", "f1_macro", "f1_weighted")),
        ("regression", "sklearn.linear_model.Ridge", ("rmse", "mae", "r2")),
    ],
)
def test_default_metric_rules_are_filled_per_task(make_spec, task, estimator, metrics):
    spec = make_spec(task=task, estimator={"class": estimator})

    assert spec.safeguard.metrics == tuple(MetricRule(name=m) for m in metrics)
    assert all(
        (r.max_relative_degradation, r.max_absolute_degradation, r.min, r.max) == (0.01, None, None, None)
        for r in spec.safeguard.metrics
    )


def test_declared_rules_are_kept_and_missing_ones_appended(make_spec):
    spec = make_spec(safeguard={"min_holdout": 50, "metrics": [{"name": "f1_macro", "min": 0.8}]})

    assert spec.safeguard.metrics == (
        MetricRule(name="f1_macro", min=0.8), MetricRule(name="accuracy"), MetricRule(name="f1_weighted"))
    assert spec.safeguard.min_holdout == 50


@pytest.mark.parametrize(
    ("task", "estimator", "metric", "message"),
    [
        ("classification", "sklearn.linear_model.LogisticRegression", "rmse",
         r"metrics \['rmse'\] do not apply to classification"),
        ("classification", "sklearn.linear_model.LogisticRegression", "r2",
         r"metrics \['r2'\] do not apply to classification"),
        ("regression", "sklearn.linear_model.Ridge", "accuracy", r"metrics \['accuracy'\] do not apply to regression"),
        ("regression", "sklearn.linear_model.Ridge", "auc", r"unknown metric 'auc'"),
    ],
)
def test_wrong_metrics_for_a_task_are_refused(make_spec, task, estimator, metric, message):
    with pytest.raises(ValidationError, match=message):
        make_spec(task=task, estimator={"class": estimator}, safeguard={"metrics": [{"name": metric}]})


@pytest.mark.parametrize("field", ["max_relative_degradation", "max_absolute_degradation"])
def test_negative_tolerances_are_refused(field):
    with pytest.raises(ValidationError):
        MetricRule(name="accuracy", **{field: -0.01})


def test_regression_model_has_no_label_set(make_spec):
    with pytest.raises(ValidationError, match="a regression model has no label set"):
        make_spec(task="regression", estimator={"class": "sklearn.linear_model.Ridge"}, labels=["a"])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_holdout_fraction_is_strictly_between_zero_and_one(make_spec, fraction):
    with pytest.raises(ValidationError):
        make_spec(training={"holdout_fraction": fraction})


# --- estimator class restricted to sklearn.* ------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["sklearn.linear_model.LogisticRegression", "sklearn.ensemble.RandomForestClassifier", "sklearn.svm.SVC"],
)
def test_estimator_class_under_sklearn_is_accepted(make_spec, path):
    assert make_spec(estimator={"class": path}).estimator.class_path == path


@pytest.mark.parametrize(
    "path",
    [
        "os.system",
        "builtins.eval",
        "sklearn",
        "sklearn.",
        "sklearn..Ridge",
        "sklearnx.linear_model.Ridge",
        "xsklearn.linear_model.Ridge",
        "sklearn.linear_model.Ridge; import os",
        "sklearn.linear_model.Ridge\n",
        "sklearn/linear_model.Ridge",
        "",
    ],
)
def test_estimator_class_outside_sklearn_is_refused(make_spec, path):
    with pytest.raises(ValidationError, match="estimator class must be an import path under sklearn"):
        make_spec(estimator={"class": path})


def test_estimator_accepts_its_field_name_and_its_alias():
    assert EstimatorSpec(class_path="sklearn.svm.SVC") == EstimatorSpec.model_validate({"class": "sklearn.svm.SVC"})


# --- names ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "digits", "a-b_c9", "a" * 63])
def test_valid_model_names(make_spec, name):
    assert make_spec(name=name).name == name


@pytest.mark.parametrize(
    "name", ["", "Digits", "9digits", "-x", "_x", "a b", "a.b", "a/b", "a" * 64, "dígits", "digits\n"])
def test_invalid_model_names_are_refused(make_spec, name):
    with pytest.raises(ValidationError, match="model names are lowercase letters"):
        make_spec(name=name)


def test_model_names_must_be_unique(make_spec):
    with pytest.raises(ValidationError, match="model names must be unique"):
        ModelSpecs(models=(make_spec(name="a"), make_spec(name="b"), make_spec(name="a")))


def test_specs_lookup(make_spec):
    specs = ModelSpecs(models=(make_spec(name="a"), make_spec(name="b")))

    assert specs.names() == ["a", "b"]
    assert specs.get("b") is specs.models[1]
    with pytest.raises(UnknownModelError) as info:
        specs.get("c")
    assert str(info.value) == "no model named 'c'; known: a, b"


@pytest.mark.parametrize("where", ["top", "estimator", "safeguard", "training", "input"])
def test_unknown_keys_are_refused(where):
    data = _raw(safeguard={}, training={})
    target = data if where == "top" else data[where]
    target["colour"] = "blue"

    with pytest.raises(ValidationError, match="colour"):
        ModelSpec.model_validate(data)


def test_specs_are_frozen(make_spec):
    spec = make_spec()

    with pytest.raises(ValidationError):
        spec.name = "other"  # type: ignore[misc]


# --- spec hash ------------------------------------------------------------------------------------------


def test_spec_hash_is_stable(make_spec):
    first = make_spec().spec_hash()

    assert first == make_spec().spec_hash()
    assert len(first) == 16 and set(first) <= set("0123456789abcdef")


def test_spec_hash_ignores_how_an_equal_spec_was_written(make_spec):
    plain = make_spec()

    assert make_spec(input={"features": ["a", "b", "c"]}).spec_hash() == plain.spec_hash()
    assert make_spec(safeguard={"metrics": [{"name": "accuracy"}, {"name": "f1_macro"}]}).spec_hash() == (
        plain.spec_hash())
    reordered = make_spec(estimator={"params": {"max_iter": 5, "C": 1.0},
                                     "class": "sklearn.linear_model.LogisticRegression"})
    assert reordered.spec_hash() == make_spec(estimator={"class": "sklearn.linear_model.LogisticRegression",
                                                         "params": {"C": 1.0, "max_iter": 5}}).spec_hash()


@pytest.mark.parametrize(
    "change",
    [
        {"name": "iris2"},
        {"estimator": {"class": "sklearn.linear_model.LogisticRegression", "params": {"C": 2.0}}},
        {"estimator": {"class": "sklearn.svm.SVC", "params": {"C": 1.0}}},
        {"input": {"features": ["b", "a", "c"]}},
        {"input": {"features": ["a", "b", "c", "d"]}},
        {"labels": ["x", "y"]},
        {"safeguard": {"metrics": [{"name": "accuracy", "max_relative_degradation": 0.02}]}},
        {"safeguard": {"metrics": [{"name": "accuracy", "min": 0.8}]}},
        {"safeguard": {"min_holdout": 31}},
        {"training": {"holdout_fraction": 0.3}},
    ],
)
def test_spec_hash_changes_with_the_spec(make_spec, change):
    assert make_spec(**change).spec_hash() != make_spec().spec_hash()


# --- loading files ----------------------------------------------------------------------------------------


def test_repository_specs_load():
    specs = load_specs(REPO / "config" / "models.yaml")

    assert specs.names() == ["digits", "diabetes", "breast-cancer", "food-mood"]
    digits, diabetes = specs.get("digits"), specs.get("diabetes")
    assert digits.input.features == tuple(f"p{i}" for i in range(64))
    assert digits.labels == tuple(str(i) for i in range(10))
    assert [(r.name, r.min) for r in digits.safeguard.metrics] == [
        ("accuracy", 0.8), ("f1_macro", 0.8), ("f1_weighted", None)]
    assert diabetes.task == "regression"
    assert [(r.name, r.min) for r in diabetes.safeguard.metrics] == [("rmse", None), ("mae", None), ("r2", 0.2)]
    assert diabetes.training.holdout_fraction == 0.25


def test_load_specs_round_trips_a_written_file(write_specs):
    path = write_specs([_raw(name="a"), _raw(name="b", task="regression",
                                                        estimator={"class": "sklearn.linear_model.Ridge"})])

    assert load_specs(path).names() == ["a", "b"]
    assert load_specs(str(path)) == load_specs(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("models: [", "cannot read model specs"),  # YAML syntax error
        ("", "invalid model specs"),  # empty file
        ("- a\n- b\n", "invalid model specs"),  # not a mapping
        ("models: 3\n", "invalid model specs"),
        ("models: []\nextra: 1\n", "invalid model specs"),
        (_yaml(_raw(name="a"), _raw(name="a")), "model names must be unique"),
        (_yaml(_raw(name="Bad Name")), "model names are lowercase"),
        (_yaml(_raw(estimator={"class": "os.system"})), "under sklearn"),
        (_yaml(_raw(input={"features": {"count": 3}})), "invalid model specs"),
        (_yaml(_raw(input={"features": {"prefix": "p", "count": None}})),
         "invalid model specs"),
        (b"models:\n  - name: \xff\xfe\n", "model specs"),  # not UTF-8
    ],
    ids=["yaml", "empty", "list", "models-int", "extra-key", "duplicate", "name", "estimator",
         "shorthand-no-prefix", "shorthand-null-count", "not-utf8"],
)
def test_every_load_problem_is_a_config_error(write_specs, content, message):
    path = write_specs(text=content)

    with pytest.raises(ConfigError, match=message) as info:
        load_specs(path)
    assert str(path) in str(info.value)


def test_missing_spec_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read model specs"):
        load_specs(tmp_path / "nope.yaml")


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# --- bounds ----------------------------------------------------------------------------------------------


def test_bounds_default_to_a_float32_safe_range(make_spec):
    bounds = make_spec().bounds

    assert (bounds.max_abs, bounds.max_chars) == (1e15, 10_000)
    assert bounds.feature_range("a") == (-1e15, 1e15) and bounds.label_range() == (-1e15, 1e15)


@pytest.mark.parametrize(("bounds", "message"), [
    ({"per_feature": {"zz": {"max": 1}}}, r"bounds.per_feature names unknown features \['zz'\]"),
    ({"features": {"min": 2, "max": 1}}, "min 2.0 is above max 1.0"),
    ({"features": {"min": float("nan")}}, "a bound must be a finite number"),
    ({"label": {"min": 0}}, "bounds.label applies to regression labels only"),
    ({"max_abs": 1, "features": {"min": 5}}, r"bounds of feature a: \[5.0, 1.0\] is empty"),
    ({"max_abs": 1e19}, "less than or equal to 1000000000000000000"),
    ({"max_abs": 0}, "greater than 0"),
    ({"max_chars": 0}, "greater than or equal to 1"),
])
def test_bad_bounds_are_refused(make_spec, bounds, message):
    with pytest.raises(ValidationError, match=message):
        make_spec(bounds=bounds)


def test_repository_specs_bound_every_model():
    specs = load_specs(REPO / "config" / "models.yaml")

    assert specs.get("diabetes").bounds.label_range() == (0.0, 1000.0)
    assert specs.get("diabetes").feature_ranges[0] == ("age", -1.0, 1.0)
    assert specs.get("food-mood").bounds.max_chars == 1000


@pytest.mark.parametrize(("training", "retention", "message"), [
    ({"window_max_rows": 1000}, {"dataset_max_rows": 999}, "below the training window"),
    ({"holdout_max_rows": 500}, {"holdout_max_rows": 499}, "below what the safeguard judges on"),
    ({"window_max_age_days": 30}, {"max_age_days": 7}, "below training.window_max_age_days"),
])
def test_retention_that_would_delete_what_is_read_is_refused(make_spec, training, retention, message):
    with pytest.raises(ValidationError, match=message):
        make_spec(training=training, retention=retention)


def test_retention_keeps_by_default_what_training_and_judging_read(make_spec):
    spec = make_spec(training={"window_max_rows": 600, "holdout_max_rows": 300, "window_max_age_days": 5})
    assert spec.kept_rows() == (600, 300, 5)
    kept = make_spec(training={"window_max_rows": 600}, retention={"dataset_max_rows": 900, "max_age_days": 2})
    assert kept.kept_rows() == (900, 5000, 2)
