"""Should this replica swap? Only to a promotion or rollback newer than what it serves."""

from __future__ import annotations

import pytest

from refit.core.serving import MAX_SEQUENCE_AHEAD, SERVING_EVENT_TYPES, sequence_refusal, should_swap
from refit.events import SERVING_DECISIONS


@pytest.mark.parametrize(
    ("served", "event_type", "sequence", "swap"),
    [
        (None, "ModelPromoted", 1, True),  # nothing served yet
        (None, "ModelRolledBack", 3, True),
        (None, "CandidateRejected", 1, False),  # rejections never swap
        (4, "ModelPromoted", 5, True),  # newer
        (4, "ModelRolledBack", 5, True),
        (4, "ModelPromoted", 4, False),  # redelivery of what is served
        (4, "ModelPromoted", 3, False),  # an old decision arriving late
        (4, "ModelRolledBack", 2, False),
        (4, "CandidateRejected", 9, False),
        (4, "SampleIngested", 9, False),
        (4, "modelpromoted", 9, False),  # event types are exact
        (0, "ModelPromoted", 1, True),  # sequence 0 is a served sequence, not "nothing"
        (0, "ModelPromoted", 0, False),
    ],
)
def test_should_swap(served, event_type, sequence, swap):
    assert should_swap(served, event_type, sequence) is swap


def test_serving_event_types_are_the_serving_decisions():
    assert SERVING_EVENT_TYPES == {cls.model_fields["event_type"].default for cls in SERVING_DECISIONS}


def test_replaying_a_decision_stream_serves_the_newest_serving_decision():
    stream = [("ModelPromoted", 1), ("CandidateRejected", 2), ("ModelPromoted", 3), ("ModelRolledBack", 4),
              ("CandidateRejected", 5)]
    served = None
    for _ in range(2):  # the second pass is a full redelivery
        for event_type, sequence in stream:
            if should_swap(served, event_type, sequence):
                served = sequence
    for event_type, sequence in reversed(stream):  # and out of order
        if should_swap(served, event_type, sequence):
            served = sequence

    assert served == 4


def test_a_replica_is_ready_with_any_model_served_or_with_every_required_one() -> None:
    """Issue 17, defect 4: after `make run` only digits is trained; a replica serving it takes its traffic."""
    from refit.core.serving import unready

    models = ["digits", "diabetes"]
    assert unready((), {"digits"}, models) is None
    assert unready((), set(), models) == "no champion yet for any of digits, diabetes"
    assert unready(("digits", "diabetes"), {"digits"}, models) == "no champion yet for diabetes"
    assert unready(("digits",), {"digits"}, models) is None


@pytest.mark.parametrize(
    ("served", "event_type", "sequence", "swap"),
    [
        (None, "ModelPromoted", 7, True),
        (1_000_000, "ModelRolledBack", 7, True),  # the replica serves a decision the monitor never made
        (4, "ModelPromoted", 7, True),            # newer, as from the topic
        (7, "ModelPromoted", 7, False),           # what is served
        (7, "CandidateRejected", 9, False),       # rejections never swap, whoever says so
    ],
)
def test_the_monitors_answer_wins_over_what_is_served(served, event_type, sequence, swap):
    """Issue 17, defect 13: a forged decision numbered 1,000,000 no longer outranks the monitor."""
    assert should_swap(served, event_type, sequence, authoritative=True) is swap


def test_a_decision_far_ahead_of_the_monitors_champion_is_refused():
    assert sequence_refusal(1_000_000, None) is None  # before the monitor ever answered: nothing to compare
    assert sequence_refusal(7 + MAX_SEQUENCE_AHEAD, 7) is None
    assert sequence_refusal(8 + MAX_SEQUENCE_AHEAD, 7) == (
        f"sequence {8 + MAX_SEQUENCE_AHEAD} is more than {MAX_SEQUENCE_AHEAD} ahead of the monitor's champion "
        "decision (7)")
    assert sequence_refusal(1_000_000, 7, limit=10) == (
        "sequence 1000000 is more than 10 ahead of the monitor's champion decision (7)")
