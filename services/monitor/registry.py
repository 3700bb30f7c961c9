"""The monitor's durable state (SQLite, WAL): holdout rows, versions, and the append-only decision log.

The champion of a model is not stored separately: it is the version named by the
model's latest promotion or rollback, so it can never disagree with the history.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from refit.events import CandidateTrained, Decision, SampleIngested
from refit.sqlite import delete_beyond, open_store, transaction

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
-- Samples an operator quarantined: out of the holdout, and never in it again.
CREATE TABLE IF NOT EXISTS quarantined (
    model TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    quarantined_at TEXT NOT NULL,
    PRIMARY KEY (model, sample_id)
);
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
-- Concept changes detected on a model's live traffic: the holdout rows after one are the current
-- concept, which the safeguard judges on (services.monitor.decider).
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    after_seq INTEGER NOT NULL,
    changed_at TEXT NOT NULL,
    detected_at TEXT NOT NULL,
    detector TEXT NOT NULL
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
# Columns later versions added to a store an earlier one created, and what fills them there.
_ADDED = {"versions": {"duplicate_of": "INTEGER", "holdout_seq": "INTEGER"}, "decisions": {"digest": "TEXT"},
          "holdout": {"occurred_at": "TEXT"}}
_AFTER = """
UPDATE decisions SET digest = json_extract(CAST(payload AS TEXT), '$.digest') WHERE digest IS NULL;
"""
SERVING = ("ModelPromoted", "ModelRolledBack")
D = TypeVar("D", bound=Decision)


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
    duplicate_of: int | None = None  # the version that already answered this one's retrain request


@dataclass(frozen=True)
class StoredDecision:
    """A decision as the log holds it: its columns, and the exact signed bytes that were published."""

    model: str
    sequence: int
    event_type: str
    version: int
    digest: str
    decided_at: datetime
    payload: bytes
    signature: str
    published: bool


@dataclass(frozen=True)
class Change:
    """A concept change of a model: holdout rows with a seq above ``after_seq`` came after it."""

    after_seq: int
    changed_at: datetime  # when the first sample of the new concept arrived
    detected_at: datetime
    detector: str


@dataclass(frozen=True)
class Holdout:
    ids: list[str]
    rows: list[dict[str, float]] | list[str]
    labels: list[str]


class Registry:
    """Holdout rows, versions and the decision log of every model.

    Over 80 lines only by the number of its queries: one short method each, one lock, one connection.
    """

    def __init__(self, path: Path) -> None:
        self._db = open_store(path, _SCHEMA, _ADDED, _AFTER)
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
                "INSERT OR IGNORE INTO holdout (model, sample_id, features, text, label, occurred_at)"
                " SELECT ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM quarantined WHERE model = ?1 AND sample_id = ?2)",
                [(s.model, s.sample_id, orjson.dumps(s.features) if s.features is not None else None, s.text,
                  str(s.label), s.occurred_at.isoformat()) for s in samples])

    def quarantine(self, model: str, sample_ids: list[str], reason: str) -> int:
        """Take these samples out of the holdout and keep them out (a redelivery is not stored again);
        returns the number of holdout rows removed."""
        now = datetime.now(UTC).isoformat()
        with self._lock, transaction(self._db):
            self._db.executemany("INSERT OR IGNORE INTO quarantined (model, sample_id, reason, quarantined_at)"
                                 " VALUES (?, ?, ?, ?)", [(model, i, reason, now) for i in sample_ids])
            before = self._db.total_changes
            self._db.executemany("DELETE FROM holdout WHERE model = ? AND sample_id = ?",
                                 [(model, i) for i in sample_ids])
            return self._db.total_changes - before

    def quarantined(self, model: str) -> list[dict[str, str]]:
        rows = self._all("SELECT sample_id, reason, quarantined_at FROM quarantined WHERE model = ?"
                         " ORDER BY quarantined_at, sample_id", (model,))
        return [{"sample_id": r[0], "reason": r[1], "quarantined_at": r[2]} for r in rows]

    def holdout(self, model: str, max_rows: int) -> Holdout:
        """The newest ``max_rows`` holdout rows of a model, in a stable order."""
        rows = self._all("SELECT sample_id, features, text, label FROM holdout WHERE model = ?"
                         " ORDER BY seq DESC LIMIT ?", (model, max_rows))
        rows.sort(key=lambda r: r[0])
        inputs = [orjson.loads(r[1]) if r[1] is not None else r[2] for r in rows]
        return Holdout([r[0] for r in rows], inputs, [r[3] for r in rows])

    def holdout_until(self, model: str, max_seq: int | None, max_rows: int, after_seq: int = 0) -> Holdout:
        """The newest ``max_rows`` holdout rows that had arrived by ``max_seq`` (all, if None), and
        after ``after_seq``."""
        rows = self._all("SELECT sample_id, features, text, label FROM holdout WHERE model = ? AND seq <= ?"
                         " AND seq > ? ORDER BY seq DESC LIMIT ?",
                         (model, max_seq if max_seq is not None else 2**62, after_seq, max_rows))
        inputs = [orjson.loads(r[1]) if r[1] is not None else r[2] for r in rows]
        return Holdout([r[0] for r in rows], inputs, [r[3] for r in rows])

    def holdout_after(self, model: str, after_seq: int, max_rows: int) -> Holdout:
        """The newest ``max_rows`` holdout rows that arrived after ``after_seq``, in a stable order."""
        rows = self._all("SELECT sample_id, features, text, label FROM holdout WHERE model = ? AND seq > ?"
                         " ORDER BY seq DESC LIMIT ?", (model, after_seq, max_rows))
        rows.sort(key=lambda r: r[0])
        inputs = [orjson.loads(r[1]) if r[1] is not None else r[2] for r in rows]
        return Holdout([r[0] for r in rows], inputs, [r[3] for r in rows])

    def holdout_seq(self, model: str, sample_id: str) -> int | None:
        found = self._all("SELECT seq FROM holdout WHERE model = ? AND sample_id = ?", (model, sample_id))
        return int(found[0][0]) if found else None

    def record_change(self, model: str, after_seq: int, changed_at: datetime, detector: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO changes (model, after_seq, changed_at, detected_at, detector)"
                             " VALUES (?, ?, ?, ?, ?)",
                             (model, after_seq, changed_at.isoformat(), datetime.now(UTC).isoformat(), detector))

    def changes(self, model: str, limit: int = 20) -> list[Change]:
        """The model's detected concept changes, newest first."""
        rows = self._all("SELECT after_seq, changed_at, detected_at, detector FROM changes WHERE model = ?"
                         " ORDER BY id DESC LIMIT ?", (model, limit))
        return [Change(r[0], datetime.fromisoformat(r[1]), datetime.fromisoformat(r[2]), r[3]) for r in rows]

    def holdout_top_seq(self, model: str) -> int:
        return int(self._all("SELECT COALESCE(MAX(seq), 0) FROM holdout WHERE model = ?", (model,))[0][0])

    def holdout_labels(self, model: str, max_rows: int) -> list[str]:
        """The labels of the newest ``max_rows`` holdout rows (the prior a fallback answers with)."""
        return [r[0] for r in self._all("SELECT label FROM holdout WHERE model = ? ORDER BY seq DESC LIMIT ?",
                                        (model, max_rows))]

    def holdout_size(self, model: str, after_seq: int = 0) -> int:
        return int(self._all("SELECT COUNT(*) FROM holdout WHERE model = ? AND seq > ?", (model, after_seq))[0][0])

    # versions --------------------------------------------------------------------------------
    def add_candidate(self, event: CandidateTrained) -> Version:
        """Register a candidate as the model's next version (idempotent by candidate id), noting the
        version that already answered its retrain request, if one did (a trainer killed after
        publishing a candidate and before marking its request done trains the request again)."""
        request_id = event.retrain_request_id
        with self._lock, transaction(self._db):
            row = self._db.execute("SELECT 1 FROM versions WHERE candidate_id = ?", (event.candidate_id,)).fetchone()
            if row is None:
                (top,) = self._db.execute("SELECT COALESCE(MAX(version), 0) FROM versions WHERE model = ?",
                                          (event.model,)).fetchone()
                first = None if request_id is None else self._db.execute(
                    "SELECT MIN(version) FROM versions WHERE model = ?"
                    " AND json_extract(CAST(candidate AS TEXT), '$.retrain_request_id') = ?",
                    (event.model, request_id)).fetchone()[0]
                (holdout_seq,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM holdout WHERE model = ?",
                                                  (event.model,)).fetchone()
                self._db.execute(
                    "INSERT INTO versions (model, version, candidate_id, digest, status, created_at, candidate,"
                    " duplicate_of, holdout_seq) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                    (event.model, top + 1, event.candidate_id, event.artifact.digest,
                     datetime.now(UTC).isoformat(), event.to_bytes(), first, holdout_seq))
        found = self.version_by_candidate(event.candidate_id)
        assert found is not None
        return found

    def _version(self, where: str, args: tuple[Any, ...]) -> list[Version]:
        rows = self._all("SELECT model, version, candidate_id, digest, status, created_at, candidate, scores,"
                         f" duplicate_of FROM versions WHERE {where}", args)
        return [Version(r[0], r[1], r[2], r[3], r[4], r[5], CandidateTrained.model_validate_json(r[6]),
                        orjson.loads(r[7]) if r[7] else None, r[8]) for r in rows]

    def version_by_candidate(self, candidate_id: str) -> Version | None:
        found = self._version("candidate_id = ?", (candidate_id,))
        return found[0] if found else None

    def version(self, model: str, version: int) -> Version | None:
        found = self._version("model = ? AND version = ?", (model, version))
        return found[0] if found else None

    def pending(self) -> list[Version]:
        return self._version("status = 'pending' ORDER BY created_at", ())

    def undecided(self, model: str) -> tuple[int, datetime] | None:
        """(version, arrival) of the model's oldest candidate still waiting for its decision, duplicates aside."""
        found = self._all("SELECT version, created_at FROM versions WHERE model = ? AND status = 'pending'"
                          " AND duplicate_of IS NULL ORDER BY version LIMIT 1", (model,))
        return (int(found[0][0]), datetime.fromisoformat(found[0][1])) if found else None

    def newest_unpromoted(self, model: str, after: int) -> tuple[int, str] | None:
        """(version, digest) of the model's newest candidate after version ``after`` that was not promoted
        (rejected, or not judged yet), duplicates aside."""
        found = self._all("SELECT version, digest FROM versions WHERE model = ? AND version > ? AND duplicate_of IS NULL"
                          " AND status IN ('rejected', 'pending') ORDER BY version DESC LIMIT 1", (model, after))
        return (int(found[0][0]), str(found[0][1])) if found else None

    def rejection_streaks(self, model: str, holdout_fraction: float) -> dict[str, tuple[int, int]]:
        """Per trigger kind: its candidates rejected in a row since the model's last promoted version, and
        about how many samples arrived since the latest of them arrived (its holdout rows since, over the
        holdout fraction). Duplicates, rejected unjudged, do not count."""
        streaks: dict[str, tuple[int, int]] = {}
        rows = self._all("SELECT status, duplicate_of, json_extract(CAST(candidate AS TEXT), '$.trigger'),"
                         " COALESCE(holdout_seq, 0) FROM versions WHERE model = ? ORDER BY version DESC", (model,))
        for status, duplicate_of, trigger, holdout_seq in rows:
            if status == "promoted":
                break
            if status == "rejected" and duplicate_of is None:
                count, since = streaks.get(trigger, (0, None))  # type: ignore[arg-type]
                if since is None:
                    (after,) = self._all("SELECT COUNT(*) FROM holdout WHERE model = ? AND seq > ?",
                                         (model, holdout_seq))[0]
                    since = round(after / holdout_fraction)
                streaks[trigger] = (count + 1, since)
        return streaks

    def versions(self, model: str) -> list[Version]:
        return self._version("model = ? ORDER BY version DESC", (model,))

    # decisions -------------------------------------------------------------------------------
    def record_decision(self, model: str, build: Callable[[int], D], sign: Callable[[bytes], str],
                        status: str | None = None) -> D:
        """Append the model's next decision to the log, in one transaction: allocate its sequence,
        ``build`` the event with it, ``sign`` its bytes, store both, and set its version's ``status``
        (with the scores it was judged to have, if it was judged on a holdout) when given. Returns the
        event as stored."""
        with self._lock, transaction(self._db):
            (sequence,) = self._db.execute("SELECT COALESCE(MAX(sequence), 0) + 1 FROM decisions WHERE model = ?",
                                           (model,)).fetchone()
            event = build(sequence)
            payload = event.to_bytes()
            self._db.execute(
                "INSERT INTO decisions (model, sequence, event_type, version, digest, created_at, payload,"
                " signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (model, sequence, event.event_type, event.version, event.digest, event.occurred_at.isoformat(),
                 payload, sign(payload)))
            if status is not None:
                scores = orjson.dumps(event.candidate_scores) if event.holdout is not None else None
                self._db.execute("UPDATE versions SET status = ?, scores = ? WHERE model = ? AND version = ?",
                                 (status, scores, model, event.version))
        return event

    # retention -------------------------------------------------------------------------------
    def retain(self, model: str, holdout_rows: int, cutoff: datetime | None, keep: int,
               keep_versions: int) -> dict[str, int]:
        """Retention (``refit.specs.RetentionSpec``); returns the rows deleted per table.

        The holdout keeps its newest ``holdout_rows`` (at least what the safeguard judges on: its newest
        ``training.holdout_max_rows``) and no row that arrived before ``cutoff``. The decision log keeps
        its newest ``keep``, every decision not yet published and the newest ``keep_versions`` serving
        decisions (a rollback may return to their champions); versions, their newest ``keep`` (at least
        ``keep_versions``, whose artifacts retention keeps), every pending one and every one a kept
        decision names; detected changes, their newest ``keep``.
        """
        serving = [d.sequence for d in self.serving_history(model, keep_versions)]
        with self._lock, transaction(self._db):
            holdout = delete_beyond(self._db, "holdout", model, holdout_rows, "seq")
            if cutoff is not None:
                before = self._db.total_changes
                self._db.execute("DELETE FROM holdout WHERE model = ? AND occurred_at < ?", (model, cutoff.isoformat()))
                holdout += self._db.total_changes - before
            marks = ",".join("?" * len(serving))
            decisions = delete_beyond(self._db, "decisions", model, keep, "sequence",
                                      f"published = 1 AND sequence NOT IN ({marks})", tuple(serving))
            versions = delete_beyond(self._db, "versions", model, max(keep, keep_versions), "version",
                                     "status != 'pending' AND version NOT IN (SELECT version FROM decisions"
                                     " WHERE model = ?1)")
            changes = delete_beyond(self._db, "changes", model, keep, "id")
        return {"holdout": holdout, "decisions": decisions, "versions": versions, "changes": changes}

    def mark_published(self, model: str, sequence: int) -> None:
        with self._lock:
            self._db.execute("UPDATE decisions SET published = 1 WHERE model = ? AND sequence = ?", (model, sequence))

    def _decisions(self, where: str, args: tuple[Any, ...]) -> list[StoredDecision]:
        rows = self._all("SELECT model, sequence, event_type, version, digest, created_at, payload, signature,"
                         f" published FROM decisions WHERE {where}", args)
        return [StoredDecision(r[0], r[1], r[2], r[3], r[4], datetime.fromisoformat(r[5]), bytes(r[6]), r[7],
                               bool(r[8])) for r in rows]

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
