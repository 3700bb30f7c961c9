"""A monitor restart changes no trigger decision (issue 17, defect 6): a real Monitor (its SQLite stores, a real
diabetes champion) fed one stream straight through, and the same stream with a restart between its two halves,
where the last batch before the restart is redelivered after it (its offsets were never committed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refit.core.filerows import FILE_SOURCE
from refit.events import SampleIngested
from refit.kafka import Incoming
from refit.metrics import Metrics
from refit.specs import TriggersSpec
from services.monitor.parts import Monitor, open_monitor
from tests.service.test_monitor import (ROWS, TRAINING, CandidateFactory, arrive_trained_on, candidate, flipped, monitor,
                                        no_gates_specs, onnx_bytes, seed_holdout)
from tests.support.fakes import RecordingPublisher

__all__ = ["candidate", "monitor", "onnx_bytes"]  # fixtures
BATCH, HALF, BATCHES = 20, 8, 16


def batch(k: int) -> list[SampleIngested]:
    """Batch ``k`` of the stream: the champion's concept for 130 samples, then the target turned around;
    the first batch's rows came from a changed file (``refit ingest watch``)."""
    out = []
    for i in range(BATCH * k, BATCH * (k + 1)):
        row = ROWS[i % len(ROWS)]
        out.append(SampleIngested(model="diabetes", sample_id=f"s{i}", features=row["features"],
                                  label=row["label"] if i < 130 else flipped(row["label"]),
                                  source=f"{FILE_SOURCE}new-rows.csv" if k == 0 else None))
    return out


async def feed(monitor: Monitor, ks: range, redeliver: int | None = None) -> list[dict[str, Any]]:
    """Each batch through the intake, then the engine's tick; what the engine shows after each."""
    seen = []
    for k in ks:
        if redeliver is not None and k == ks.start:
            assert await monitor.intake.handle([Incoming(record=None, event=s) for s in batch(redeliver)]) == {}  # type: ignore[arg-type]
        assert await monitor.intake.handle([Incoming(record=None, event=s) for s in batch(k)]) == {}  # type: ignore[arg-type]
        await monitor.triggers.tick()
        shown = monitor.triggers.describe("diabetes")
        seen.append({"batch": k, "new_samples": shown["new_samples"], "live": shown["live"],
                     "fired": [(f["kind"], f["evidence"].get("window")) for f in shown["fired"]],
                     "drift": shown["drift"], "changes": [c["after_seq"] for c in shown["changes"]],
                     "held": [h.split(":")[0] for h in shown["held"]]})  # without request ids
    return seen


async def run(root: Path, candidate: CandidateFactory, restart: bool,
              config: TriggersSpec | None = None) -> list[dict[str, Any]]:
    root.mkdir()
    settings, specs = no_gates_specs(root)
    with open_monitor(settings, specs, RecordingPublisher(), Metrics("monitor")) as monitor:  # type: ignore[arg-type]
        if config is not None:
            await monitor.triggers.runconfig.set("diabetes", "triggers", config.model_dump(mode="json"))
        seed_holdout(monitor)
        await arrive_trained_on(monitor, candidate, [r["label"] for r in TRAINING])
        seen = await feed(monitor, range(HALF))
        if not restart:
            return seen + await feed(monitor, range(HALF, BATCHES))
    with open_monitor(settings, specs, RecordingPublisher(), Metrics("monitor")) as monitor:  # type: ignore[arg-type]
        return seen + await feed(monitor, range(HALF, BATCHES), redeliver=HALF - 1)


async def test_a_restart_between_two_halves_of_a_stream_changes_no_trigger_decision(
        tmp_path: Path, candidate: CandidateFactory) -> None:
    straight = await run(tmp_path / "straight", candidate, restart=False)
    restarted = await run(tmp_path / "restarted", candidate, restart=True)

    assert [s["new_samples"] for s in straight[:HALF]] == [BATCH * (k + 1) for k in range(HALF)]  # nothing fired
    assert straight[HALF - 1]["live"] is not None and straight[-1]["fired"][0][0] == "performance"
    assert restarted == straight


async def test_rows_of_a_changed_file_before_a_restart_still_fire_data_change_after_it(
        tmp_path: Path, candidate: CandidateFactory) -> None:
    # The file's rows come in the first half; the data is sufficient (200 new rows) only in the second.
    config = TriggersSpec(data_change=True, min_new_samples=200, drift=False, performance=False, max_age_days=None)
    straight = await run(tmp_path / "straight", candidate, restart=False, config=config)
    restarted = await run(tmp_path / "restarted", candidate, restart=True, config=config)

    fired = [(s["batch"], s["fired"]) for s in straight if s["fired"]]
    # Due at the 200th new row (batch 9), after the restart's point; held until the safeguard can judge
    # a candidate on the concept that began when the labels turned (min_holdout rows of it: batch 13).
    assert fired[0] == (HALF + 5, [("data_change", None)])
    assert "a concept change was detected" in straight[HALF + 1]["held"]
    assert restarted == straight
