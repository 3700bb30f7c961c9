"""Data-quality filters applied to the training window before every training run.

In order: malformed rows (a value missing, not finite, or outside the spec's bounds), labels below the minimum confidence, then rows grouped by
their exact input: copies with the same label are duplicates; different labels for
the same input are conflicts, resolved by the spec's policy; finally classes with
too few rows. Every removed row is counted under exactly one reason, so
``seen == kept + sum(removed)``.

Conflict policies: ``majority`` keeps one row of the strictly most frequent label
(the other labels' rows are conflicts, extra copies of the winner duplicates; a tie
drops the whole group as conflicts); ``drop_all`` drops every row of a conflicting
input; ``keep`` keeps one row per distinct label.

The filters work on columns (:class:`Columns`: a float matrix, label codes, a
confidence vector), so a window of a million rows costs a few arrays and sorts, not a
Python object per row and value; :meth:`Columns.from_samples` builds them from objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from refit.specs import ModelSpec

_BLOCK_BYTES = 8 << 20  # work on a window's matrix in blocks of this size, never on a whole copy
_FLOAT = {float}


class Sample(Protocol):
    @property
    def features(self) -> dict[str, float] | None: ...
    @property
    def text(self) -> str | None: ...
    @property
    def label(self) -> str: ...
    @property
    def confidence(self) -> float | None: ...


@dataclass(frozen=True)
class FilterStats:
    seen: int
    malformed: int
    low_confidence: int
    duplicates: int
    conflicts: int
    rare_class: int
    kept: int

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Columns:
    """Rows as columns, in arrival order.

    ``labels`` are codes into ``label_names``; ``confidence`` is +inf where none was given;
    ``features`` is a (rows, features) float64 matrix in spec order with NaN wherever a value
    is missing or not a number (numeric models), ``texts`` the texts (text models).
    """

    labels: np.ndarray
    label_names: Sequence[str]
    confidence: np.ndarray
    features: np.ndarray | None = None
    texts: Sequence[str | None] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_samples(cls, spec: ModelSpec, rows: Sequence[Sample]) -> Columns:
        codes: dict[str, int] = {}
        labels = np.fromiter((codes.setdefault(r.label, len(codes)) for r in rows), np.int64, len(rows))
        confidence = np.fromiter((math.inf if r.confidence is None else r.confidence for r in rows),
                                 np.float64, len(rows))
        if spec.input.kind == "text":
            return cls(labels, list(codes), confidence, texts=[r.text for r in rows])
        names = spec.input.features
        features = np.array([feature_values(r.features, names) for r in rows], dtype=np.float64)
        return cls(labels, list(codes), confidence, features=features.reshape(len(rows), len(names)))


def feature_values(features: Mapping[str, object] | None, names: Sequence[str]) -> list[float]:
    """A row's features in ``names`` order; NaN where a value is missing or not a number.

    A NaN or infinite value makes the row malformed, as :func:`malformed_reason` says.
    """
    if features is None:
        return [math.nan] * len(names)
    values = [*map(features.get, names)]
    if set(map(type, values)) == _FLOAT:  # what the store holds (2 µs for 64 values, half the generator's)
        return values  # type: ignore[return-value]
    return [_number(v) for v in values]


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    try:
        return float(value)
    except OverflowError:  # an integer beyond any float
        return math.nan


def _input_reason(spec: ModelSpec, row: Sample) -> str | None:
    if spec.input.kind == "text":
        if not _usable_text(row.text):
            return "empty text"
        return "text longer than the spec's bounds" if len(row.text or "") > spec.bounds.max_chars else None
    features = row.features or {}
    for name, low, high in spec.feature_ranges:
        value = _number(features.get(name))
        if not math.isfinite(value):
            return f"feature {name} missing or not a finite number"
        if not low <= value <= high:
            return f"feature {name} outside the spec's bounds"
    return None


def _usable_text(text: str | None) -> bool:
    return bool(text and text.strip())


def _label_reason(spec: ModelSpec, label: str) -> str | None:
    if spec.task == "classification":
        if spec.labels is not None and label not in spec.labels:
            return f"label {label!r} not in the label set"
        return None
    try:
        value = float(label)
    except ValueError:
        return "label not a number"
    if not math.isfinite(value):
        return "label not finite"
    low, high = spec.bounds.label_range()
    if not low <= value <= high:  # stored before the spec bounded it
        return "label outside the spec's bounds"
    return None


def malformed_reason(spec: ModelSpec, row: Sample) -> str | None:
    """Why a stored row cannot be trained on (e.g. stored before the spec's label set changed)."""
    return _input_reason(spec, row) or _label_reason(spec, row.label)


def filter_columns(spec: ModelSpec, columns: Columns) -> tuple[np.ndarray, FilterStats]:
    """The indices of the rows to train on (ascending) and what each filter removed."""
    policy = spec.quality
    valid = ~_malformed(spec, columns)
    confident = valid & (columns.confidence >= policy.min_confidence)  # NaN is not confident
    rows = np.flatnonzero(confident)
    labels = columns.labels[rows]
    keep, duplicates, conflicts = _resolve(_input_groups(spec, columns, rows), labels, policy.conflicts,
                                           policy.drop_duplicates)
    kept, labels = rows[keep], labels[keep]
    rare = 0
    if spec.task == "classification" and policy.min_per_class > 1:
        small = np.bincount(labels, minlength=len(columns.label_names)) < policy.min_per_class
        too_rare = small[labels]
        rare, kept = int(too_rare.sum()), kept[~too_rare]
    n, n_valid, n_confident = len(columns), int(valid.sum()), len(rows)
    return kept, FilterStats(n, n - n_valid, n_valid - n_confident, duplicates, conflicts, rare, len(kept))


def _malformed(spec: ModelSpec, columns: Columns) -> np.ndarray:
    bad_label = np.array([_label_reason(spec, name) is not None for name in columns.label_names], dtype=bool)
    bad = bad_label[columns.labels] if len(columns) else np.zeros(0, dtype=bool)
    if spec.input.kind == "text":
        texts, limit = columns.texts or (), spec.bounds.max_chars
        return bad | np.fromiter((not _usable_text(t) or len(t or "") > limit for t in texts), dtype=bool,
                                 count=len(columns))
    x = columns.features
    assert x is not None
    # Within the spec's bounds (NaN is within none): a row stored before the bounds were set is malformed.
    low, high = (np.array([r[i] for r in spec.feature_ranges], dtype=np.float64) for i in (1, 2))
    step = block_rows(x)
    for start in range(0, len(x), step):
        block = x[start:start + step]
        bad[start:start + step] |= ~((block >= low) & (block <= high)).all(axis=1)
    return bad


def block_rows(x: np.ndarray) -> int:
    """How many rows of ``x`` make one block of work (about 8 MiB)."""
    return max(1, _BLOCK_BYTES // max(1, x.shape[1] * x.itemsize))


def _input_groups(spec: ModelSpec, columns: Columns, rows: np.ndarray) -> np.ndarray:
    """A group id for each of ``rows``: the same id exactly when the inputs are equal."""
    if spec.input.kind == "text":
        texts = columns.texts or ()
        ids: dict[str | None, int] = {}
        return np.fromiter((ids.setdefault(texts[i], len(ids)) for i in rows.tolist()), np.int64, len(rows))
    assert columns.features is not None
    return row_groups(columns.features, rows)


def row_groups(x: np.ndarray, rows: np.ndarray, digest: Callable[[bytes], int] = hash) -> np.ndarray:
    """Group ids of the finite rows ``x[rows]``, equal ids for equal rows (as floats: 0.0 == -0.0).

    Linear and light: a hash of each row's bytes, then an exact comparison of every row with
    its group's first row; on a hash collision the groups come from an exact sort instead.
    """
    hashes = np.empty(len(rows), dtype=np.int64)
    width, step = x.shape[1] * x.itemsize, block_rows(x)
    for start in range(0, len(rows), step):
        block = (x[rows[start:start + step]] + 0.0).tobytes()  # + 0.0 turns -0.0 into 0.0
        hashes[start:start + step] = [digest(block[i:i + width]) for i in range(0, len(block), width)]
    _, first, groups = np.unique(hashes, return_index=True, return_inverse=True)
    groups = groups.reshape(-1)
    for start in range(0, len(rows), step):
        mine = rows[start:start + step]
        if not (x[mine] == x[rows[first[groups[start:start + step]]]]).all():
            return np.unique(x[rows] + 0.0, axis=0, return_inverse=True)[1].reshape(-1)
    return groups


def _resolve(groups: np.ndarray, labels: np.ndarray, policy: str,
             drop_duplicates: bool) -> tuple[np.ndarray, int, int]:
    """Which rows survive the conflict policy and the duplicate filter; (mask, duplicates, conflicts)."""
    if len(groups) == 0:
        return np.zeros(0, dtype=bool), 0, 0
    pairs = groups * (int(labels.max()) + 1) + labels  # one code per (input, label)
    _, first, inverse, count = np.unique(pairs, return_index=True, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    pair_group = groups[first]
    single = np.bincount(pair_group)[pair_group] == 1  # the input has one label: no conflict
    if policy == "keep":
        winner = np.ones(len(first), dtype=bool)
    elif policy == "majority":
        winner = single | _strict_top(pair_group, count)
    else:
        winner = single
    wins = winner[inverse]
    keep = wins & (np.arange(len(groups)) == first[inverse]) if drop_duplicates else wins
    return keep, int(wins.sum() - keep.sum()), int(len(groups) - wins.sum())


def _strict_top(group: np.ndarray, count: np.ndarray) -> np.ndarray:
    """For each (input, label) pair: is its count strictly above every other label's of that input?"""
    order = np.lexsort((-count, group))  # by input, most frequent label first
    g, c = group[order], count[order]
    top = np.r_[True, g[1:] != g[:-1]]
    runner_up = np.where(np.r_[g[1:] == g[:-1], False], np.r_[c[1:], 0], 0)
    out = np.zeros(len(count), dtype=bool)
    out[order] = top & (c > runner_up)
    return out
