"""Which model artifacts may go: a pure rule over the registry's versions and decision log.

An artifact stays while anything may still need its bytes: the champion, every version a
rollback may return to (the versions of the newest ``keep_versions`` serving decisions), the
newest ``keep_versions`` versions (a rejected challenger may still win on live traffic), and
every candidate not yet judged. Everything else of a model is collectable. Artifacts are
content-addressed, so a digest stays while any version of any model keeps it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Held:
    """One version's artifact as the registry knows it."""

    model: str
    version: int
    digest: str
    pending: bool


def kept(versions: Sequence[Held], serving: Sequence[int], keep_versions: int) -> set[str]:
    """The digests one model must keep. ``serving``: the versions of its serving decisions, newest first."""
    reachable = set(serving[:keep_versions])
    newest = sorted((v.version for v in versions), reverse=True)[:keep_versions]
    return {v.digest for v in versions if v.pending or v.version in reachable or v.version in newest}


def collectable(by_model: Mapping[str, tuple[Sequence[Held], Sequence[int], int]]) -> set[str]:
    """The digests no model keeps, of versions the registry knows ({model: (versions, serving, keep)})."""
    keep: set[str] = set()
    known: set[str] = set()
    for versions, serving, keep_versions in by_model.values():
        keep |= kept(versions, serving, keep_versions)
        known |= {v.digest for v in versions}
    return known - keep


def rollback_reachable(serving: Iterable[int], keep_versions: int) -> list[int]:
    """The versions a rollback may return to: those of the newest ``keep_versions`` serving decisions."""
    return list(serving)[:keep_versions]
