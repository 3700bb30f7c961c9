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


# An onnxruntime session holds the model's weights again after parsing the bytes, plus its
# arena and the graph optimiser's copies: measured at 2-3x the artifact for the digits and
# forest models (docs/reliability.md). While the new session loads, the old one keeps serving.
SESSION_BYTES_PER_ARTIFACT_BYTE = 4


def headroom_for(artifact_bytes: int, available_bytes: int | None, reserve_bytes: int) -> bool:
    """Is there memory for a second session beside the one serving? Unknown availability: yes.

    Loading needs about ``SESSION_BYTES_PER_ARTIFACT_BYTE`` times the artifact, and ``reserve_bytes``
    must stay free after it for requests in flight.
    """
    if available_bytes is None:
        return True
    return available_bytes - artifact_bytes * SESSION_BYTES_PER_ARTIFACT_BYTE >= reserve_bytes
