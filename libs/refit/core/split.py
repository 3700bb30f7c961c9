"""The holdout split: a deterministic function of the sample id, shared by trainer and monitor.

Because both services call the same function on the same id, the trainer can
never train on a row the monitor judges with, whatever order or how often the
rows arrive.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

_SCALE = float(1 << 64)
_BELOW_ONE = 1.0 - 2.0**-53


def holdout_score(sample_id: str, salt: str) -> float:
    """A uniform number in [0, 1) derived from the id alone (SHA-256, first 8 bytes)."""
    digest = hashlib.sha256(f"{salt}\x00{sample_id}".encode()).digest()
    # Float division rounds the top 2**10 prefixes up to 1.0; clamp to keep the promise [0, 1).
    return min(int.from_bytes(digest[:8], "big") / _SCALE, _BELOW_ONE)


def is_holdout(sample_id: str, fraction: float, salt: str) -> bool:
    """True when the sample belongs to the monitor's holdout for the model ``salt``."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"holdout fraction must be within [0, 1], got {fraction}")
    return holdout_score(sample_id, salt) < fraction


def fingerprint(sample_ids: Iterable[str]) -> str:
    """Order-independent fingerprint of a set of ids: SHA-256 over the sorted ids."""
    h = hashlib.sha256()
    for sid in sorted(sample_ids):
        h.update(sid.encode())
        h.update(b"\n")
    return h.hexdigest()
