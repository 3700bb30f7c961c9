"""Feedback: predictions from the query log joined with the labels that answer them (SQLite, WAL).

A prediction row waits for its label, or a label waits for its prediction: whichever
arrives second makes the outcome, for the version that served the prediction. The join
key is the one of ``refit.core.live.row_keys``. Every table is idempotent by
(model, key): the first prediction and the first label of a key count, redeliveries
and later duplicates change nothing; a later label that disagrees with the first is
counted as a conflict (``conflicting_labels``), never silently dropped. Each table keeps at most ``max_rows`` newest rows
per model; joined counts are kept apart so pruning never lowers them.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from refit.core.live import Outcome, live_scores, outcome, row_keys
from refit.errors import SchemaError
from refit.events import PredictionServed, SampleIngested
from refit.sqlite import open_store, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL, predicted TEXT NOT NULL,
    UNIQUE (model, key)
);
CREATE TABLE IF NOT EXISTS labels (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL, key TEXT NOT NULL, label TEXT NOT NULL,
    UNIQUE (model, key)
);
CREATE TABLE IF NOT EXISTS outcomes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL, correct INTEGER, error REAL,
    UNIQUE (model, key)
);
CREATE TABLE IF NOT EXISTS joined (
    model TEXT NOT NULL, version INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS conflicts (
    model TEXT NOT NULL PRIMARY KEY, count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_age ON predictions (model, seq);
CREATE INDEX IF NOT EXISTS labels_age ON labels (model, seq);
CREATE INDEX IF NOT EXISTS outcomes_age ON outcomes (model, seq);
CREATE INDEX IF NOT EXISTS outcomes_window ON outcomes (model, version, seq);
"""
# The label an outcome was joined with, so that a later, different label is seen as a conflict
# (outcomes of a store made before it have none: a later label of theirs is not compared).
_ADDED = {"outcomes": {"label": "TEXT"}}
_TABLES = ("predictions", "labels", "outcomes")


@dataclass(frozen=True)
class PredictedRow:
    model: str
    key: str
    version: int
    predicted: str


@dataclass(frozen=True)
class LabeledRow:
    model: str
    key: str
    label: str


def predicted_rows(task: str, event: PredictionServed) -> list[PredictedRow]:
    """The rows of a prediction as join entries; :class:`SchemaError` if it does not fit the task."""
    outputs: list[str] | list[float | None] | None = event.labels if task == "classification" else event.values
    if outputs is None:
        raise SchemaError(f"prediction {event.request_id}: a {task} prediction without its outputs")
    if len(outputs) != len(event.inputs):
        raise SchemaError(f"prediction {event.request_id}: {len(event.inputs)} inputs but {len(outputs)} outputs")
    keys = row_keys(event.request_id, len(outputs))
    # A regression value the model could not make finite is sent as null: nothing to score.
    return [PredictedRow(event.model, key, event.version, str(p))
            for key, p in zip(keys, outputs, strict=True) if p is not None]


def labeled_row(sample: SampleIngested) -> LabeledRow | None:
    return LabeledRow(sample.model, sample.request_id, str(sample.label)) if sample.request_id else None


@dataclass(frozen=True)
class VersionLive:
    version: int
    joined: int
    window: int  # outcomes the scores are computed over (the newest, at most the configured window)
    scores: dict[str, float]


@dataclass(frozen=True)
class LiveReport:
    joined: int
    pending_predictions: int
    pending_labels: int
    versions: list[VersionLive]  # newest version first
    conflicting_labels: int = 0  # later labels that disagreed with the first label of their request id


