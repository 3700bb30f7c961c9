"""The monitor's observer: which samples are live evidence of the champion, and where a change is located."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from refit.events import SampleIngested
from services.monitor.observer import Observed, score
from services.monitor.registry import Holdout
from services.monitor.sessions import Champion
from tests.unit.test_shadow import ROWS, SPEC, ridge

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def samples(n: int, shift_from: int, shift: float = 0.0) -> list[SampleIngested]:
    """The diabetes rows as a stream, one second apart, their target moved by ``shift`` from ``shift_from`` on."""
    return [SampleIngested(model="diabetes", sample_id=f"s{i}", features=r["features"],
                           label=r["label"] + (shift if i >= shift_from else 0.0), occurred_at=T0 + timedelta(seconds=i))
            for i, r in enumerate((ROWS * 3)[:n])]


def test_samples_that_came_with_the_champions_training_data_are_not_live_evidence_of_it() -> None:
    champion = Champion(1, T0, ridge(flip=False), {"rmse": 50.0}, trained_until=T0 + timedelta(seconds=99))
    observed = Observed()
    for sample in samples(300, shift_from=300):
        observed.add(sample)
    score(SPEC, observed, champion, performance_window=200)
    assert len(observed.scored) == 300  # every sample is scored (and so not scored again)
    assert [sample_id for _, sample_id, _, _ in observed.signals][:1] == ["s100"] and len(observed.signals) == 200
    assert [seq for seq, *_ in observed.unsaved] == list(range(101, 301))  # their positions, for a restart


def test_a_detected_change_is_located_where_the_errors_split_not_where_adwins_window_starts() -> None:
    champion = Champion(1, T0, ridge(flip=False), {"rmse": 50.0})
    observed, located = Observed(), []
    for i, sample in enumerate(samples(1200, shift_from=800, shift=60.0)):
        observed.add(sample)
        score(SPEC, observed, champion, performance_window=200)
        if observed.change is not None:
            located.append((i + 1 - observed.detector.width, int(observed.change[0][0].removeprefix("s"))))
            observed.change = None
    window_start, first = located[0]
    assert window_start < 800 - 100, located  # ADWIN's window reached far into the old concept
    assert abs(first - 800) <= 10, located


def test_a_champion_unlike_its_holdout_from_the_first_live_sample_on_is_a_change_located_there() -> None:
    # Its holdout rows are the reference the detector sees first: live errors unlike theirs are a change,
    # although every live error is like every other one. Rows the ridge never learnt, on both sides.
    champion = Champion(1, T0, ridge(flip=False), {"rmse": 50.0})
    unseen = ROWS[300:]
    reference = Holdout([f"h{i}" for i in range(len(unseen))], [r["features"] for r in unseen],
                        [str(r["label"]) for r in unseen])
    live = [SampleIngested(model="diabetes", sample_id=f"s{i}", features=r["features"], label=r["label"] + 120.0,
                           occurred_at=T0 + timedelta(seconds=i)) for i, r in enumerate(unseen)]
    changes = []
    for primed in (None, reference):
        observed, located = Observed(), None
        for sample in live:
            observed.add(sample)
            score(SPEC, observed, champion, performance_window=200, reference=primed)
            if observed.change is not None and located is None:
                located = observed.change[0][0]
        changes.append(located)
    assert changes == [None, "s0"]


def run(observed: Observed, champion: Champion, stream: list[SampleIngested]) -> list[tuple[int, str]]:
    """Observe and score the stream sample by sample: where a change was found, and by which detector."""
    found = []
    for i, sample in enumerate(stream):
        observed.add(sample)
        score(SPEC, observed, champion, performance_window=200)
        if observed.change is not None:
            found.append((i, observed.change_by))
            observed.change = None
    return found


def test_a_moderate_rise_of_a_regressions_error_is_found_by_the_cusum_and_a_restart_finds_it_at_the_same_sample() -> None:
    champion = Champion(1, T0, ridge(flip=False), {"rmse": 50.0})
    stream = samples(1300, shift_from=700, shift=30.0)  # the ridge's RMSE rises by about a quarter
    found = run(Observed(), champion, stream)
    assert found and found[0][1] == "CUSUM on the champion's live error" and 700 <= found[0][0] < 1000, found
    adwin_only = Observed()
    score(SPEC, adwin_only, champion, performance_window=200)  # the champion's detectors exist from here on
    adwin_only.cusum = None
    assert all(at > found[0][0] for at, _ in run(adwin_only, champion, stream)), "ADWIN alone is later, or silent"

    before = Observed()
    run(before, champion, stream[:600])
    restored = Observed.restored(before.state(), list(enumerate(stream[:600], start=1)), list(before.signals))
    assert [(at + 600, by) for at, by in run(restored, champion, stream[600:])] == found
