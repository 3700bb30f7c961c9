"""Should this replica swap? A decision is followed only if it is newer than what is served."""

from __future__ import annotations

SERVING_EVENT_TYPES = frozenset({"ModelPromoted", "ModelRolledBack"})


def should_swap(served_sequence: int | None, event_type: str, sequence: int) -> bool:
    """True for a promotion or rollback newer (by the model's decision sequence) than the served one.

    Replays, redeliveries and out-of-order old decisions change nothing; rejections never swap.
    """
    if event_type not in SERVING_EVENT_TYPES:
        return False
    return served_sequence is None or sequence > served_sequence
