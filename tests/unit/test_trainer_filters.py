"""The trainer's column filters: the same rows and counts as the per-row rules they replaced, in linear time."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from refit.core.filters import (Columns, FilterStats, feature_values, filter_columns, malformed_reason,
                                row_groups)
from refit.specs import ModelSpec
from tests.support.training import apply_filters


@dataclass(frozen=True)
class R:
    features: dict[str, object] | None
    label: str
    confidence: float | None = None
    text: str | None = None


def reference(spec: ModelSpec, rows: Sequence[R]) -> tuple[list[R], FilterStats]:
    """The per-row implementation the column filters replaced (a dict of tuples of Python floats)."""
    policy = spec.quality
    valid = [r for r in rows if malformed_reason(spec, r) is None]
    confident = [r for r in valid if r.confidence is None or r.confidence >= policy.min_confidence]
    groups: dict[Hashable, list[R]] = defaultdict(list)
    for r in confident:
        key = r.text if spec.input.kind == "text" else tuple((r.features or {})[f] for f in spec.input.features)
        groups[key].append(r)
    kept: list[R] = []
    duplicates = conflicts = 0
    for group in groups.values():
        labels = Counter(r.label for r in group)
        if len(labels) == 1 or policy.conflicts == "keep":
            winners = set(labels)
        elif policy.conflicts == "majority":
            (top, n), (_, runner_up) = labels.most_common(2)
            winners = {top} if n > runner_up else set()
        else:
            winners = set()
        seen: set[str] = set()
        for r in group:
            if r.label not in winners:
                conflicts += 1
            elif policy.drop_duplicates and r.label in seen:
                duplicates += 1
            else:
                seen.add(r.label)
                kept.append(r)
    rare = 0
    if spec.task == "classification" and policy.min_per_class > 1:
        sizes = Counter(r.label for r in kept)
        small = {label for label, n in sizes.items() if n < policy.min_per_class}
        rare = sum(sizes[label] for label in small)
        kept = [r for r in kept if r.label not in small]
    order = {id(r): i for i, r in enumerate(rows)}
    kept.sort(key=lambda r: order[id(r)])
    return kept, FilterStats(len(rows), len(rows) - len(valid), len(valid) - len(confident), duplicates, conflicts,
                             rare, len(kept))


def numeric_spec(task: str = "classification", **quality: object) -> ModelSpec:
    return ModelSpec.model_validate({
        "name": "m", "task": task, "labels": ["a", "b", "c"] if task == "classification" else None,
        "input": {"features": ["x", "y"]},
        "estimator": {"class": "sklearn.linear_model.LogisticRegression" if task == "classification"
                      else "sklearn.linear_model.Ridge"}, "quality": quality})


def text_spec(**quality: object) -> ModelSpec:
    return ModelSpec.model_validate({"name": "t", "task": "classification", "input": {"kind": "text"},
                                     "estimator": {"class": "sklearn.linear_model.LogisticRegression"},
                                     "quality": quality})


ODD_VALUES: list[object] = [float("nan"), float("inf"), -float("inf"), None, True, "1.0", 10**400, -0.0, 3]


def messy_rows(spec: ModelSpec, n: int, seed: int) -> list[R]:
    """Few distinct inputs (so many duplicates and conflicts), some malformed, some unconfident."""
    rng = random.Random(seed)
    labels = ["a", "b", "c", "z"] if spec.task == "classification" else ["1.5", "2", "2.0", "nan", "high"]
    rows = []
    for _ in range(n):
        label = rng.choices(labels[:3], weights=[6, 3, 1])[0] if rng.random() < 0.9 else rng.choice(labels)
        confidence = rng.choice([None, None, 0.2, 0.5, 0.9])
        if spec.input.kind == "text":
            text = rng.choice(["", "  ", None, "warm soup ", *(f"text {i}" for i in range(150))])
            rows.append(R(None, label, confidence, text))
            continue
        features: dict[str, object] = {"x": float(rng.randint(0, 40)), "y": rng.choice([0.0, 1.0, -0.0, 0.5])}
        if rng.random() < 0.1:
            features[rng.choice(["x", "y"])] = rng.choice(ODD_VALUES)
        if rng.random() < 0.03:
            del features["y"]
        rows.append(R(features if rng.random() > 0.02 else None, label, confidence))
    return rows


SPECS = [numeric_spec(), numeric_spec(conflicts="drop_all"), numeric_spec(conflicts="keep"),
         numeric_spec(drop_duplicates=False), numeric_spec(min_per_class=10, min_confidence=0.6),
         numeric_spec("regression"), numeric_spec("regression", conflicts="keep"), text_spec(),
         text_spec(conflicts="drop_all", min_per_class=12)]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.name}-{s.task}-{s.quality.conflicts}-"
                         f"{s.quality.drop_duplicates}-{s.quality.min_per_class}")
def test_columns_keep_exactly_what_the_per_row_rules_keep(spec: ModelSpec, seed: int) -> None:
    rows = messy_rows(spec, 300, seed)
    want_rows, want_stats = reference(spec, rows)
    got_rows, got_stats = apply_filters(spec, rows)
    assert got_stats == want_stats
    assert [id(r) for r in got_rows] == [id(r) for r in want_rows]
    assert got_stats.seen == got_stats.kept + got_stats.malformed + got_stats.low_confidence + \
        got_stats.duplicates + got_stats.conflicts + got_stats.rare_class


def test_feature_values_mark_every_unusable_value_as_nan() -> None:
    names = ["a", "b", "c", "d", "e", "f"]
    values = feature_values({"a": 1.5, "b": 2, "c": True, "d": "3", "e": 10**400}, names)
    assert values[:2] == [1.5, 2.0] and all(math.isnan(v) for v in values[2:])
    assert all(math.isnan(v) for v in feature_values(None, names))
    assert feature_values({"a": -0.0, "b": 1.0, "c": 2.0, "d": 3.0, "e": 4.0, "f": 5.0}, names)[0] == 0.0


def test_equal_inputs_share_a_group_and_minus_zero_equals_zero() -> None:
    x = np.array([[0.0, 1.0], [-0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1e-300]])
    groups = row_groups(x, np.arange(5))
    assert groups[0] == groups[1] == groups[3]
    assert len({groups[0], groups[2], groups[4]}) == 3


def test_a_hash_collision_falls_back_to_exact_groups() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, size=(200, 3)).astype(np.float64)
    exact = row_groups(x, np.arange(200))
    colliding = row_groups(x, np.arange(200), digest=lambda _: 0)  # every row hashes alike
    pairs = {(int(a), int(b)) for a, b in zip(exact, colliding, strict=True)}
    assert len(pairs) == len(set(exact.tolist())) == len(set(colliding.tolist()))  # the same partition


def test_a_large_window_filters_in_linear_time_with_exact_counts() -> None:
    # 200,000 rows with 100,000 distinct inputs: per-row objects would be ~1 GB; this is a few arrays.
    rng = np.random.default_rng(0)
    n = 200_000
    x = rng.integers(0, 100_000, size=n).astype(np.float64)[:, None] * np.ones((1, 2))
    labels = np.where(rng.random(n) < 0.9, 0, 1).astype(np.int64)
    columns = Columns(labels, ["a", "b"], np.full(n, math.inf), features=x)
    kept, stats = filter_columns(numeric_spec(), columns)
    distinct = len(np.unique(x[:, 0]))
    assert stats.seen == n and stats.kept == len(kept) <= distinct
    assert stats.kept + stats.duplicates + stats.conflicts == n
    assert np.all(np.diff(kept) > 0)  # oldest first
    assert len(np.unique(x[kept, 0])) == len(kept)  # one row per input survives
