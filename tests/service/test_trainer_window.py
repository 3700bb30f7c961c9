"""The trainer reads only its window, as columns, and trains exactly what the per-row path trained."""

from __future__ import annotations

import math
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from refit.events import RetrainRequested, SampleIngested
from refit.specs import ModelSpec
from services.trainer.fit import fit_set
from services.trainer.store import DatasetStore
from refit.core.split import holdout_score
from services.trainer.training_set import data_fingerprint, prepare
from tests.support.training import apply_filters, fit, row_window

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FEATURES = [f"f{i}" for i in range(8)]


def spec(window: int = 200_000, **training: object) -> ModelSpec:
    return ModelSpec.model_validate({
        "name": "m", "task": "classification", "labels": ["a", "b", "c"], "input": {"features": FEATURES},
        "estimator": {"class": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 500}},
        "training": {"window_max_rows": window, "min_samples": 10, **training}})


def samples(start: int, stop: int, seed: int = 0) -> list[SampleIngested]:
    """Separable rows with some duplicates, conflicts, low confidence and a label outside the set."""
    rng = np.random.default_rng([seed, start])
    out = []
    for i in range(start, stop):
        label = "abc"[i % 3]
        x = rng.normal(size=len(FEATURES)) + "abc".index(label)
        if i % 17 == 0 and out:  # an exact copy of the previous input, sometimes with another label
            x = np.array([out[-1].features[f] for f in FEATURES])  # type: ignore[index]
            label = out[-1].label if i % 2 else "b"  # type: ignore[assignment]
        out.append(SampleIngested(
            model="m", sample_id=f"s{i}", features=dict(zip(FEATURES, x.tolist(), strict=True)),
            label="z" if i % 97 == 5 else label, confidence=0.2 if i % 23 == 0 else None,
            occurred_at=T0 + timedelta(minutes=i)))
    return out


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[Callable[..., DatasetStore]]:
    stores: list[DatasetStore] = []

    def make(rows: int, name: str = "t") -> DatasetStore:
        store = DatasetStore(tmp_path / f"{name}.sqlite")
        for lo in range(0, rows, 5000):
            store.add_samples(samples(lo, min(rows, lo + 5000)), [])
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def test_rows_too_old_for_the_window_are_not_new_once_a_training_considered_them(make_store) -> None:
    """Else a model with ``min_new_samples`` is due again at every poll, training on nothing new."""
    store = make_store(300)  # received T0 .. T0+299 min
    empty = store.read_window("m", FEATURES, max_rows=1000, since=T0 + timedelta(days=1))
    assert len(empty) == 0 and empty.top_seq == 300
    store.mark_trained("m", empty.top_seq, T0)
    assert store.counts("m") == (300, 0)

    store.add_samples(samples(1000, 1100), [])  # seq 301..400, received T0+1000 min ..
    store.add_samples(samples(300, 400), [])    # seq 401..500, received earlier (a late backlog)
    window = store.read_window("m", FEATURES, max_rows=1000, since=T0 + timedelta(minutes=1000))
    assert window.sample_ids == [f"s{i}" for i in range(1000, 1100)] and window.top_seq == 500
    store.mark_trained("m", window.top_seq, T0)
    assert store.counts("m") == (500, 0)


def test_the_window_is_the_newest_rows_oldest_first_as_columns(make_store) -> None:
    store = make_store(500)
    window = store.read_window("m", FEATURES, max_rows=120)
    rows, top = row_window(store, "m", max_rows=120)
    assert window.sample_ids == [f"s{i}" for i in range(380, 500)] == [r.sample_id for r in rows]
    assert window.top_seq == top == 500
    assert window.first_at == T0 + timedelta(minutes=380) and window.last_at == T0 + timedelta(minutes=499)
    columns = window.columns
    assert columns.features is not None and columns.features.shape == (120, len(FEATURES))
    assert columns.features.tolist() == [[r.features[f] for f in FEATURES] for r in rows]  # type: ignore[index]
    assert [columns.label_names[c] for c in columns.labels] == [r.label for r in rows]
    assert [None if math.isinf(c) else c for c in columns.confidence] == [r.confidence for r in rows]


def test_a_window_by_age_reads_the_same_rows_both_ways(make_store) -> None:
    store = make_store(300)
    since = T0 + timedelta(minutes=250)
    window = store.read_window("m", FEATURES, max_rows=1000, since=since)
    assert window.sample_ids == [r.sample_id for r in row_window(store, "m", max_rows=1000, since=since)[0]]
    assert window.sample_ids == [f"s{i}" for i in range(250, 300)]
    assert len(store.read_window("m", FEATURES, max_rows=20, since=since)) == 20


def test_reading_the_window_costs_the_same_however_large_the_store(make_store) -> None:
    """The proof that only the window is read: SQLite's work and the memory held do not grow with the store."""
    def cost(store: DatasetStore) -> tuple[int, int]:
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0

        store._db.set_progress_handler(count, 100)  # called every 100 virtual-machine instructions
        tracemalloc.start()
        window = store.read_window("m", FEATURES, max_rows=500)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        store._db.set_progress_handler(None, 100)
        assert len(window) == 500
        return steps[0], peak

    small_steps, small_peak = cost(make_store(1_000, "small"))
    large_steps, large_peak = cost(make_store(30_000, "large"))
    assert large_steps < 1.2 * small_steps  # 30 times the rows, the same work
    assert large_peak < 1.5 * small_peak


