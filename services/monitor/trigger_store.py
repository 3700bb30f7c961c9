"""The trigger engine's durable state (SQLite, WAL): in-flight requests, fired triggers, schedules, and
what it observes (the newest samples per model, once each, and the observer's state), so that a restart
changes no trigger decision and a redelivered sample is counted once.

Kept apart from the decision registry: triggers change often and never decide anything.
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from refit.core.triggers import InFlight
from refit.events import SampleIngested
from refit.sqlite import delete_beyond, open_store, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    model TEXT PRIMARY KEY,
    new_samples INTEGER NOT NULL DEFAULT 0,
    last_fired_at TEXT,
    in_flight BLOB,
    reference_seq INTEGER
);
CREATE TABLE IF NOT EXISTS fired (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL, kind TEXT NOT NULL, reason TEXT NOT NULL, evidence BLOB NOT NULL,
    request_id TEXT NOT NULL, retry_of TEXT, outcome TEXT, occurred_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_runs (
    model TEXT NOT NULL, schedule TEXT NOT NULL, last_run TEXT NOT NULL, PRIMARY KEY (model, schedule)
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS observed (
    model TEXT NOT NULL, seq INTEGER NOT NULL, sample_id TEXT NOT NULL, sample BLOB NOT NULL,
    PRIMARY KEY (model, sample_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS observed_by_seq ON observed (model, seq);
CREATE TABLE IF NOT EXISTS watch (model TEXT PRIMARY KEY, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS signals (
    model TEXT NOT NULL, seq INTEGER NOT NULL, sample_id TEXT NOT NULL, occurred_at TEXT NOT NULL,
    signal REAL NOT NULL, PRIMARY KEY (model, seq)
);
"""


