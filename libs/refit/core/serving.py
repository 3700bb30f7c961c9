"""Should this replica swap? A decision is followed only if it is newer than what is served."""

from __future__ import annotations

from collections.abc import Collection, Sequence

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


def unready(required: Sequence[str], served: Collection[str], models: Sequence[str]) -> str | None:
    """Why a replica is not ready, or None: every ``required`` model served, or, with none required,
    any model at all (a replica serving one model takes that model's traffic while others wait)."""
    if required:
        missing = [n for n in required if n not in served]
        return f"no champion yet for {', '.join(missing)}" if missing else None
    return None if served else f"no champion yet for any of {', '.join(models)}"