def test_rows_stored_while_the_window_is_read_are_not_part_of_it(make_store) -> None:
    store = make_store(100)
    size, low, top, _ = store._bounds("m", 50, None)
    pages = store._pages("m", low, top, None, page=10)
    first = next(pages)
    store.add_samples(samples(100, 130), [])  # arrives between two pages
    rows = first + [r for page in pages for r in page]
    assert (size, len(rows), rows[-1][0]) == (50, 50, 100)


def test_the_trainer_fits_exactly_the_model_the_row_path_fits(make_store) -> None:
    store = make_store(2_000)
    s = spec(window=1_500)
    data, info = prepare(store, s, T0)
    fitted = fit_set(s, data)
    rows, top = row_window(store, "m", max_rows=1_500)
    kept, stats = apply_filters(s, rows)
    reference = fit(s, kept)
    assert info.filters == stats and info.rows_seen == 1_500 and info.top_seq == top == 2_000
    assert stats.duplicates and stats.conflicts and stats.low_confidence and stats.malformed
    assert info.classes == 3
    assert (data.x_train.dtype, data.rows_trained + data.rows_held_back) == (np.float32, stats.kept)
    assert fitted.onnx_bytes == reference.onnx_bytes
    # the data lineage: the ids fitted on (kept by the filters, not held back), in any order
    held = {r.sample_id for r in kept if holdout_score(r.sample_id, "held-back\x00m") < s.training.held_back_fraction}
    trained = [r.sample_id for r in kept if r.sample_id not in held]
    assert len(trained) == data.rows_trained and data.fingerprint == data_fingerprint(reversed(trained))
    assert data.fingerprint != data_fingerprint(trained[1:])
    assert (fitted.rows_trained, fitted.rows_held_back) == (reference.rows_trained, reference.rows_held_back)
    assert fitted.conversion.passed and fitted.iterations is not None
    assert set(info.seconds) == {"load", "filter", "split"} and set(fitted.seconds) == {"fit", "convert", "check"}


def test_whether_a_model_is_due_is_counted_only_up_to_its_thresholds(make_store) -> None:
    small, large = make_store(1_000, "small"), make_store(30_000, "large")
    assert large.counts("m") == (30_000, 30_000)
    assert large.counts("m", at_most=100) == (100, 100)
    large.mark_trained("m", 29_950, T0)
    assert large.counts("m", at_most=100) == (100, 50) and large.counts("m") == (30_000, 50)

    def steps(store: DatasetStore) -> int:
        calls = [0]

        def count() -> int:
            calls[0] += 1
            return 0

        store._db.set_progress_handler(count, 100)
        store.counts("m", at_most=300)
        store._db.set_progress_handler(None, 100)
        return calls[0]

    assert steps(large) <= steps(small) + 1  # the store is 30 times larger, the count is not


def test_every_training_after_a_detected_change_starts_at_it(make_store) -> None:
    """A request naming a concept change moves the window's start; the trainer's own sample-count path and
    the requests after it (a schedule names no change) start there too, until a newer change."""
    store = make_store(300, "changes")
    assert store.window_start("m") is None
    changed = T0 + timedelta(minutes=200)
    store.add_request(RetrainRequested(model="m", kind="performance", reason="drop",
                                       evidence={"change": {"changed_at": changed.isoformat()}}))
    store.finish_requests("m", "candidate", datetime.now(UTC))
    store.add_request(RetrainRequested(model="m", kind="schedule", reason="weekly"))
    assert store.window_start("m") == changed
    window = store.read_window("m", FEATURES, 200_000, since=store.window_start("m"))
    assert len(window) == 100 and window.first_at == changed
    later = changed + timedelta(minutes=50)
    store.add_request(RetrainRequested(model="m", kind="drift", reason="inputs",
                                       evidence={"change": {"changed_at": later.isoformat()}}))
    assert store.window_start("m") == later


def test_a_concept_change_the_monitor_recorded_moves_the_window_without_a_request(make_store) -> None:
    """ConceptChanged: a change no request named (the trigger was held, or the trainer's own count of new
    samples trains first) still starts every training after it; the latest change wins, by either path."""
    store = make_store(300, "concept")
    changed = T0 + timedelta(minutes=120)
    store.set_concept_change("m", changed)
    store.set_concept_change("m", changed - timedelta(minutes=60))  # an older one, redelivered: no effect
    assert store.window_start("m") == changed
    assert store.read_window("m", FEATURES, 200_000, since=store.window_start("m")).first_at == changed
    later = changed + timedelta(minutes=30)
    store.add_request(RetrainRequested(model="m", kind="drift", reason="inputs",
                                       evidence={"change": {"changed_at": later.isoformat()}}))
    assert store.window_start("m") == later
    store.set_concept_change("m", later + timedelta(minutes=30))
    assert store.window_start("m") == later + timedelta(minutes=30)
