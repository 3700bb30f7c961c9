"""The local content-addressed artifact store."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable

import pytest

from refit.artifacts import LocalArtifactStore, check_digest, digest_of
from refit.errors import ArtifactError

StoreFactory = Callable[[], LocalArtifactStore]


@pytest.fixture
def make_store(tmp_path) -> StoreFactory:
    """A fresh store per call, each under its own directory of ``tmp_path``."""
    counter = iter(range(1_000))

    def make() -> LocalArtifactStore:
        return LocalArtifactStore(tmp_path / f"store-{next(counter)}")

    return make


@pytest.fixture
def blob() -> bytes:
    return random.Random(42).randbytes(4096)


def test_put_returns_the_sha256_and_get_returns_the_bytes(make_store, blob):
    store = make_store()

    digest = store.put(blob)

    assert digest == hashlib.sha256(blob).hexdigest() == digest_of(blob)
    assert store.get(digest) == blob


def test_empty_bytes_round_trip(make_store):
    store = make_store()

    assert store.get(store.put(b"")) == b""
    assert store.put(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_layout_is_sha256_then_two_hex_then_the_digest(make_store, blob):
    store = make_store()
    digest = store.put(blob)

    path = store.root / "sha256" / digest[:2] / digest
    assert store.path(digest) == path
    assert path.read_bytes() == blob
    assert store.uri(digest) == path.resolve().as_uri()


def test_content_addressing_separates_different_bytes_and_is_shared_across_stores(make_store, tmp_path):
    store = make_store()
    a, b = store.put(b"model a"), store.put(b"model b")

    assert a != b
    assert (store.get(a), store.get(b)) == (b"model a", b"model b")
    assert LocalArtifactStore(store.root).get(a) == b"model a"  # another process on the same volume
    assert make_store().put(b"model a") == a


def test_put_is_idempotent(make_store, blob):
    store = make_store()
    digest = store.put(blob)
    path = store.path(digest)
    stat = path.stat()

    assert store.put(blob) == digest
    assert path.stat().st_mtime_ns == stat.st_mtime_ns  # not rewritten
    assert store.get(digest) == blob
    assert sorted(p.name for p in path.parent.iterdir()) == [digest]  # no temporary files left behind


def test_a_missing_artifact_is_an_artifact_error(make_store):
    digest = digest_of(b"never stored")

    with pytest.raises(ArtifactError, match=f"^no artifact {digest}$"):
        make_store().get(digest)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda data: data[:-1],  # truncated
        lambda data: data + b"\x00",
        lambda data: bytes([data[0] ^ 1]) + data[1:],  # one bit flipped
        lambda data: b"",
    ],
    ids=["truncated", "appended", "bit-flip", "emptied"],
)
def test_a_corrupted_file_is_detected_on_get(make_store, blob, corrupt):
    store = make_store()
    digest = store.put(blob)
    store.path(digest).write_bytes(corrupt(blob))

    with pytest.raises(ArtifactError, match=f"artifact bytes have digest [0-9a-f]{{64}}, expected {digest}$"):
        store.get(digest)


def test_a_substituted_file_is_detected_on_get(make_store):
    store = make_store()
    good, evil = store.put(b"good model"), store.put(b"evil model")
    os.replace(store.path(evil), store.path(good))

    with pytest.raises(ArtifactError, match=f"artifact bytes have digest {evil}, expected {good}$"):
        store.get(good)


@pytest.mark.parametrize(
    "digest",
    [
        "../../etc/passwd",
        "../" + "a" * 61,
        "a" * 63,
        "a" * 65,
        "A" * 64,  # uppercase is not the canonical form
        "g" * 64,
        "a" * 64 + "\n",
        "a" * 62 + "/.",
        "sha256:" + "a" * 64,
        "",
    ],
    ids=["traversal", "traversal-64", "short", "long", "upper", "non-hex", "newline", "slash", "prefixed", "empty"],
)
@pytest.mark.parametrize("operation", ["get", "path", "uri"])
def test_invalid_digests_are_refused(make_store, digest, operation):
    store = make_store()

    with pytest.raises(ArtifactError, match="^not a SHA-256 hex digest: "):
        getattr(store, operation)(digest)
    assert not store.root.exists()  # nothing was created or touched


def test_check_digest_returns_a_valid_digest_unchanged():
    digest = digest_of(b"x")

    assert check_digest(digest) == digest


def test_artifact_error_is_an_os_error():
    assert issubclass(ArtifactError, OSError)
