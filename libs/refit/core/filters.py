"""Data-quality filters applied to the training window before every training run.

In order: malformed rows, labels below the minimum confidence, then rows grouped by
their exact input: copies with the same label are duplicates; different labels for
the same input are conflicts, resolved by the spec's policy; finally classes with
too few rows. Every removed row is counted under exactly one reason, so
``seen == kept + sum(removed)``.

Conflict policies: ``majority`` keeps one row of the strictly most frequent label
(the other labels' rows are conflicts, extra copies of the winner duplicates; a tie
drops the whole group as conflicts); ``drop_all`` drops every row of a conflicting
input; ``keep`` keeps one row per distinct label.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from refit.specs import ModelSpec


class Sample(Protocol):
    @property
    def features(self) -> dict[str, float] | None: ...
    @property
    def text(self) -> str | None: ...
    @property
    def label(self) -> str: ...
    @property
    def confidence(self) -> float | None: ...


S = TypeVar("S", bound=Sample)


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


def malformed_reason(spec: ModelSpec, row: Sample) -> str | None:
    """Why a stored row cannot be trained on (e.g. stored before the spec's label set changed)."""
    if spec.input.kind == "text":
        if not row.text or not row.text.strip():
            return "empty text"
    else:
        features = row.features or {}
        for name in spec.input.features:
            value = features.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return f"feature {name} missing or not a finite number"
    if spec.task == "classification":
        if spec.labels is not None and row.label not in spec.labels:
            return f"label {row.label!r} not in the label set"
    else:
        try:
            if not math.isfinite(float(row.label)):
                return "label not finite"
        except ValueError:
            return "label not a number"
    return None


def input_key(spec: ModelSpec, row: Sample) -> Hashable:
    if spec.input.kind == "text":
        return row.text
    features = row.features or {}
    return tuple(features[f] for f in spec.input.features)


def _winners(labels: Counter[str], policy: str) -> set[str]:
    """The labels an input keeps under the conflict policy."""
    if len(labels) == 1 or policy == "keep":
        return set(labels)
    if policy == "majority":
        (top, n), (_, runner_up) = labels.most_common(2)
        if n > runner_up:
            return {top}
    return set()


def apply_filters(spec: ModelSpec, rows: Sequence[S]) -> tuple[list[S], FilterStats]:
    """The rows to train on, oldest first, and what each filter removed."""
    policy = spec.quality
    valid = [r for r in rows if malformed_reason(spec, r) is None]
    malformed = len(rows) - len(valid)
    confident = [r for r in valid if r.confidence is None or r.confidence >= policy.min_confidence]
    low_confidence = len(valid) - len(confident)
    groups: dict[Hashable, list[S]] = defaultdict(list)
    for r in confident:
        groups[input_key(spec, r)].append(r)
    kept: list[S] = []
    duplicates = conflicts = 0
    for group in groups.values():
        winners = _winners(Counter(r.label for r in group), policy.conflicts)
        seen_labels: set[str] = set()
        for r in group:
            if r.label not in winners:
                conflicts += 1
            elif policy.drop_duplicates and r.label in seen_labels:
                duplicates += 1
            else:
                seen_labels.add(r.label)
                kept.append(r)
    rare = 0
    if spec.task == "classification" and policy.min_per_class > 1:
        sizes = Counter(r.label for r in kept)
        small = {label for label, n in sizes.items() if n < policy.min_per_class}
        rare = sum(sizes[label] for label in small)
        kept = [r for r in kept if r.label not in small]
    order = {id(r): i for i, r in enumerate(rows)}
    kept.sort(key=lambda r: order[id(r)])
    stats = FilterStats(len(rows), malformed, low_confidence, duplicates, conflicts, rare, len(kept))
    return kept, stats
