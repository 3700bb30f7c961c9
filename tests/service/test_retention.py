"""Retention over a long stream of candidates (issue 17, defect 7): the artifact directory stays
bounded, and nothing a decision may still need (the champion, rollback targets, a candidate not yet
judged) is ever removed. A real Monitor (its SQLite stores, real diabetes models judged on a real
holdout), as in test_monitor.py."""

from __future__ import annotations

import onnx
import pytest

from refit.kafka import Incoming
from services.monitor.decider import RollbackError
from services.monitor.parts import Monitor
from services.monitor.retention import collect
from tests.service.test_monitor import (SPEC, CandidateFactory, arrive_and_judge, candidate, monitor,  # noqa: F401
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
