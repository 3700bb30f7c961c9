"""The monitor and the spec's bounds (issue 17, defects 10 and 12): a sample beyond them is a dead letter,
and a holdout row stored before them (every feature at 3e38, a label of 1e38) no longer crashes judging."""

from __future__ import annotations

from refit.events import SampleIngested
from refit.kafka import Incoming
from services.monitor.parts import Monitor
from tests.service.test_monitor import (SPEC, CandidateFactory, arrive_and_judge, candidate, monitor,  # noqa: F401
                                        onnx_bytes)


async def test_a_sample_beyond_the_bounds_is_a_dead_letter(monitor: Monitor) -> None:
    names = SPEC.input.features
    events = [SampleIngested(model="diabetes", sample_id="p-1", features=dict.fromkeys(names, 3e38), label=150.0),
              SampleIngested(model="diabetes", sample_id="p-2", features=dict.fromkeys(names, 0.0), label=1e38)]
    rejected = await monitor.intake.handle([Incoming(record=None, event=e) for e in events])  # type: ignore[arg-type]
    assert rejected == {0: "features.age: 3e+38 is outside the model's bounds [-1, 1]",
                        1: "label: 1e+38 is outside the model's bounds [0, 1000]"}


async def test_a_holdout_poisoned_before_the_bounds_is_judged(monitor: Monitor, candidate: CandidateFactory) -> None:
    """The model predicts NaN on the 3e38 row; scikit-learn's metrics raised and the monitor's loops died."""
    names = SPEC.input.features
    monitor.registry.add_holdout([  # stored as the monitor did before the bounds: straight into its holdout
        SampleIngested(model="diabetes", sample_id="p-1", features=dict.fromkeys(names, 3e38), label=150.0),
        SampleIngested(model="diabetes", sample_id="p-2", features=dict.fromkeys(names, 0.0), label=1e38)])
    await arrive_and_judge(monitor, candidate(None))
    await arrive_and_judge(monitor, candidate(None))
    decisions = monitor.publisher.decisions()  # type: ignore[attr-defined]
    assert [d["event_type"] for d in decisions] == ["ModelPromoted", "ModelPromoted"], decisions[-1]["reasons"]
    assert decisions[-1]["holdout"]["size"] == 144
    assert decisions[-1]["candidate_scores"]["r2"] > 0.3
