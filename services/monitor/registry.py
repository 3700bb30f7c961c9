"""The monitor's durable state (SQLite, WAL): holdout rows, versions, and the append-only decision log.

The champion of a model is not stored separately: it is the version named by the
model's latest promotion or rollback, so it can never disagree with the history.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from refit.events import CandidateTrained, Event, SampleIngested
from refit.sqlite import transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS holdout (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    features BLOB,
    text TEXT,
    label TEXT NOT NULL,
    UNIQUE (model, sample_id)
);
-- The judge reads a model's newest holdout rows: walked backwards on this index, never sorted
-- (without it every holdout row of the model was visited and sorted: 0.74 s instead of 0.036 s for
-- the newest 5,000 of 200,000 rows).
CREATE INDEX IF NOT EXISTS holdout_by_model_seq ON holdout (model, seq);
CREATE TABLE IF NOT EXISTS versions (
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    candidate_id TEXT NOT NULL UNIQUE,
    digest TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    candidate BLOB NOT NULL,
    scores BLOB,
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS decisions (
    model TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    payload BLOB NOT NULL,
    signature TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (model, sequence)
);
"""
SERVING = ("ModelPromoted", "ModelRolledBack")


@dataclass(frozen=True)
class Version:
    model: str
    version: int
    candidate_id: str
    digest: str
    status: str
    created_at: str
    candidate: CandidateTrained
    scores: dict[str, float] | None


@dataclass(frozen=True)
class StoredDecision:
    model: str
    sequence: int
    event_type: str
    version: int
    payload: bytes
    signature: str
    published: bool


@dataclass(frozen=True)
class Holdout:
    ids: list[str]
    rows: list[dict[str, float]] | list[str]
    labels: list[str]


