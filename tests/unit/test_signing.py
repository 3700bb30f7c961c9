"""Decision authenticity: HMAC-SHA256 over the exact bytes."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from refit.errors import SignatureError
from refit.signing import HEADER, sign, verify

KEY = b"k" * 32
PAYLOAD = b'{"event_type":"ModelPromoted","model":"digits","sequence":7}'


def test_signature_is_a_labelled_hmac_sha256():
    assert sign(KEY, PAYLOAD) == "hmac-sha256=" + hmac.new(KEY, PAYLOAD, hashlib.sha256).hexdigest()
    assert HEADER == "refit-signature"


def test_signature_is_pinned():
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
    assert sign(b"Jefe", b"what do ya want for nothing?") == (
        "hmac-sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")


def test_a_good_signature_verifies():
    assert verify(KEY, PAYLOAD, sign(KEY, PAYLOAD)) is None


@pytest.mark.parametrize(
    "tampered",
    [
        PAYLOAD.replace(b"7", b"8"),
        PAYLOAD + b" ",  # even whitespace: the bytes verified are the bytes parsed
        PAYLOAD[:-1],
        b"",
    ],
)
def test_a_tampered_payload_does_not_verify(tampered):
    with pytest.raises(SignatureError, match="^decision signature does not verify$"):
        verify(KEY, tampered, sign(KEY, PAYLOAD))


@pytest.mark.parametrize("other_key", [b"x" * 32, KEY[:-1], b""])
def test_a_signature_made_with_another_key_does_not_verify(other_key):
    with pytest.raises(SignatureError, match="^decision signature does not verify$"):
        verify(KEY, PAYLOAD, sign(other_key, PAYLOAD))


@pytest.mark.parametrize("signature", [None, ""])
def test_a_missing_signature_is_refused(signature):
    with pytest.raises(SignatureError, match="^decision is not signed$"):
        verify(KEY, PAYLOAD, signature)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s.upper(),
        lambda s: s.removeprefix("hmac-sha256="),  # the bare hex digest
        lambda s: s.replace("hmac-sha256=", "hmac-sha1="),
        lambda s: s + "00",
        lambda s: s[:-1],
        lambda s: " " + s,
        lambda s: s[:-1] + "é",
    ],
    ids=["upper", "bare", "other-algorithm", "longer", "shorter", "padded", "non-ascii"],
)
def test_a_malformed_signature_does_not_verify(mangle):
    with pytest.raises(SignatureError, match="^decision signature does not verify$"):
        verify(KEY, PAYLOAD, mangle(sign(KEY, PAYLOAD)))


def test_signature_error_is_a_value_error():
    assert issubclass(SignatureError, ValueError)
