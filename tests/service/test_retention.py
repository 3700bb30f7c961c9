"""Retention over a long stream of candidates (issue 17, defect 7): the artifact directory stays
bounded, and nothing a decision may still need (the champion, rollback targets, a candidate not yet
judged) is ever removed. A real Monitor (its SQLite stores, real diabetes models judged on a real
holdout), as in test_monitor.py."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import onnx
import pytest

from refit.events import SampleIngested
from refit.kafka import Incoming
from refit.specs import ModelSpecs
from services.monitor.decider import RollbackError
from services.monitor.parts import Monitor
from services.monitor.retention import collect, retain_rows
from tests.service.test_monitor import (HOLDOUT, SPEC, CandidateFactory, arrive_and_judge, candidate, monitor,  # noqa: F401
                                        onnx_bytes)

STREAM = 40


def variant(onnx_bytes: bytes, i: int) -> bytes:
    """The same model with other bytes: a distinct artifact of each version."""
    proto = onnx.load_from_string(onnx_bytes)
    proto.doc_string = f"candidate {i}"
    return proto.SerializeToString()


async def test_a_long_stream_keeps_the_artifact_directory_bounded(monitor: Monitor, candidate: CandidateFactory,
                                                                 onnx_bytes: bytes) -> None:
    keep = SPEC.retention.keep_versions
    files = lambda: sorted(p.name for p in (monitor.artifacts.root / "sha256").glob("*/*"))  # noqa: E731
    digests: dict[int, str] = {}
    most = 0
    for i in range(1, STREAM + 1):
        event = candidate(None, data=variant(onnx_bytes, i))
        await arrive_and_judge(monitor, event)
        digests[monitor.registry.versions("diabetes")[0].version] = event.artifact.digest
        if i % 5 == 0:
            collect(monitor.specs, monitor.registry, monitor.artifacts, monitor.metrics)
            most = max(most, len(files()))
    history = [d.version for d in monitor.registry.serving_history("diabetes")]
    assert len(history) == STREAM  # every candidate was promoted (a tie passes): 40 champions, 40 artifacts

    # A candidate not judged yet is never removed, however old the rest is.
    waiting = candidate(None, data=variant(onnx_bytes, 0))
    assert await monitor.intake.handle([Incoming(record=None, event=waiting)]) == {}  # type: ignore[arg-type]
    freed = collect(monitor.specs, monitor.registry, monitor.artifacts, monitor.metrics)
    assert freed.digests == ()  # everything collectable went at the last scheduled run

    present = set(files())
    kept_versions = sorted(v for v, d in digests.items() if d in present)
    assert kept_versions == list(range(STREAM - keep + 1, STREAM + 1))  # the champion and its 9 predecessors
    assert waiting.artifact.digest in present
    assert most <= keep + 5 + 1  # bounded all along: what retention keeps, 5 arrivals between runs, the fixture's
    assert monitor.metrics.artifacts_collected._value.get() == STREAM - keep
    assert monitor.metrics.artifacts_freed_bytes._value.get() >= (STREAM - keep) * len(onnx_bytes)

    # A rollback reaches exactly the champions retention keeps.
    with pytest.raises(RollbackError, match=f"older than the champions of its newest {keep} serving decisions"):
        await monitor.decider.rollback("diabetes", STREAM - keep, "too far", "test")
    back = await monitor.decider.rollback("diabetes", STREAM - keep + 1, "within reach", "test")
    assert back.digest == digests[STREAM - keep + 1] and back.digest in set(files())


# -- rows: the holdout and the histories ------------------------------------------------------------------------


def store_bytes(db: sqlite3.Connection, path: Path) -> int:
    """The store's size on disk once its write-ahead log is checkpointed into it."""
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size + Path(f"{path}-wal").stat().st_size


