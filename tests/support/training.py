"""Driving the trainer's code one row at a time: what tests build datasets and candidates with.

The trainer itself reads its window as columns (``DatasetStore.read_window``) and fits a
``TrainingSet`` (``fit_set``); a row object per sample is only worth its cost in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import numpy as np
import orjson

from refit.core.filters import Columns, FilterStats, Sample, filter_columns
from refit.specs import ModelSpec
from services.trainer.fit import Fitted, fit_set
from services.trainer.store import DatasetStore
from services.trainer.training_set import select

S = TypeVar("S", bound=Sample)


@dataclass(frozen=True)
class Row:
    sample_id: str
    features: dict[str, float] | None
    text: str | None
    label: str
    confidence: float | None
    occurred_at: str


def apply_filters(spec: ModelSpec, rows: Sequence[S]) -> tuple[list[S], FilterStats]:
    """The rows to train on, oldest first, and what each filter removed (the trainer's column filters)."""
    kept, stats = filter_columns(spec, Columns.from_samples(spec, rows))
    return [rows[i] for i in kept.tolist()], stats


def fit(spec: ModelSpec, rows: list[Row]) -> Fitted:
    """Fit on the rows not held back, convert, and check the conversion on the held-back rows."""
    columns = Columns.from_samples(spec, rows)
    return fit_set(spec, select(spec, [r.sample_id for r in rows], columns, np.arange(len(rows))))


def row_window(store: DatasetStore, model: str, max_rows: int, since: datetime | None = None) -> tuple[list[Row], int]:
    """The window ``store.read_window`` reads, as one object per row, and the highest seq it considered."""
    _, low, high, considered = store._bounds(model, max_rows, since)
    rows = [Row(r[1], orjson.loads(r[2]) if r[2] is not None else None, r[3], r[4], r[5], r[6])
            for page in store._pages(model, low, high, since, 1024) for r in page]
    return rows, considered


def sample_ids(store: DatasetStore, model: str) -> set[str]:
    with store._lock:
        return {r[0] for r in store._db.execute("SELECT sample_id FROM samples WHERE model = ?", (model,))}