class FeedbackStore:
    """Predictions and labels, joined by request id, and the live scores per version they give.

    Over 80 lines only by the number of its queries: one short method each, one lock, one connection.
    """

    def __init__(self, path: Path, tasks: Mapping[str, str], max_rows: int) -> None:
        self.tasks, self.max_rows = dict(tasks), max_rows
        self._db = open_store(path, _SCHEMA, _ADDED)
        self._lock = threading.Lock()
        self._written: Counter[str] = Counter()  # rows written per model since its last pruning

    def close(self) -> None:
        self._db.close()

    def record(self, predictions: Iterable[PredictedRow], labels: Iterable[LabeledRow]) -> int:
        """Store predictions and labels in one transaction, joining what meets; returns new outcomes."""
        joined, models = 0, set()
        with self._lock, transaction(self._db):
            for p in predictions:
                models.add(p.model)
                joined += self._add_prediction(p)
            for lab in labels:
                models.add(lab.model)
                joined += self._add_label(lab)
            for model in models:
                self._prune_now_and_then(model)
        return joined

    def _joined_already(self, model: str, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM outcomes WHERE model = ? AND key = ?", (model, key)).fetchone() \
            is not None

    def _add_prediction(self, p: PredictedRow) -> int:
        if self._joined_already(p.model, p.key):
            return 0
        found = self._db.execute("SELECT label FROM labels WHERE model = ? AND key = ?", (p.model, p.key)).fetchone()
        if found is None:
            self._db.execute("INSERT OR IGNORE INTO predictions (model, key, version, predicted) VALUES (?, ?, ?, ?)",
                             (p.model, p.key, p.version, p.predicted))
            self._written[p.model] += 1
            return 0
        self._db.execute("DELETE FROM labels WHERE model = ? AND key = ?", (p.model, p.key))
        return self._join(p.model, p.key, p.version, p.predicted, found[0])

    def _add_label(self, lab: LabeledRow) -> int:
        earlier = self._db.execute("SELECT label FROM outcomes WHERE model = ? AND key = ? UNION ALL "
                                   "SELECT label FROM labels WHERE model = ? AND key = ?",
                                   (lab.model, lab.key, lab.model, lab.key)).fetchone()
        if earlier is not None:  # the first label of a key counts; a different later one is a conflict
            if earlier[0] is not None and earlier[0] != lab.label:
                self._db.execute("INSERT INTO conflicts (model, count) VALUES (?, 1)"
                                 " ON CONFLICT (model) DO UPDATE SET count = count + 1", (lab.model,))
            return 0
        found = self._db.execute("SELECT version, predicted FROM predictions WHERE model = ? AND key = ?",
                                 (lab.model, lab.key)).fetchone()
        if found is None:
            self._db.execute("INSERT OR IGNORE INTO labels (model, key, label) VALUES (?, ?, ?)",
                             (lab.model, lab.key, lab.label))
            self._written[lab.model] += 1
            return 0
        self._db.execute("DELETE FROM predictions WHERE model = ? AND key = ?", (lab.model, lab.key))
        return self._join(lab.model, lab.key, found[0], found[1], lab.label)

    def _join(self, model: str, key: str, version: int, predicted: str, label: str) -> int:
        result = outcome(self.tasks[model], predicted, label)
        self._db.execute("INSERT INTO outcomes (model, key, version, correct, error, label) VALUES (?, ?, ?, ?, ?, ?)",
                         (model, key, version, None if result.correct is None else int(result.correct),
                          result.error, label))
        self._db.execute("INSERT INTO joined (model, version, count) VALUES (?, ?, 1)"
                         " ON CONFLICT (model, version) DO UPDATE SET count = count + 1", (model, version))
        self._written[model] += 1
        return 1

    def _prune_now_and_then(self, model: str) -> None:
        # Pruning scans max_rows index entries per table, so it runs once per tenth of that written:
        # a table holds about 1.1 x max_rows rows of a model at most.
        if self._written[model] < max(1, self.max_rows // 10):
            return
        self._written[model] = 0
        for table in _TABLES:
            self._db.execute(
                f"DELETE FROM {table} WHERE model = ? AND seq <= (SELECT seq FROM {table} WHERE model = ?"
                " ORDER BY seq DESC LIMIT 1 OFFSET ?)", (model, model, self.max_rows))

    def live(self, model: str, window: int) -> LiveReport:
        """Joined counts, what still waits, and rolling scores over each version's newest ``window`` outcomes."""
        task = self.tasks[model]
        with self._lock:
            counts = self._db.execute("SELECT version, count FROM joined WHERE model = ? ORDER BY version DESC",
                                      (model,)).fetchall()
            windows = {version: self._db.execute(
                "SELECT correct, error FROM outcomes WHERE model = ? AND version = ? ORDER BY seq DESC LIMIT ?",
                (model, version, window)).fetchall() for version, _ in counts}
            waiting = [self._db.execute(f"SELECT COUNT(*) FROM {table} WHERE model = ?", (model,)).fetchone()[0]
                       for table in ("predictions", "labels")]
            conflicting = self._conflicting(model)
        versions = []
        for version, count in counts:
            outcomes = [Outcome(None if c is None else bool(c), e) for c, e in windows[version]]
            versions.append(VersionLive(version, count, len(outcomes), live_scores(task, outcomes)))
        return LiveReport(sum(c for _, c in counts), waiting[0], waiting[1], versions, conflicting)

    def conflicting_labels(self, model: str) -> int:
        """Labels that came for a request id already labelled otherwise (ignored: the first counts)."""
        with self._lock:
            return self._conflicting(model)

    def _conflicting(self, model: str) -> int:
        row = self._db.execute("SELECT count FROM conflicts WHERE model = ?", (model,)).fetchone()
        return int(row[0]) if row else 0
