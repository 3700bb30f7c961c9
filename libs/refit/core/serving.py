"""Should this replica swap? A decision is followed only if it is newer than what is served."""

from __future__ import annotations

from collections.abc import Collection, Sequence

SERVING_EVENT_TYPES = frozenset({"ModelPromoted", "ModelRolledBack"})


def should_swap(served_sequence: int | None, event_type: str, sequence: int, authoritative: bool = False) -> bool:
    """True for a promotion or rollback newer (by the model's decision sequence) than the served one.

    Replays, redeliveries and out-of-order old decisions change nothing; rejections never swap.
    ``authoritative``: the decision is the monitor's signed answer about its champion, which wins
    over whatever the replica serves, even a decision numbered ahead of it (one the monitor never
    made: a forgery, or a decision of a monitor whose state was lost).
    """
    if event_type not in SERVING_EVENT_TYPES:
        return False
    if served_sequence is None:
        return True
    return sequence != served_sequence if authoritative else sequence > served_sequence


# How far ahead of the monitor's champion decision a decision from the topic may be numbered.
# Every decision of a model takes the next number, rejections too, so a genuine promotion comes a
# few numbers after the champion; one a thousand ahead was not made by this monitor. If a model
# ever had that many rejections in a row, its next promotion is refused on the topic and taken
# from the monitor at the next periodic check instead.
MAX_SEQUENCE_AHEAD = 1000


def sequence_refusal(sequence: int, champion_sequence: int | None,
                     limit: int = MAX_SEQUENCE_AHEAD) -> str | None:
    """Why a decision from the topic is refused for its sequence, or None.

    ``champion_sequence`` is the sequence of the monitor's last signed answer about its champion
    (None before the first): a decision numbered more than ``limit`` past it would otherwise make
    every genuine decision after it look old.
    """
    if champion_sequence is None or sequence <= champion_sequence + limit:
        return None
    return (f"sequence {sequence} is more than {limit} ahead of the monitor's champion decision "
            f"({champion_sequence})")


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