class Registry:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # holdout ---------------------------------------------------------------------------------
    def add_holdout(self, samples: list[SampleIngested]) -> None:
        with self._lock, transaction(self._db):
            self._db.executemany(
                "INSERT OR IGNORE INTO holdout (model, sample_id, features, text, label) VALUES (?, ?, ?, ?, ?)",
                [(s.model, s.sample_id, orjson.dumps(s.features) if s.features is not None else None, s.text,
                  str(s.label)) for s in samples])

    def holdout(self, model: str, max_rows: int) -> Holdout:
        """The newest ``max_rows`` holdout rows of a model, in a stable order."""
        rows = self._all("SELECT sample_id, features, text, label FROM holdout WHERE model = ?"
                         " ORDER BY seq DESC LIMIT ?", (model, max_rows))
        rows.sort(key=lambda r: r[0])
        inputs = [orjson.loads(r[1]) if r[1] is not None else r[2] for r in rows]
        return Holdout([r[0] for r in rows], inputs, [r[3] for r in rows])

    def holdout_until(self, model: str, max_seq: int | None, max_rows: int) -> Holdout:
        """The newest ``max_rows`` holdout rows that had arrived by ``max_seq`` (all, if None)."""
        rows = self._all("SELECT sample_id, features, text, label FROM holdout WHERE model = ? AND seq <= ?"
                         " ORDER BY seq DESC LIMIT ?", (model, max_seq if max_seq is not None else 2**62, max_rows))
        inputs = [orjson.loads(r[1]) if r[1] is not None else r[2] for r in rows]
        return Holdout([r[0] for r in rows], inputs, [r[3] for r in rows])

    def holdout_top_seq(self, model: str) -> int:
        return int(self._all("SELECT COALESCE(MAX(seq), 0) FROM holdout WHERE model = ?", (model,))[0][0])

    def holdout_size(self, model: str) -> int:
        return int(self._all("SELECT COUNT(*) FROM holdout WHERE model = ?", (model,))[0][0])

    # versions --------------------------------------------------------------------------------
    def add_candidate(self, event: CandidateTrained) -> Version:
        """Register a candidate as the model's next version (idempotent by candidate id)."""
        with self._lock, transaction(self._db):
            row = self._db.execute("SELECT 1 FROM versions WHERE candidate_id = ?", (event.candidate_id,)).fetchone()
            if row is None:
                (top,) = self._db.execute("SELECT COALESCE(MAX(version), 0) FROM versions WHERE model = ?",
                                          (event.model,)).fetchone()
                self._db.execute(
                    "INSERT INTO versions (model, version, candidate_id, digest, status, created_at, candidate)"
                    " VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                    (event.model, top + 1, event.candidate_id, event.artifact.digest,
                     datetime.now(UTC).isoformat(), event.to_bytes()))
        found = self.version_by_candidate(event.candidate_id)
        assert found is not None
        return found

    def _version(self, where: str, args: tuple[Any, ...]) -> list[Version]:
        rows = self._all("SELECT model, version, candidate_id, digest, status, created_at, candidate, scores"
                         f" FROM versions WHERE {where}", args)
        return [Version(r[0], r[1], r[2], r[3], r[4], r[5], CandidateTrained.model_validate_json(r[6]),
                        orjson.loads(r[7]) if r[7] else None) for r in rows]

    def version_by_candidate(self, candidate_id: str) -> Version | None:
        found = self._version("candidate_id = ?", (candidate_id,))
        return found[0] if found else None

    def version(self, model: str, version: int) -> Version | None:
        found = self._version("model = ? AND version = ?", (model, version))
        return found[0] if found else None

    def first_for_request(self, model: str, request_id: str) -> Version | None:
        """The first version registered for a retrain request (a trainer killed after publishing
        its candidate and before marking the request done publishes another for it)."""
        found = self._version("model = ? AND json_extract(CAST(candidate AS TEXT), '$.retrain_request_id') = ?"
                              " ORDER BY version LIMIT 1", (model, request_id))
        return found[0] if found else None

    def pending(self) -> list[Version]:
        return self._version("status = 'pending' ORDER BY created_at", ())

    def versions(self, model: str) -> list[Version]:
        return self._version("model = ? ORDER BY version DESC", (model,))

    # decisions -------------------------------------------------------------------------------
    def next_sequence(self, model: str) -> int:
        return int(self._all("SELECT COALESCE(MAX(sequence), 0) + 1 FROM decisions WHERE model = ?", (model,))[0][0])

    def record_decision(self, event: Event, version: int, status: str | None, scores: dict[str, float] | None,
                        payload: bytes, signature: str) -> None:
        """Append a decision and update its version's status in one transaction."""
        sequence = getattr(event, "sequence")
        with self._lock, transaction(self._db):
            self._db.execute(
                "INSERT INTO decisions (model, sequence, event_type, version, created_at, payload, signature)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (event.model, sequence, event.event_type, version, event.occurred_at.isoformat(), payload,
                 signature))
            if status is not None:
                self._db.execute("UPDATE versions SET status = ?, scores = ? WHERE model = ? AND version = ?",
                                 (status, orjson.dumps(scores) if scores is not None else None, event.model,
                                  version))

    def mark_published(self, model: str, sequence: int) -> None:
        with self._lock:
            self._db.execute("UPDATE decisions SET published = 1 WHERE model = ? AND sequence = ?", (model, sequence))

    def _decisions(self, where: str, args: tuple[Any, ...]) -> list[StoredDecision]:
        rows = self._all("SELECT model, sequence, event_type, version, payload, signature, published"
                         f" FROM decisions WHERE {where}", args)
        return [StoredDecision(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], bool(r[6])) for r in rows]

    def unpublished(self) -> list[StoredDecision]:
        return self._decisions("published = 0 ORDER BY model, sequence", ())

    def decisions(self, model: str, limit: int = 100) -> list[StoredDecision]:
        return self._decisions("model = ? ORDER BY sequence DESC LIMIT ?", (model, limit))

    def serving(self, model: str) -> StoredDecision | None:
        """The latest promotion or rollback of a model: it names the champion."""
        found = self.serving_history(model, limit=1)
        return found[0] if found else None

    def serving_history(self, model: str, limit: int = 1000) -> list[StoredDecision]:
        """Promotions and rollbacks of a model, newest first: the champions it had."""
        return self._decisions(f"model = ? AND event_type IN {SERVING} ORDER BY sequence DESC LIMIT ?",
                               (model, limit))
