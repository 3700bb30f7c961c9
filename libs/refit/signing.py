"""Decision authenticity: HMAC-SHA256 over the exact bytes of the event.

The signature travels in a Kafka header (and beside the bytes over HTTP), so no
canonical re-serialisation is ever needed: the bytes verified are the bytes parsed.
"""

from __future__ import annotations

import hashlib
import hmac

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
