"""Content-addressed artifact store: bytes in, SHA-256 digest out, and back.

A local directory by default (shared by trainer and monitor, a volume under
compose); :class:`HttpArtifactStore` reads through the monitor's
``/v1/artifacts/{digest}`` for services on other hosts. Every read verifies the
digest, so a corrupted or substituted file is never handed out.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

import httpx

from refit.errors import ArtifactError

DIGEST = re.compile(r"^[0-9a-f]{64}$")


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """Refuse anything that is not 64 lowercase hex characters (this also stops path traversal)."""
    if not DIGEST.fullmatch(digest):
        raise ArtifactError(f"not a SHA-256 hex digest: {digest[:80]!r}")
    return digest


def verified(data: bytes, digest: str) -> bytes:
    actual = digest_of(data)
    if actual != digest:
        raise ArtifactError(f"artifact bytes have digest {actual}, expected {digest}")
    return data


class ArtifactReader(Protocol):
    def get(self, digest: str) -> bytes: ...


class LocalArtifactStore:
    """Artifacts as ``<root>/sha256/<first two hex>/<digest>``, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / "sha256" / digest[:2] / digest

    def put(self, data: bytes) -> str:
        digest = digest_of(data)
        target = self.path(digest)
        if target.exists() and digest_of(target.read_bytes()) == digest:
            return digest  # a corrupted copy is replaced below
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def delete(self, digest: str) -> int | None:
        """Remove an artifact; the bytes freed, or None if it was not there."""
        path = self.path(digest)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return None
        return size

    def get(self, digest: str) -> bytes:
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"no artifact {digest}") from None
        return verified(data, digest)

    def uri(self, digest: str) -> str:
        return self.path(digest).resolve().as_uri()


class HttpArtifactStore:
    """Reads artifacts from a monitor over HTTP, verifying each digest."""

    def __init__(self, base_url: str, timeout_s: float = 30.0, token: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        # One client for the store's life: building one (its TLS context) took 50-180 ms, which
        # was most of a swap's time (docs/benchmarks.md). ``token``: the read credential.
        self.client = httpx.Client(timeout=timeout_s,
                                   headers={"authorization": f"Bearer {token}"} if token else None)

    def close(self) -> None:
        self.client.close()

    def get(self, digest: str) -> bytes:
        check_digest(digest)
        try:
            response = self.client.get(f"{self.base_url}/v1/artifacts/{digest}")
        except httpx.HTTPError as exc:
            raise ArtifactError(f"cannot fetch artifact {digest}: {exc}") from None
        if response.status_code != 200:
            raise ArtifactError(f"cannot fetch artifact {digest}: HTTP {response.status_code}")
        return verified(response.content, digest)
