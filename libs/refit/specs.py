"""The model-spec format: which models exist, their inputs, estimator, safeguard and triggers.

A spec file is YAML with a top-level ``models`` list; see ``config/models.yaml``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

import orjson
import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema,
                      create_model, field_validator, model_validator)

from refit.errors import ConfigError, UnknownModelError

Task = Literal["classification", "regression"]

HIGHER_IS_BETTER = {"accuracy": True, "f1_macro": True, "f1_weighted": True, "r2": True,
                    "rmse": False, "mae": False}
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "f1_macro", "f1_weighted"),
    "regression": ("rmse", "mae", "r2"),
}
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
FLOAT32_MAX = 3.4028234663852886e38
# The default bound on every number a sample carries. The pipelines compute in float32 (ONNX): a
# value of at most 1e15 has a square of at most 1e30, so a sum of up to 1e8 such squares (features
# times rows) stays finite, and scaling by a standard deviation down to 1e-4 still leaves squares
# finite. 1e15 still admits epoch timestamps in milliseconds and money amounts in cents.
DEFAULT_MAX_ABS = 1e15
MAX_ABS_LIMIT = 1e18  # beyond, one scaled value's square can overflow float32
DEFAULT_MAX_CHARS = 10_000


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _integral(value: Any) -> Any:
    """A JSON number with no fraction as an int (JSON Schema's ``integer`` includes ``962.0``)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An integer as JSON Schema counts them, for a strict model: 962.0 is one, "962" and true are not.
JsonInt = Annotated[int, BeforeValidator(_integral)]


class InputSpec(_Spec):
    """Named numeric features (in this order), or one free-text field."""

    kind: Literal["numeric", "text"] = "numeric"
    features: tuple[str, ...] = ()

    @field_validator("features", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        # {"prefix": "p", "count": 64} is shorthand for p0..p63.
        if isinstance(value, dict):
            prefix, count = value.get("prefix"), value.get("count")
            if set(value) != {"prefix", "count"} or not isinstance(prefix, str) or not isinstance(count, int) \
                    or isinstance(count, bool) or count < 1:
                raise ValueError("the feature shorthand is {prefix: <text>, count: <positive integer>}")
            return tuple(f"{prefix}{i}" for i in range(count))
        return value

    @model_validator(mode="after")
    def _check(self) -> InputSpec:
        if self.kind == "numeric" and not self.features:
            raise ValueError("a numeric input needs at least one feature")
        if self.kind == "text" and self.features:
            raise ValueError("a text input has no named features")
        if len(set(self.features)) != len(self.features):
            raise ValueError("feature names must be unique")
        return self


class Bound(_Spec):
    """A closed interval for one number; a side left out is the model's default (±``max_abs``)."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Bound:
        for value in (self.min, self.max):
            if value is not None and not -FLOAT32_MAX <= value <= FLOAT32_MAX:  # also refuses NaN
                raise ValueError("a bound must be a finite number")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class BoundsSpec(_Spec):
    """What a sample's numbers and texts may hold (see docs/operations.md, "Input bounds").

    Every feature value and regression label lies within ``±max_abs``; ``features`` narrows every
    feature, ``per_feature`` one feature (over ``features``), ``label`` a regression label;
    ``max_chars`` bounds one text. Enforced where samples enter (ingest, trainer, monitor) and at
    inference, by :func:`refit.core.schema.validate_sample` and the same ranges.
    """

    max_abs: float = Field(DEFAULT_MAX_ABS, gt=0, le=MAX_ABS_LIMIT)
    features: Bound = Bound()
    per_feature: dict[str, Bound] = Field(default_factory=dict)
    label: Bound = Bound()
    max_chars: int = Field(DEFAULT_MAX_CHARS, ge=1, le=1_000_000)

    def _clamp(self, bound: Bound, fallback: Bound = Bound()) -> tuple[float, float]:
        low = bound.min if bound.min is not None else fallback.min
        high = bound.max if bound.max is not None else fallback.max
        return (max(-self.max_abs, low if low is not None else -self.max_abs),
                min(self.max_abs, high if high is not None else self.max_abs))

    def feature_range(self, name: str) -> tuple[float, float]:
        """The closed interval a feature's value must lie in."""
        return self._clamp(self.per_feature.get(name, Bound()), self.features)

    def label_range(self) -> tuple[float, float]:
        """The closed interval a regression label must lie in."""
        return self._clamp(self.label)


class EstimatorSpec(_Spec):
    """A scikit-learn estimator by import path (only ``sklearn.*``), and its parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    class_path: str = Field(alias="class")
    params: dict[str, Any] = Field(default_factory=dict)
    scale: bool = True
    vectorizer: dict[str, Any] = Field(default_factory=dict)

    @field_validator("vectorizer")
    @classmethod
    def _convertible(cls, value: dict[str, Any]) -> dict[str, Any]:
        # skl2onnx computes log(1 + tf) where scikit-learn computes 1 + log(tf): the ONNX model
        # would silently disagree whenever a word repeats in one text.
        if value.get("sublinear_tf"):
            raise ValueError("sublinear_tf is not converted faithfully to ONNX; leave it off")
        return value

    @field_validator("class_path")
    @classmethod
    def _sklearn_only(cls, value: str) -> str:
        if not re.fullmatch(r"sklearn(\.[A-Za-z_][A-Za-z0-9_]*)+", value):
            raise ValueError("estimator class must be an import path under sklearn.")
        return value


class MetricRule(_Spec):
    """How one metric may move versus the champion, and the absolute bounds it must meet."""

    # strict, as the API's document declares it (run-time configuration; services/monitor/runconfig.py)
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: Annotated[str, WithJsonSchema({"type": "string", "enum": list(HIGHER_IS_BETTER)})]
    max_relative_degradation: float = Field(0.01, ge=0)
    max_absolute_degradation: float | None = Field(None, ge=0)
    min: float | None = None
    max: float | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in HIGHER_IS_BETTER:
            raise ValueError(f"unknown metric {value!r}; known: {sorted(HIGHER_IS_BETTER)}")
        return value

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.name]


class SafeguardSpec(_Spec):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)  # as the API's document declares it

    metrics: tuple[MetricRule, ...] = Field((), strict=False)  # a JSON list
    min_holdout: JsonInt = Field(30, ge=1, le=10**9)
    conversion_tolerance: float = Field(1e-4, gt=0)
    # Paired bootstrap of (candidate - champion) on the shared holdout; always reported, and
    # with require_not_significantly_worse also a check: the interval must reach "no worse".
    bootstrap_resamples: JsonInt = Field(1000, ge=100, le=20_000)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    require_not_significantly_worse: bool = False
    # After a concept change detected on live traffic, judge on the holdout rows that arrived after
    # it (waiting for min_holdout of them), not on rows of the concept that ended.
    judge_on_current_concept: bool = True
    # Live labeled traffic: each labeled sample scored by the champion and by its challengers (the
    # newest candidate not promoted; after a promotion, the champion it replaced) feeds a paired
    # anytime-valid test (refit.core.sequential) at live_alpha, on at least min_holdout pairs. A
    # candidate significantly better is promoted; a champion significantly worse than the one it
    # replaced is rolled back.
    live_promotion: bool = True
    live_rollback: bool = True
    live_alpha: float = Field(0.01, gt=0, lt=0.5)


class QualitySpec(_Spec):
    """The data-quality filters run before every training (see refit.core.filters)."""

    min_confidence: float = Field(0.5, ge=0, le=1)
    drop_duplicates: bool = True
    conflicts: Literal["majority", "drop_all", "keep"] = "majority"
    min_per_class: int = Field(1, ge=1)


class TrainingSpec(_Spec):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)  # as the API's document declares it

    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    holdout_max_rows: JsonInt = Field(5000, ge=1, le=10**9)
    # The trainer trains on its own every this many new rows; None (the default): only when the
    # monitor asks (its triggers, which judge evidence, back off after rejections and obey the pause).
    min_new_samples: Annotated[Annotated[int, Field(ge=1, le=10**9)] | None, BeforeValidator(_integral)] = None
    min_samples: JsonInt = Field(50, ge=2, le=10**9)
    window_max_rows: JsonInt = Field(200_000, ge=10, le=10**9)
    window_max_age_days: float | None = Field(None, gt=0, le=36_500)
    held_back_fraction: float = Field(0.1, gt=0, lt=1)
    # A fit runs in a worker process that is killed past this, and the training fails (TrainingFailed).
    fit_timeout_s: float = Field(1800.0, gt=0, le=86_400)




# The cron fields a schedule may set: (lowest, highest, names). A field is an integer in range,
# or text: a comma-separated list of ``*``, ``*/step``, values and names (``mon``, ``jan``). The
# OpenAPI document declares exactly this, so what it allows the monitor takes (APScheduler takes
# more: ranges, ``last``, ``1st mon``; leaving them out keeps the document exact).
_CRON_FIELDS: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "month": (1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    "day": (1, 31, ()), "week": (1, 53, ()),
    "day_of_week": (0, 6, ("mon", "tue", "wed", "thu", "fri", "sat", "sun")),
    "hour": (0, 23, ()), "minute": (0, 59, ()), "second": (0, 59, ()),
}


def _cron_pattern(low: int, high: int, names: tuple[str, ...]) -> str:
    if high - low > 100:  # the year: an integer, or every year
        return r"^\*$"
    values = "|".join([*map(str, range(low, high + 1)), *names])
    steps = "|".join(map(str, range(1, high - low + 1)))
    item = rf"(\*|\*/({steps})|{values})"
    return rf"^{item}(,{item})*$"


def _cron_field(low: int, high: int, names: tuple[str, ...]) -> Any:
    """One cron field's type: validated here with a message naming what it takes, declared as such."""
    pattern = _cron_pattern(low, high, names)
    text = re.compile(pattern)

    def check(value: Any) -> Any:
        value = _integral(value)
        if type(value) is int and low <= value <= high or isinstance(value, str) and text.fullmatch(value):
            return value
        raise ValueError(f"expected an integer from {low} to {high}, or text of comma-separated *, */step, "
                         f"values{' and names' if names else ''} (like '*/5' or '{low},{high}')")

    return Annotated[int | str, BeforeValidator(check), WithJsonSchema({"anyOf": [
        {"type": "integer", "minimum": low, "maximum": high}, {"type": "string", "pattern": pattern}]})]


Cron = create_model(  # type: ignore[call-overload]
    "Cron", __config__=ConfigDict(frozen=True, extra="forbid", strict=True),
    # absent, never null (a default is not validated)
    **{field: (_cron_field(low, high, names), None)
       for field, (low, high, names) in {"year": (1970, 9999, ()), **_CRON_FIELDS}.items()})


def _cron_fields(value: Any) -> Any:
    if isinstance(value, dict):
        return Cron.model_validate(value).model_dump(exclude_none=True)
    return value


class Schedule(_Spec):
    """A cron-like schedule in a time zone (APScheduler 3 CronTrigger fields, see ``_CRON_FIELDS``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    name: str
    cron: Annotated[dict[str, str | int], BeforeValidator(_cron_fields),
                    WithJsonSchema({**Cron.model_json_schema(), "minProperties": 1})]
    timezone: Annotated[str, Field(json_schema_extra={"enum": sorted(available_timezones())})] = "UTC"

    @field_validator("cron")
    @classmethod
    def _some(cls, value: dict[str, str | int]) -> dict[str, str | int]:
        if not value:
            raise ValueError("set at least one field")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if value not in available_timezones():
            raise ValueError(f"unknown time zone {value!r} (an IANA name, like Europe/Berlin)")
        return value

    @model_validator(mode="after")
    def _valid(self) -> Schedule:
        from refit.core.schedule import cron_trigger  # validation builds the real trigger

        cron_trigger(self)
        return self


class TriggersSpec(_Spec):
    """When the monitor asks for a retraining; every trigger can be switched off on its own.

    Every number is bounded (a year of minutes, ten years of days, a billion samples), so no
    configuration can overflow the policy's arithmetic.
    """

    # strict: the types the API's document declares (``adaptive: 0`` is no boolean)
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    new_samples: Annotated[Annotated[int, Field(ge=1, le=10**9)] | None, BeforeValidator(_integral)] = Field(
        None, description="fire when this many new samples arrived")
    max_age_days: float | None = Field(7.0, gt=0, le=3650, description="fire when the champion is older")
    schedules: tuple[Schedule, ...] = Field((), max_length=50, strict=False)  # a JSON list
    drift: bool = True
    drift_window: JsonInt = Field(500, ge=50, le=100_000)
    drift_alpha: float = Field(0.05, gt=0, lt=1)
    drift_share: float = Field(0.3, ge=0, le=1)
    data_change: bool = Field(False, description="fire when `refit ingest watch` sent rows of a changed file "
                                                 "(rows whose source is file:<name>)")
    performance: bool = True
    performance_window: JsonInt = Field(200, ge=20, le=100_000)
    accuracy_drop: float = Field(0.10, gt=0, lt=1, description="relative drop of live accuracy vs holdout")
    rmse_increase: float = Field(0.15, gt=0, le=100, description="relative rise of live RMSE vs holdout")
    min_new_samples: JsonInt = Field(50, ge=0, le=10**9, description="data sufficiency for automatic triggers")
    cooldown_minutes: float = Field(30.0, ge=0, le=525_600)
    timeout_minutes: float = Field(30.0, gt=0, le=525_600)
    max_retries: JsonInt = Field(3, ge=0, le=20)
    backoff_minutes: float = Field(1.0, gt=0, le=10_080)
    rejection_backoff_samples: JsonInt = Field(
        250, ge=0, le=10**9, description="after a rejected candidate, hold the automatic trigger that caused it "
                                         "until this many new samples arrived, doubled for each rejection in a row "
                                         "(0: never hold); counted in samples, so it means the same at any pace")
    rejection_backoff_max_samples: JsonInt = Field(4000, ge=0, le=10**9)
    adaptive: bool = True
    adaptive_min_days: float = Field(3.0, gt=0, le=3650)
    adaptive_max_days: float = Field(30.0, gt=0, le=3650)


class RetentionSpec(_Spec):
    """How much of a model's history is kept (refit.core.retention), collected on a schedule.

    Artifacts: of the champion, of the versions the newest ``keep_versions`` serving decisions named
    (rollback targets), of the newest ``keep_versions`` versions and of every candidate not yet judged.
    Rows: the trainer's dataset keeps its newest ``dataset_max_rows`` rows (default: the training
    window's size, ``training.window_max_rows``: no training reads an older one), the holdout its
    newest ``holdout_max_rows`` (default ``training.holdout_max_rows``), and neither keeps a row older
    than ``max_age_days`` (default ``training.window_max_age_days``; none: no age limit). Histories
    (decisions, fired triggers, retrain requests, detected changes): the newest ``keep_decisions``,
    and always every decision a rollback may still follow or not yet published."""

    keep_versions: int = Field(10, ge=2, le=10_000)
    dataset_max_rows: int | None = Field(None, ge=10, le=10**9)
    holdout_max_rows: int | None = Field(None, ge=1, le=10**9)
    max_age_days: float | None = Field(None, gt=0, le=36_500)
    keep_decisions: int = Field(1000, ge=10, le=10_000_000)


FallbackKind = Literal["previous", "prior", "rules"]


class RulesSpec(_Spec):
    """Keyword rules of a text model (seed 002's last resort): the first label, in this order, one
    of whose keywords is a word (or a phrase) of the text; ``default`` when none is."""

    keywords: dict[str, tuple[str, ...]] = Field(min_length=1)
    default: str

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        if any(not words or any(not w.strip() for w in words) for words in value.values()):
            raise ValueError("every label needs at least one non-empty keyword")
        return {label: tuple(w.strip().lower() for w in words) for label, words in value.items()}


class ServingSpec(_Spec):
    """What a replica answers with when it cannot serve the champion (refit.core.fallback).

    ``fallback`` is tried in order: ``previous``, the last champion that loads (when the newest
    one's artifact does not); ``prior``, the class prior or the mean of the holdout's labels;
    ``rules``, the keyword ``rules`` of a text model. Every fallback answer is flagged."""

    fallback: tuple[FallbackKind, ...] = ("previous",)
    rules: RulesSpec | None = None

    @model_validator(mode="after")
    def _rules(self) -> ServingSpec:
        if len(set(self.fallback)) != len(self.fallback):
            raise ValueError("fallback lists each kind at most once")
        if ("rules" in self.fallback) != (self.rules is not None):
            raise ValueError("serving.rules is needed exactly when fallback lists rules")
        return self


# The sections of a model's spec an operator may replace while it runs (PUT /v1/models/{name}/config/{section}).
RUNTIME_SECTIONS = ("triggers", "safeguard", "training")


class ModelSpec(_Spec):
    name: str
    task: Task
    input: InputSpec
    estimator: EstimatorSpec
    labels: tuple[str, ...] | None = None
    safeguard: SafeguardSpec = SafeguardSpec()
    training: TrainingSpec = TrainingSpec()
    quality: QualitySpec = QualitySpec()
    triggers: TriggersSpec = TriggersSpec()
    bounds: BoundsSpec = BoundsSpec()
    retention: RetentionSpec = RetentionSpec()
    serving: ServingSpec = ServingSpec()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("model names are lowercase letters, digits, '-' and '_'")
        return value

    @model_validator(mode="after")
    def _defaults(self) -> ModelSpec:
        known = {rule.name for rule in self.safeguard.metrics}
        wrong = known - set(DEFAULT_METRICS[self.task])
        if wrong:
            raise ValueError(f"metrics {sorted(wrong)} do not apply to {self.task}")
        missing = [MetricRule(name=m) for m in DEFAULT_METRICS[self.task] if m not in known]
        if missing:
            rules = (*self.safeguard.metrics, *missing)
            object.__setattr__(self, "safeguard", self.safeguard.model_copy(update={"metrics": rules}))
        if self.task == "regression" and self.labels is not None:
            raise ValueError("a regression model has no label set")
        keyword_rules = self.serving.rules
        if keyword_rules is not None:
            if self.task != "classification" or self.input.kind != "text":
                raise ValueError("serving.rules are for text classification models")
            named = {*keyword_rules.keywords, keyword_rules.default}
            if self.labels is not None and (unknown := sorted(named - set(self.labels))):
                raise ValueError(f"serving.rules name labels the model does not have: {unknown}")
        unknown = sorted(set(self.bounds.per_feature) - set(self.input.features))
        if unknown:
            raise ValueError(f"bounds.per_feature names unknown features {unknown[:5]}")
        if self.task == "classification" and self.bounds.label != Bound():
            raise ValueError("bounds.label applies to regression labels only")
        for name in self.input.features:
            low, high = self.bounds.feature_range(name)
            if low > high:
                raise ValueError(f"bounds of feature {name}: [{low}, {high}] is empty within ±max_abs")
        low, high = self.bounds.label_range()
        if low > high:
            raise ValueError(f"bounds.label: [{low}, {high}] is empty within ±max_abs")
        self._retention_keeps_what_is_read()
        return self

    def _retention_keeps_what_is_read(self) -> None:
        """Retention never deletes a row a training or a judgement reads."""
        retention, training = self.retention, self.training
        if retention.dataset_max_rows is not None and retention.dataset_max_rows < training.window_max_rows:
            raise ValueError(f"retention.dataset_max_rows ({retention.dataset_max_rows}) is below the training window "
                             f"(training.window_max_rows {training.window_max_rows})")
        if retention.holdout_max_rows is not None and retention.holdout_max_rows < training.holdout_max_rows:
            raise ValueError(f"retention.holdout_max_rows ({retention.holdout_max_rows}) is below what the safeguard "
                             f"judges on (training.holdout_max_rows {training.holdout_max_rows})")
        age, window = retention.max_age_days, training.window_max_age_days
        if age is not None and window is not None and age < window:
            raise ValueError(f"retention.max_age_days ({age}) is below training.window_max_age_days ({window})")

    @cached_property
    def feature_ranges(self) -> tuple[tuple[str, float, float], ...]:
        """(name, low, high) of every feature in order: the closed interval its value must lie in."""
        return tuple((name, *self.bounds.feature_range(name)) for name in self.input.features)

    def configured(self, sections: Mapping[str, Any]) -> ModelSpec:
        """This spec with whole ``sections`` replaced (``RUNTIME_SECTIONS``), validated as one spec
        (:class:`ValidationError`): what the operator set at run time over the spec file."""
        unknown = sorted(set(sections) - set(RUNTIME_SECTIONS))
        if unknown:
            raise ValueError(f"sections {unknown} are not configurable at run time ({', '.join(RUNTIME_SECTIONS)} are)")
        return ModelSpec.model_validate({**self.model_dump(mode="json", by_alias=True), **sections})

    def kept_rows(self) -> tuple[int, int, float | None]:
        """(dataset rows, holdout rows, max age in days or None) that retention keeps of this model."""
        retention, training = self.retention, self.training
        return (retention.dataset_max_rows or training.window_max_rows,
                retention.holdout_max_rows or training.holdout_max_rows,
                retention.max_age_days or training.window_max_age_days)

    def spec_hash(self) -> str:
        canonical = orjson.dumps(self.model_dump(mode="json", by_alias=True), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()[:16]


class ModelSpecs(_Spec):
    models: tuple[ModelSpec, ...]

    @model_validator(mode="after")
    def _unique(self) -> ModelSpecs:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("model names must be unique")
        return self

    def get(self, name: str) -> ModelSpec:
        for spec in self.models:
            if spec.name == name:
                return spec
        raise UnknownModelError(f"no model named {name!r}; known: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def put(self, spec: ModelSpec) -> None:
        """Replace the spec of ``spec``'s model in place: configuration at run time, seen at once by every
        part holding these specs (each reads a model's spec when it uses it)."""
        self.get(spec.name)
        object.__setattr__(self, "models", tuple(spec if m.name == spec.name else m for m in self.models))


def load_specs(path: str | Path) -> ModelSpecs:
    """Read and validate a spec file; every problem becomes a :class:`ConfigError`."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read model specs at {path}: {exc}") from None
    try:
        return ModelSpecs.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid model specs in {path}:\n{exc}") from None
