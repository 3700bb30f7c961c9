"""The trainer's dataset store: idempotent by sample id and by idempotency key, windows by count and age."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from refit.events import RetrainRequested, SampleIngested
from services.trainer.store import DatasetStore
from tests.support.training import row_window, sample_ids

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def sample(i: int, *, key: str | None = None, at: datetime = T0, model: str = "m") -> SampleIngested:
    return SampleIngested(model=model, sample_id=f"s{i}", features={"x": float(i)}, label=str(i % 2),
                          idempotency_key=key, occurred_at=at)


def test_each_sample_is_stored_once_by_id_and_by_key(tmp_path) -> None:
    store = DatasetStore(tmp_path / "t.sqlite")
    assert store.add_samples([sample(1), sample(2, key="k")], []) == {"m": 2}
    # A redelivery (same id) and a different id carrying an already-seen key both change nothing.
    assert store.add_samples([sample(1), sample(3, key="k")], []) == {"m": 0}
    assert sample_ids(store, "m") == {"s1", "s2"}
    store.close()
    reopened = DatasetStore(tmp_path / "t.sqlite")  # survives a restart
    assert reopened.counts("m") == (2, 2)


def test_window_by_count_and_by_age_reads_only_the_newest(tmp_path) -> None:
    store = DatasetStore(tmp_path / "t.sqlite")
    store.add_samples([sample(i, at=T0 + timedelta(days=i)) for i in range(10)], [])
    rows, top = row_window(store, "m", max_rows=3)
    assert [r.sample_id for r in rows] == ["s7", "s8", "s9"]  # oldest first
    recent, _ = row_window(store, "m", max_rows=100, since=T0 + timedelta(days=6))
    assert [r.sample_id for r in recent] == ["s6", "s7", "s8", "s9"]
    store.mark_trained("m", top, T0)
    assert store.counts("m") == (10, 0)
    store.add_samples([sample(10)], [sample(11)])
    assert store.counts("m") == (11, 1) and store.stats()["holdout_skipped"] == {"m": 1}


def test_export_pages_every_row_in_arrival_order(tmp_path) -> None:
    store = DatasetStore(tmp_path / "t.sqlite")
    store.add_samples([sample(i) for i in range(25)], [])
    pages = list(store.export("m", page=10))
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [row[0] for page in pages for row in page] == [f"s{i}" for i in range(25)]


def test_a_training_answers_only_the_requests_made_before_it_started(tmp_path) -> None:
    """A request made while a training ran (in the demo: the performance trigger's, whose window starts at a
    detected change) was marked answered by that training, which never read it: it never got its own."""
    from refit.events import RetrainRequested

    store = DatasetStore(tmp_path / "t.sqlite")
    before = RetrainRequested(model="m", kind="manual", reason="before", occurred_at=T0)
    during = RetrainRequested(model="m", kind="performance", reason="during", occurred_at=T0 + timedelta(seconds=2),
                              evidence={"change": {"changed_at": (T0 + timedelta(seconds=1)).isoformat()}})
    store.add_request(before)
    store.add_request(during)
    store.finish_requests("m", "candidate c1", T0 + timedelta(seconds=1))  # the training started at T0 + 1 s
    assert store.pending_request("m") == (str(during.event_id), "performance", T0 + timedelta(seconds=1))
    store.finish_requests("m", "candidate c2", T0 + timedelta(seconds=3))
    assert store.pending_request("m") is None


def test_a_long_stream_keeps_the_dataset_bounded_on_disk(tmp_path) -> None:
    """Defect 7: 40 batches of 500 rows (and 100 holdout ids each), retention after each keeping 2,000 rows of
    one model and none of another's beyond its own 2,000: the store's file stops growing, the newest rows are
    the window, the other model is untouched by the first's limit, and answered requests beyond 10 go."""
    path = tmp_path / "t.sqlite"
    store = DatasetStore(path)
    sizes, deleted = [], {"samples": 0, "holdout_seen": 0, "requests": 0}
    for batch in range(40):
        ids = range(batch * 600, batch * 600 + 600)
        store.add_samples([sample(i, at=T0 + timedelta(seconds=i)) for i in ids[:500]],
                          [sample(i) for i in ids[500:]])
        store.add_samples([sample(batch, model="other")], [])
        store.add_request(RetrainRequested(model="m", kind="manual", reason="test"))
        store.finish_requests("m", "candidate", datetime.now(UTC))
        for table, n in store.retain("m", 2000, None, 10).items():
            deleted[table] += n
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        sizes.append(path.stat().st_size)
    assert store.counts("m") == (2000, 2000) and store.counts("other") == (40, 40)
    rows, _ = row_window(store, "m", max_rows=5000)
    assert [r.sample_id for r in rows] == [f"s{b * 600 + i}" for b in range(36, 40) for i in range(500)]
    assert deleted == {"samples": 40 * 500 - 2000, "holdout_seen": 40 * 100 - 2000, "requests": 30}
    # 10 times the rows kept went through it; the file stays within 1.3 times its size when it first held as
    # many as it keeps (160 batches: 1.2 times, flat from the 100th), where without retention it grew tenfold
    assert max(sizes) <= sizes[4] * 1.3, sizes

    # By age: rows that arrived before the cutoff go whatever their number.
    cut = store.retain("m", 2000, T0 + timedelta(seconds=39 * 600 + 250), 10)
    assert cut["samples"] == 1750 and store.counts("m")[0] == 250


def test_rows_deleted_while_a_window_is_read_are_left_out_of_it(tmp_path) -> None:
    """Quarantine or retention may delete rows between the window's count and its pages: the window is then
    the rows still there (it raised, before, and the training failed)."""
    store = DatasetStore(tmp_path / "t.sqlite")
    store.add_samples([sample(i) for i in range(30)], [])
    pages = store._pages("m", 1, 30, None, 10)
    builder_rows = next(pages)
    store.quarantine("m", ["s15"])
    window = store.read_window("m", ["x"], 100)
    assert len(window) == 29 and len(builder_rows) == 10