class TriggerStore:
    """Per model: new-sample count, the request in flight, fired triggers, schedule runs; and settings.

    Over 80 lines only by the number of its queries: one short method each, one lock, one connection.
    """

    def __init__(self, path: Path) -> None:
        self._db = open_store(path, _SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def _one(self, sql: str, args: tuple[Any, ...]) -> Any:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _run(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def _ensure(self, model: str) -> None:
        self._run("INSERT OR IGNORE INTO state (model) VALUES (?)", (model,))

    def state(self, model: str) -> tuple[int, datetime | None, InFlight | None, int | None]:
        """(new samples since the last request, when one last fired, the request in flight, reference seq)."""
        self._ensure(model)
        new, fired, flight, ref = self._one(
            "SELECT new_samples, last_fired_at, in_flight, reference_seq FROM state WHERE model = ?", (model,))
        in_flight = None
        if flight:
            data = orjson.loads(flight)
            failed_at = data.get("failed_at")
            in_flight = InFlight(data["request_id"], data["kind"], datetime.fromisoformat(data["requested_at"]),
                                 data["attempts"], datetime.fromisoformat(failed_at) if failed_at else None,
                                 data.get("failure"))
        return new, datetime.fromisoformat(fired) if fired else None, in_flight, ref

    def add_samples(self, samples: list[SampleIngested]) -> list[SampleIngested]:
        """Record the samples not observed before (by model and sample id) and count them as new;
        returns those, in order. A redelivered sample is neither kept nor counted twice."""
        fresh: list[SampleIngested] = []
        with self._lock, transaction(self._db):
            for sample in samples:
                self._db.execute("INSERT OR IGNORE INTO state (model) VALUES (?)", (sample.model,))
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO observed (model, seq, sample_id, sample) SELECT ?, COALESCE(MAX(seq), 0)"
                    " + 1, ?, ? FROM observed WHERE model = ?",
                    (sample.model, sample.sample_id, sample.model_dump_json().encode(), sample.model))
                if cursor.rowcount == 1:
                    fresh.append(sample)
                    self._db.execute("UPDATE state SET new_samples = new_samples + 1 WHERE model = ?",
                                     (sample.model,))
        return fresh

    def observed(self, model: str, limit: int) -> list[tuple[int, SampleIngested]]:
        """The newest ``limit`` observed samples of ``model`` with their sequence numbers, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT seq, sample FROM observed WHERE model = ? ORDER BY seq DESC LIMIT ?",
                                    (model, limit)).fetchall()
        return [(seq, SampleIngested.model_validate_json(raw)) for seq, raw in reversed(rows)]

    def save_watch(self, model: str, state: dict[str, Any], keep: int,
                   signals: list[tuple[int, str, datetime, float]] | None = None) -> None:
        """The observer's state after an evaluation, with the champion's signals since (position, sample
        id, arrival, signal); observed samples older than the newest ``keep`` go, and signals of
        an earlier champion (before ``state["signals_from"]``) too."""
        with self._lock, transaction(self._db):
            self._db.execute("INSERT INTO watch (model, state) VALUES (?, ?) ON CONFLICT (model) DO UPDATE SET"
                             " state = excluded.state", (model, orjson.dumps(state)))
            self._db.execute("DELETE FROM observed WHERE model = ? AND seq <= ?", (model, state["seen"] - keep))
            self._db.executemany("INSERT OR REPLACE INTO signals (model, seq, sample_id, occurred_at, signal)"
                                 " VALUES (?, ?, ?, ?, ?)", [(model, seq, sample_id, at.isoformat(), signal)
                                                             for seq, sample_id, at, signal in signals or ()])
            self._db.execute("DELETE FROM signals WHERE model = ? AND (seq <= ? OR seq < ?)",
                             (model, state["seen"] - keep, state.get("signals_from", 0)))

    def signals(self, model: str) -> list[tuple[int, str, datetime, float]]:
        """The saved signals (the current champion's), oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT seq, sample_id, occurred_at, signal FROM signals WHERE model = ?"
                                    " ORDER BY seq", (model,)).fetchall()
        return [(seq, sample_id, datetime.fromisoformat(at), signal) for seq, sample_id, at, signal in rows]

    def watch(self, model: str) -> dict[str, Any] | None:
        row = self._one("SELECT state FROM watch WHERE model = ?", (model,))
        return orjson.loads(row[0]) if row else None

    def fired(self, model: str, kind: str, reason: str, evidence: dict[str, Any], request_id: str,
              at: datetime, attempts: int, retry_of: str | None) -> None:
        flight = orjson.dumps({"request_id": request_id, "kind": kind, "requested_at": at.isoformat(),
                               "attempts": attempts})
        self._ensure(model)
        with self._lock, transaction(self._db):
            self._db.execute("UPDATE state SET new_samples = 0, last_fired_at = ?, in_flight = ? WHERE model = ?",
                             (at.isoformat(), flight, model))
            self._db.execute("INSERT INTO fired (model, kind, reason, evidence, request_id, retry_of, occurred_at)"
                             " VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (model, kind, reason, orjson.dumps(evidence, default=str), request_id, retry_of,
                              at.isoformat()))

    def retain(self, model: str, keep: int) -> int:
        """Retention: the fired triggers that ended, beyond the model's newest ``keep``; returns the rows deleted."""
        with self._lock, transaction(self._db):
            return delete_beyond(self._db, "fired", model, keep, "seq", "outcome IS NOT NULL")

    def finish(self, model: str, outcome: str) -> None:
        """The request in flight got its candidate (or was given up): record how it ended."""
        _, _, flight, _ = self.state(model)
        if flight is None:
            return
        self._run("UPDATE fired SET outcome = ? WHERE request_id = ?", (outcome, flight.request_id))
        self._run("UPDATE state SET in_flight = NULL WHERE model = ?", (model,))

    def failed(self, model: str, request_id: str, failure: str, reason: str, at: datetime) -> bool:
        """The trainer reported the training of ``request_id`` failed: if it is the request in flight, its
        attempt ends now (the policy retries it with backoff). False when it is not in flight."""
        with self._lock, transaction(self._db):
            row = self._db.execute("SELECT in_flight FROM state WHERE model = ?", (model,)).fetchone()
            data = orjson.loads(row[0]) if row and row[0] else None
            if data is None or data["request_id"] != request_id or data.get("failed_at"):
                return False
            flight = orjson.dumps({**data, "failed_at": at.isoformat(), "failure": failure})
            self._db.execute("UPDATE state SET in_flight = ? WHERE model = ?", (flight, model))
            self._db.execute("UPDATE fired SET outcome = ? WHERE request_id = ?", (f"failed: {reason}", request_id))
        return True

    def set_reference(self, model: str, seq: int) -> None:
        self._ensure(model)
        self._run("UPDATE state SET reference_seq = ? WHERE model = ?", (seq, model))

    def history(self, model: str, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, reason, evidence, request_id, retry_of, outcome, occurred_at FROM fired"
                " WHERE model = ? ORDER BY seq DESC LIMIT ?", (model, limit)).fetchall()
        return [{"kind": r[0], "reason": r[1], "evidence": orjson.loads(r[2]), "request_id": r[3],
                 "retry_of": r[4], "outcome": r[5], "occurred_at": r[6]} for r in rows]

    def last_run(self, model: str, schedule: str) -> datetime | None:
        row = self._one("SELECT last_run FROM schedule_runs WHERE model = ? AND schedule = ?", (model, schedule))
        return datetime.fromisoformat(row[0]) if row else None

    def ran(self, model: str, schedule: str, at: datetime) -> None:
        self._run("INSERT INTO schedule_runs (model, schedule, last_run) VALUES (?, ?, ?) ON CONFLICT"
                  " (model, schedule) DO UPDATE SET last_run = excluded.last_run", (model, schedule, at.isoformat()))

    def get(self, key: str) -> Any:
        row = self._one("SELECT value FROM settings WHERE key = ?", (key,))
        return orjson.loads(row[0]) if row else None

    def put(self, key: str, value: Any) -> None:
        self._run("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET"
                  " value = excluded.value", (key, orjson.dumps(value)))
