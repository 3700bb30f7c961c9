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


def test_the_local_stack_key_is_random_per_state_dir_kept_and_private(tmp_path):
    """Issue 17, defect 13: local mode signed with a constant published in the source."""
    import stat

    from refit.settings import LOCAL_SIGNING_KEY
    from refit.signing import local_key

    first, other = local_key(tmp_path / "a"), local_key(tmp_path / "b")
    assert len(first) == 64 and first != other and LOCAL_SIGNING_KEY not in (first, other)
    assert local_key(tmp_path / "a") == first  # a restart on the same state keeps its key
    assert stat.S_IMODE((tmp_path / "a" / "signing.key").stat().st_mode) == 0o600


def test_refit_up_passes_the_state_dirs_key_to_monitor_and_inference(tmp_path, monkeypatch):
    from refit.stack import Stack

    monkeypatch.delenv("REFIT_DECISION_SIGNING_KEY", raising=False)
    stack = Stack(state_dir=tmp_path, specs_path=tmp_path / "models.yaml", ports={"monitor": 1, "inference-0": 2})
    key = stack.signing_key
    assert key == (tmp_path / "signing.key").read_text()
    assert stack.service_env("monitor")["REFIT_MONITOR_DECISION_SIGNING_KEY"] == key
    assert stack.service_env("inference-0")["REFIT_INFERENCE_DECISION_SIGNING_KEY"] == key
    chosen = Stack(state_dir=tmp_path, specs_path=tmp_path / "models.yaml", ports={"monitor": 1},
                   env={"REFIT_DECISION_SIGNING_KEY": "an operator's key"})
    assert chosen.service_env("monitor")["REFIT_MONITOR_DECISION_SIGNING_KEY"] == "an operator's key"
