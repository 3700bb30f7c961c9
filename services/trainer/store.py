"""The trainer's durable training dataset (SQLite, WAL), idempotent by sample id.

Holdout rows never enter it: the split is decided before a row is written.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from refit.core.filters import Columns, feature_values
from refit.events import RetrainRequested, SampleIngested
from refit.sqlite import delete_beyond, open_store, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    features BLOB,
    text TEXT,
    label TEXT NOT NULL,
    confidence REAL,
    source TEXT,
    occurred_at TEXT NOT NULL,
    idempotency_key TEXT,
    event_time TEXT,
    request_id TEXT,
    UNIQUE (model, sample_id)
);
CREATE TABLE IF NOT EXISTS holdout_seen (
    model TEXT NOT NULL, sample_id TEXT NOT NULL, PRIMARY KEY (model, sample_id)
);
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    received_at TEXT NOT NULL,
    done_at TEXT,
    outcome TEXT
);
CREATE TABLE IF NOT EXISTS positions (
    partition INTEGER PRIMARY KEY,
    next_offset INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS paused (
    model TEXT PRIMARY KEY,
    paused INTEGER NOT NULL,
    changed_at TEXT NOT NULL
);
-- The latest concept change the monitor recorded (ConceptChanged): every training starts there.
CREATE TABLE IF NOT EXISTS concept (
    model TEXT PRIMARY KEY,
    changed_at TEXT NOT NULL
);
-- Samples an operator quarantined (SamplesQuarantined): deleted, and never stored again.
CREATE TABLE IF NOT EXISTS quarantined (
    model TEXT NOT NULL, sample_id TEXT NOT NULL, PRIMARY KEY (model, sample_id)
);
-- The model's configuration at run time (ModelConfigured): the latest version the monitor published.
CREATE TABLE IF NOT EXISTS configured (
    model TEXT PRIMARY KEY, version INTEGER NOT NULL, sections BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS trainings (
    model TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    trained_at TEXT NOT NULL
);
"""
# Columns added after the first release, for state directories created before them.
_ADDED_COLUMNS = {"idempotency_key": "TEXT", "event_time": "TEXT", "request_id": "TEXT"}
# Where a request was read (refit.retrain-requests): a trainer commits no further than its oldest unanswered one.
_REQUEST_COLUMNS = {"since": "TEXT", "source_partition": "INTEGER", "source_offset": "INTEGER"}
# samples_window serves every read by model: the window (newest rows by seq, optionally by age),
# counts and export, each from the index alone or a range of it. It replaced (model, occurred_at),
# with which the window query visited every row of the model and sorted them.
_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS samples_idempotency ON samples (model, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS samples_window ON samples (model, seq, occurred_at);
DROP INDEX IF EXISTS samples_occurred;
"""
_WINDOW_COLUMNS = "seq, sample_id, features, text, label, confidence, occurred_at"
EXPORT_COLUMNS = ("sample_id", "features", "text", "label", "confidence", "source", "occurred_at",
                  "idempotency_key", "event_time", "request_id")


@dataclass(frozen=True)
class Window:
    """A training window as columns, oldest first: all the trainer holds of its dataset."""

    sample_ids: list[str]
    columns: Columns
    first_at: datetime | None
    last_at: datetime | None
    top_seq: int  # every row up to it is in the window or too old for it: what a training considered

    def __len__(self) -> int:
        return len(self.sample_ids)


class _WindowBuilder:
    """Fills preallocated columns from pages of stored rows (``_WINDOW_COLUMNS`` order)."""

    def __init__(self, size: int, features: Sequence[str] | None) -> None:
        self.size, self.names, self.filled = size, features, 0
        self.ids: list[str] = []
        self.codes: dict[str, int] = {}
        self.labels = np.empty(size, dtype=np.int64)
        self.confidence = np.empty(size, dtype=np.float64)
        self.features = np.empty((size, len(features)), dtype=np.float64) if features is not None else None
        self.texts: list[str | None] = []
        self.first: datetime | None = None
        self.last: datetime | None = None

    def add(self, rows: list[tuple[Any, ...]]) -> None:
        start, end = self.filled, self.filled + len(rows)
        if end > self.size:
            raise RuntimeError(f"window holds {self.size} rows, the store returned more")
        self.ids.extend(r[1] for r in rows)
        self.labels[start:end] = [self.codes.setdefault(r[4], len(self.codes)) for r in rows]
        self.confidence[start:end] = [math.inf if r[5] is None else r[5] for r in rows]
        if self.features is not None:
            names = self.names or ()
            self.features[start:end] = [feature_values(orjson.loads(r[2]) if r[2] is not None else None, names)
                                        for r in rows]
        else:
            self.texts.extend(r[3] for r in rows)
        times = [datetime.fromisoformat(r[6]) for r in rows]
        first, last = min(times), max(times)
        self.first = first if self.first is None else min(self.first, first)
        self.last = last if self.last is None else max(self.last, last)
        self.filled = end

    def build(self, top_seq: int) -> Window:
        """The window; rows deleted while it was read (quarantined, or cut by retention) are not in it."""
        n = self.filled
        texts = self.texts if self.features is None else None
        features = self.features[:n] if self.features is not None else None
        columns = Columns(self.labels[:n], list(self.codes), self.confidence[:n], features, texts)
        return Window(self.ids, columns, self.first, self.last, top_seq)


class DatasetStore:
    """One SQLite connection guarded by a lock: written from the event loop, read by training threads.

    Over 80 lines only by the number of its queries: one short method each.
    """

    def __init__(self, path: Path) -> None:
        self._db = open_store(path, _SCHEMA, {"samples": _ADDED_COLUMNS, "requests": _REQUEST_COLUMNS}, _INDEXES)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def add_samples(self, training: list[SampleIngested], holdout: list[SampleIngested],
                    positions: dict[int, int] | None = None) -> dict[str, int]:
        """Store a batch in one transaction, once per sample id and per idempotency key, with how far
        into each partition of refit.samples the store now reaches (``positions``: partition → next offset).

        Returns the number of new training rows per model.
        """
        by_model: dict[str, list[SampleIngested]] = {}
        for sample in training:
            by_model.setdefault(sample.model, []).append(sample)
        new: dict[str, int] = {}
        with self._lock, transaction(self._db):
            for model, samples in by_model.items():
                before = self._db.total_changes
                self._db.executemany(
                    "INSERT OR IGNORE INTO samples (model, sample_id, features, text, label, confidence, source,"
                    " occurred_at, idempotency_key, event_time, request_id) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
                    " WHERE NOT EXISTS (SELECT 1 FROM quarantined WHERE model = ?1 AND sample_id = ?2)",
                    [(s.model, s.sample_id, orjson.dumps(s.features) if s.features is not None else None, s.text,
                      str(s.label), s.confidence, s.source, s.occurred_at.isoformat(), s.idempotency_key,
                      s.event_time.isoformat() if s.event_time else None, s.request_id) for s in samples])
                new[model] = self._db.total_changes - before
            self._db.executemany("INSERT OR IGNORE INTO holdout_seen (model, sample_id) VALUES (?, ?)",
                                 [(s.model, s.sample_id) for s in holdout])
            self._db.executemany("INSERT INTO positions (partition, next_offset) VALUES (?, ?) ON CONFLICT(partition)"
                                 " DO UPDATE SET next_offset = MAX(next_offset, excluded.next_offset)",
                                 list((positions or {}).items()))
        return new

    def quarantine(self, model: str, sample_ids: list[str]) -> int:
        """Delete these samples and keep them out for good (a redelivery is not stored); returns the
        number of rows deleted."""
        with self._lock, transaction(self._db):
            self._db.executemany("INSERT OR IGNORE INTO quarantined (model, sample_id) VALUES (?, ?)",
                                 [(model, i) for i in sample_ids])
            before = self._db.total_changes
            self._db.executemany("DELETE FROM samples WHERE model = ? AND sample_id = ?",
                                 [(model, i) for i in sample_ids])
            return self._db.total_changes - before

    def position(self, partition: int) -> int | None:
        """The next offset of this partition of refit.samples the store lacks, or None if it never read it."""
        with self._lock:
            row = self._db.execute("SELECT next_offset FROM positions WHERE partition = ?", (partition,)).fetchone()
        return int(row[0]) if row else None

    def oldest_pending(self, partition: int) -> int | None:
        """The offset of the oldest unanswered request read from this partition of refit.retrain-requests."""
        with self._lock:
            row = self._db.execute("SELECT MIN(source_offset) FROM requests WHERE source_partition = ?"
                                   " AND done_at IS NULL", (partition,)).fetchone()
        return None if row[0] is None else int(row[0])

    def forget_requests(self, partition: int, below: int, now: datetime) -> None:
        """Close this partition's pending requests below ``below``: the group committed past them, so
        another trainer answered them while this one did not hold the partition."""
        with self._lock:
            self._db.execute("UPDATE requests SET done_at = ?, outcome = 'answered by another trainer'"
                             " WHERE source_partition = ? AND source_offset < ? AND done_at IS NULL",
                             (now.isoformat(), partition, below))

    def add_request(self, event: RetrainRequested, source: tuple[int, int] | None = None) -> None:
        """Keep a request until a training answers it, with where its window starts: a concept change
        the monitor detected (``evidence.change.changed_at``), if it names one; and where it was read
        (``source``: partition, offset)."""
        change = event.evidence.get("change")
        since = change.get("changed_at") if isinstance(change, dict) else None
        partition, offset = source if source is not None else (None, None)
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO requests (request_id, model, kind, reason, received_at, since,"
                " source_partition, source_offset) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (str(event.event_id), event.model, event.kind, event.reason, event.occurred_at.isoformat(),
                 since if isinstance(since, str) else None, partition, offset))

    def set_paused(self, model: str, paused: bool, at: datetime) -> None:
        """Follow the monitor's pause of automatic retraining (the latest by time wins: redeliveries of an
        older event change nothing)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO paused (model, paused, changed_at) VALUES (?, ?, ?) ON CONFLICT (model) DO UPDATE"
                " SET paused = excluded.paused, changed_at = excluded.changed_at"
                " WHERE excluded.changed_at >= paused.changed_at", (model, int(paused), at.isoformat()))

    def configure(self, model: str, version: int, sections: dict[str, Any]) -> bool:
        """Keep the model's configuration version ``version`` unless a later one is kept; whether it was."""
        with self._lock:
            before = self._db.total_changes
            self._db.execute("INSERT INTO configured (model, version, sections) VALUES (?, ?, ?) ON CONFLICT (model)"
                             " DO UPDATE SET version = excluded.version, sections = excluded.sections"
                             " WHERE excluded.version > configured.version", (model, version, orjson.dumps(sections)))
            return self._db.total_changes > before

    def configured(self, model: str) -> tuple[int, dict[str, Any]]:
        """(configuration version, the sections set over the spec file); (0, {}) when none was."""
        with self._lock:
            row = self._db.execute("SELECT version, sections FROM configured WHERE model = ?", (model,)).fetchone()
        return (int(row[0]), orjson.loads(row[1])) if row else (0, {})

    def paused(self, model: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT paused FROM paused WHERE model = ?", (model,)).fetchone()
        return bool(row and row[0])

    def pending_request(self, model: str) -> tuple[str, str, datetime | None] | None:
        """The oldest unfinished retrain request of a model: (request id, kind, window start or None)."""
        with self._lock:
            row = self._db.execute("SELECT request_id, kind, since FROM requests WHERE model = ? AND done_at IS NULL"
                                   " ORDER BY received_at LIMIT 1", (model,)).fetchone()
        return (row[0], row[1], _when(row[2])) if row else None

    def set_concept_change(self, model: str, changed_at: datetime) -> None:
        """Follow the monitor's latest concept change of the model (the latest ``changed_at`` wins)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO concept (model, changed_at) VALUES (?, ?) ON CONFLICT (model) DO UPDATE"
                " SET changed_at = excluded.changed_at WHERE excluded.changed_at > concept.changed_at",
                (model, changed_at.astimezone(UTC).isoformat()))

    def window_start(self, model: str) -> datetime | None:
        """Where every training of the model starts: the latest concept change the monitor recorded
        (``ConceptChanged``) or a request named (the safeguard judges on the rows after it too), or None
        when there was none."""
        with self._lock:
            row = self._db.execute("SELECT MAX(since) FROM requests WHERE model = ?", (model,)).fetchone()
            changed = self._db.execute("SELECT changed_at FROM concept WHERE model = ?", (model,)).fetchone()
        starts = [when for when in (_when(row[0]), _when(changed[0]) if changed else None) if when is not None]
        return max(starts) if starts else None

    def finish_requests(self, model: str, outcome: str, now: datetime) -> None:
        """Mark the model's requests pending when a training run started (``now``) as answered by it.

        A request made while it ran is not: that run never read it, nor the window it asks for."""
        with self._lock:
            self._db.execute("UPDATE requests SET done_at = ?, outcome = ? WHERE model = ? AND done_at IS NULL"
                             " AND received_at <= ?", (now.isoformat(), outcome, model, now.isoformat()))

    def counts(self, model: str, at_most: int | None = None) -> tuple[int, int]:
        """(rows in the dataset, rows newer than the last training), each counted up to ``at_most``.

        Whether a model is due needs no more than its thresholds, and the trainer asks after every
        batch it stores: an exact count walks the model's whole index (0.15 s at 800,000 rows).
        """
        count = "SELECT COUNT(*) FROM (SELECT 1 FROM samples WHERE model = ? AND seq > ? LIMIT ?)"
        limit = -1 if at_most is None else at_most  # SQLite: a negative LIMIT is no limit
        with self._lock:
            row = self._db.execute("SELECT last_seq FROM trainings WHERE model = ?", (model,)).fetchone()
            last = row[0] if row else 0
            total = self._db.execute(count, (model, 0, limit)).fetchone()[0]
            new = self._db.execute(count, (model, last, limit)).fetchone()[0]
        return int(total), int(new)

    def read_window(self, model: str, features: Sequence[str] | None, max_rows: int,
                    since: datetime | None = None, page: int = 1024) -> Window:
        """The newest ``max_rows`` rows received after ``since``, oldest first, as columns.

        ``features``: the spec's feature names, or None for a text model. Only the window is
        read, a page at a time into preallocated arrays; the lock is held per page, and rows
        stored meanwhile are newer than the window, so they are not part of it.
        """
        size, low, high, considered = self._bounds(model, max_rows, since)
        builder = _WindowBuilder(size, features)
        for rows in self._pages(model, low, high, since, page):
            builder.add(rows)
        return builder.build(considered)

    def _bounds(self, model: str, max_rows: int, since: datetime | None) -> tuple[int, int, int, int]:
        """(rows, lowest seq, highest seq, highest seq considered) of the window, from the index alone.

        The seq considered is the model's highest, not the window's: a row above the window's
        newest is one too old for it (received before ``since``), and it only gets older, so a
        training on this window has considered it too. Marking the window's own top instead left such rows new
        forever: with every row too old, the top of an empty window (0) made the whole dataset
        new again, and a model with ``min_new_samples`` was due again at every poll.
        """
        with self._lock:
            size, low, high, considered = self._db.execute(
                "SELECT COUNT(*), MIN(seq), MAX(seq), (SELECT MAX(seq) FROM samples WHERE model = ?)"
                " FROM (SELECT seq FROM samples WHERE model = ? AND occurred_at >= ? ORDER BY seq DESC LIMIT ?)",
                (model, model, since.isoformat() if since is not None else "", max_rows)).fetchone()
        return int(size), int(low or 0), int(high or 0), int(considered or 0)

    def _pages(self, model: str, low: int, top: int, since: datetime | None,
               page: int) -> Iterator[list[tuple[Any, ...]]]:
        cutoff, last = since.isoformat() if since is not None else "", low - 1
        while last < top:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT {_WINDOW_COLUMNS} FROM samples WHERE model = ? AND seq > ? AND seq <= ?"
                    " AND occurred_at >= ? ORDER BY seq LIMIT ?", (model, last, top, cutoff, page)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield rows

    def mark_trained(self, model: str, seq: int, now: datetime) -> None:
        with self._lock:
            self._db.execute("INSERT INTO trainings (model, last_seq, trained_at) VALUES (?, ?, ?)"
                             " ON CONFLICT(model) DO UPDATE SET last_seq = excluded.last_seq,"
                             " trained_at = excluded.trained_at", (model, seq, now.isoformat()))

    def export(self, model: str, page: int = 1000) -> Iterator[list[tuple[Any, ...]]]:
        """Every stored row of a model in arrival order, a page at a time (EXPORT_COLUMNS order)."""
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT seq, {', '.join(EXPORT_COLUMNS)} FROM samples WHERE model = ? AND seq > ?"
                    " ORDER BY seq LIMIT ?", (model, last, page)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [r[1:] for r in rows]

    def retain(self, model: str, max_rows: int, cutoff: datetime | None, keep_requests: int) -> dict[str, int]:
        """Retention (``refit.specs.RetentionSpec``): the model's rows beyond its newest ``max_rows`` or
        received before ``cutoff``, the holdout ids seen beyond as many, and the answered retrain
        requests beyond the newest ``keep_requests``. Returns the rows deleted per table."""
        with self._lock, transaction(self._db):
            samples = delete_beyond(self._db, "samples", model, max_rows, "seq")
            if cutoff is not None:
                before = self._db.total_changes
                self._db.execute("DELETE FROM samples WHERE model = ? AND occurred_at < ?", (model, cutoff.isoformat()))
                samples += self._db.total_changes - before
            return {"samples": samples, "holdout_seen": delete_beyond(self._db, "holdout_seen", model, max_rows),
                    "requests": delete_beyond(self._db, "requests", model, keep_requests, where="done_at IS NOT NULL")}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            rows = self._db.execute("SELECT model, COUNT(*) FROM samples GROUP BY model").fetchall()
            held = self._db.execute("SELECT model, COUNT(*) FROM holdout_seen GROUP BY model").fetchall()
            quarantined = self._db.execute("SELECT model, COUNT(*) FROM quarantined GROUP BY model").fetchall()
        return {"samples": dict(rows), "holdout_skipped": dict(held), "quarantined": dict(quarantined)}


def _when(text: str | None) -> datetime | None:
    """A stored time, or None when absent or unreadable (the request then trains on the usual window)."""
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
