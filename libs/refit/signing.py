"""Decision authenticity: HMAC-SHA256 over the exact bytes of the event.

The signature travels in a Kafka header (and beside the bytes over HTTP), so no
canonical re-serialisation is ever needed: the bytes verified are the bytes parsed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from refit.errors import SignatureError

HEADER = "refit-signature"
_PREFIX = "hmac-sha256="


def sign(key: bytes, payload: bytes) -> str:
    return _PREFIX + hmac.new(key, payload, hashlib.sha256).hexdigest()


def verify(key: bytes, payload: bytes, signature: str | None) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is the HMAC of ``payload``."""
    if not signature:
        raise SignatureError("decision is not signed")
    expected = sign(key, payload)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise SignatureError("decision signature does not verify")


LOCAL_KEY_FILE = "signing.key"


def local_key(state_dir: Path) -> str:
    """The local stack's decision signing key: random, made once per state directory.

    Kept in ``state_dir/signing.key``, readable by its owner only (0600), so a restart on the same
    state signs and verifies as before, and no two local stacks share a key that anyone can read
    in the source.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCAL_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
    return path.read_text().strip()