def retained_spec(holdout_rows: int = 100, keep: int = 10) -> ModelSpecs:
    """The diabetes spec judging on its newest ``holdout_rows``, keeping ``keep`` decisions and 3 artifacts."""
    spec = SPEC.model_copy(update={"training": SPEC.training.model_copy(update={"holdout_max_rows": holdout_rows}),
                                   "retention": SPEC.retention.model_copy(update={"keep_decisions": keep,
                                                                                  "keep_versions": 3})})
    return ModelSpecs(models=(spec,))


def holdout_wave(wave: int, rows: int = 60) -> list[SampleIngested]:
    return [SampleIngested(model="diabetes", sample_id=f"w{wave}-{i}", features=r["features"], label=r["label"])
            for i, r in enumerate((HOLDOUT * 2)[:rows])]


async def test_a_long_stream_keeps_the_holdout_and_the_decision_history_bounded(
        monitor: Monitor, candidate: CandidateFactory, onnx_bytes: bytes) -> None:
    """Defect 7: 40 waves of holdout rows, each judged with a new candidate (every one promoted: a tie passes),
    retention every 5 waves. The monitor's store stops growing; the holdout is the newest 100 rows, the log the
    newest 10 decisions and the 3 newest champions a rollback may return to; a rollback still reaches them."""
    specs, path = retained_spec(), monitor.settings.state_dir / "monitor.sqlite"
    store = monitor.triggers.store
    sizes = []
    for wave in range(1, 41):
        monitor.registry.add_holdout(holdout_wave(wave))
        await arrive_and_judge(monitor, candidate(None, data=variant(onnx_bytes, wave)))
        store.fired("diabetes", "sample_count", "test", {}, f"r{wave}", datetime.now(UTC), 1, None)
        store.finish("diabetes", "candidate")
        if wave % 5 == 0:
            retain_rows(specs, monitor.registry, store, monitor.metrics, datetime.now(UTC))
            sizes.append(store_bytes(monitor.registry._db, path))
    ids = lambda wave: [s.sample_id for s in holdout_wave(wave)]  # noqa: E731
    assert sorted(monitor.registry.holdout("diabetes", 1000).ids) == sorted(ids(39)[-40:] + ids(40))  # the newest 100
    decisions = monitor.registry.decisions("diabetes", limit=1000)
    assert [d.sequence for d in decisions] == list(range(40, 30, -1))  # the newest 10 (serving among them)
    assert [v.version for v in monitor.registry.versions("diabetes")] == list(range(40, 30, -1))
    assert len(store.history("diabetes", limit=1000)) == 10
    assert max(sizes[4:]) <= sizes[3] * 1.05, sizes  # flat over the second half: freed pages are used again
    deleted = {s: monitor.metrics.rows_retired.labels("diabetes", s)._value.get()
               for s in ("holdout", "decisions", "versions", "fired")}
    assert deleted == {"holdout": 40 * 60 + len(HOLDOUT) - 100, "decisions": 30, "versions": 30, "fired": 30}
    back = await monitor.decider.rollback("diabetes", 38, "within reach", "test")
    assert back.version == 38


def test_holdout_rows_older_than_max_age_go(monitor: Monitor) -> None:
    spec = retained_spec().models[0]
    aged = ModelSpecs(models=(spec.model_copy(update={"retention": spec.retention.model_copy(
        update={"max_age_days": 1.0})}),))
    old = [s.model_copy(update={"occurred_at": datetime.now(UTC) - timedelta(days=2)}) for s in holdout_wave(1, 30)]
    assert len(HOLDOUT) == 142
    monitor.registry.add_holdout(old + holdout_wave(2, 20))
    deleted = retain_rows(aged, monitor.registry, monitor.triggers.store, monitor.metrics, datetime.now(UTC))
    # 192 rows: the newest 100 stay by count (the fixture's 92 oldest go), then the 30 older than a day
    assert deleted["diabetes"]["holdout"] == 92 + 30
    assert set(monitor.registry.holdout("diabetes", 1000).ids) >= {s.sample_id for s in holdout_wave(2, 20)}
    assert monitor.registry.holdout_size("diabetes") == 70
