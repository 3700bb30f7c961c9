"""From the stored dataset to what a candidate is fitted on: window, quality filters, held-back split.

Synchronous and CPU-bound, like fitting: the service runs :func:`prepare` in a worker thread.
What is held in memory is the window as columns (a float64 matrix for numeric models, see
:class:`~services.trainer.store.Window`) while it is filtered, then only the float32 matrices
of the rows that are fitted on and held back.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from refit.core.filters import Columns, FilterStats, block_rows, filter_columns
from refit.core.split import holdout_score
from refit.specs import ModelSpec
from services.trainer.store import DatasetStore

@dataclass(frozen=True)
class TrainingSet:
    """The rows a candidate is fitted on and the rows held back to check its ONNX conversion.

    Inputs are a float32 matrix in spec order, or one column of texts; targets are label
    strings (classification) or float64 (regression).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_back: np.ndarray
    fingerprint: str = ""  # of the sample ids fitted on (data_fingerprint): the candidate's data lineage

    @property
    def rows_trained(self) -> int:
        return len(self.x_train)

    @property
    def rows_held_back(self) -> int:
        return len(self.x_back)


@dataclass(frozen=True)
class WindowInfo:
    """What a training set came from: the window's size, time span and top seq, filters, classes."""

    filters: FilterStats
    rows_seen: int
    classes: int
    first_at: datetime | None
    last_at: datetime | None
    top_seq: int
    seconds: dict[str, float]


def prepare(store: DatasetStore, spec: ModelSpec, now: datetime,
            since: datetime | None = None) -> tuple[TrainingSet, WindowInfo]:
    """Read the model's window, filter it and split off the held-back rows (timed per stage).

    The window is the newest ``window_max_rows`` rows, none older than ``window_max_age_days`` nor
    than ``since`` (a concept change the monitor detected). It is gone when this returns: fitting
    holds only the training set.
    """
    started = time.perf_counter()
    age = spec.training.window_max_age_days
    oldest = [t for t in (now - timedelta(days=age) if age else None, since) if t is not None]
    window = store.read_window(spec.name, spec.input.features if spec.input.kind == "numeric" else None,
                               spec.training.window_max_rows, max(oldest) if oldest else None)
    loaded = time.perf_counter()
    kept, stats = filter_columns(spec, window.columns)
    filtered = time.perf_counter()
    data = select(spec, window.sample_ids, window.columns, kept)
    classes = len(np.unique(window.columns.labels[kept])) if spec.task == "classification" else 0
    seconds = {"load": loaded - started, "filter": filtered - loaded, "split": time.perf_counter() - filtered}
    return data, WindowInfo(stats, len(window), classes, window.first_at, window.last_at, window.top_seq, seconds)


def select(spec: ModelSpec, sample_ids: Sequence[str], columns: Columns, rows: np.ndarray) -> TrainingSet:
    """``rows`` of ``columns`` (in order) minus a deterministic held-back fraction, as model inputs.

    The held-back rows are chosen by sample id; when none is, the newest 50 training rows are
    used for the conversion check instead.
    """
    salt, fraction = f"held-back\x00{spec.name}", spec.training.held_back_fraction
    held = np.fromiter((holdout_score(sample_ids[i], salt) < fraction for i in rows.tolist()), dtype=bool,
                       count=len(rows))
    train = rows[~held]
    back = rows[held] if held.any() else train[-min(len(train), 50):]
    return TrainingSet(_inputs(spec, columns, train), _targets(spec, columns, train), _inputs(spec, columns, back),
                       data_fingerprint(sample_ids[i] for i in train.tolist()))


def data_fingerprint(sample_ids: Iterable[str]) -> str:
    """SHA-256 of the sorted sample ids, one per line: the same rows give the same fingerprint, in any order."""
    digest = hashlib.sha256()
    for sample_id in sorted(sample_ids):
        digest.update(sample_id.encode() + b"\n")
    return digest.hexdigest()


def _inputs(spec: ModelSpec, columns: Columns, rows: np.ndarray) -> np.ndarray:
    if spec.input.kind == "text":
        texts = columns.texts or ()
        column = np.empty((len(rows), 1), dtype=object)
        column[:, 0] = [texts[i] or "" for i in rows.tolist()]
        return column
    assert columns.features is not None
    out = np.empty((len(rows), columns.features.shape[1]), dtype=np.float32)
    step = block_rows(columns.features)  # no float64 copy of the whole selection
    for start in range(0, len(rows), step):
        out[start:start + step] = columns.features[rows[start:start + step]]
    return out


def _targets(spec: ModelSpec, columns: Columns, rows: np.ndarray) -> np.ndarray:
    codes = columns.labels[rows]
    if spec.task == "classification":
        names = np.empty(len(columns.label_names), dtype=object)
        names[:] = list(columns.label_names)
        return names[codes]
    values = np.array([_float(v) for v in columns.label_names], dtype=np.float64)
    return values[codes]


def _float(label: str) -> float:
    try:
        return float(label)
    except ValueError:  # filtered out as malformed before it is ever fitted on
        return float("nan")
