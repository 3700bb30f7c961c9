"""Should this replica swap? Only to a promotion or rollback newer than what it serves."""

from __future__ import annotations

import pytest

from refit.core.serving import SERVING_EVENT_TYPES, should_swap
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
