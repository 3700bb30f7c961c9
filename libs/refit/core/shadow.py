"""Which versions an inference replica shadow-scores: the challengers of the champion it serves.

The monitor's rule (``services/monitor/sessions.py``), followed from the signed decisions every
replica reads: after a promotion, the champion it replaced (``previous``); and the newest rejected
candidate newer than the champion (``candidate``). A rollback leaves no ``previous``: the version
rolled back from lost already. A candidate not judged yet has no decision, so only the monitor
scores it. Pure: the replica feeds it decisions and asks it for the challengers of what it serves.

>>> plan = ShadowPlan()
>>> plan.follow("ModelPromoted", 1, 1, "a")
>>> plan.follow("CandidateRejected", 2, 2, "b")
>>> [(c.version, c.role) for c in plan.challengers(serving=1)]
[(2, 'candidate')]
>>> plan.follow("ModelPromoted", 3, 3, "c")
>>> [(c.version, c.role) for c in plan.challengers(serving=3)]
[(1, 'previous')]
>>> plan.challengers(serving=1)  # a replica still serving v1 (a refused swap)
()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["candidate", "previous"]


@dataclass(frozen=True)
class Contender:
    """A version that challenges a champion, and where its bytes are (by digest)."""

    version: int
    digest: str
    role: Role


@dataclass
class ShadowPlan:
    """One model's champion, the champion it replaced, and its newest rejected candidate."""

    sequence: int = 0
    champion: tuple[int, str] | None = None
    previous: tuple[int, str] | None = None
    rejected: tuple[int, str] | None = None

    def follow(self, event_type: str, sequence: int, version: int, digest: str) -> None:
        """One authenticated decision. Serving decisions count in sequence order (older ones change
        nothing); a rejection counts whenever it comes, if it names a newer version."""
        if event_type == "CandidateRejected":
            if self.rejected is None or version > self.rejected[0]:
                self.rejected = (version, digest)
            return
        if sequence <= self.sequence:
            return
        promoted = event_type == "ModelPromoted"
        self.previous = self.champion if promoted and self.champion and self.champion[0] != version else None
        self.champion, self.sequence = (version, digest), sequence

    def challengers(self, serving: int) -> tuple[Contender, ...]:
        """The challengers of version ``serving`` when it is the champion (a replica that refused a swap
        serves another version, whose pairs the monitor's tests of the champion could not use)."""
        if self.champion is None or self.champion[0] != serving:
            return ()
        found: list[Contender] = []
        if self.previous is not None:
            found.append(Contender(*self.previous, "previous"))
        if self.rejected is not None and self.rejected[0] > serving:
            found.append(Contender(*self.rejected, "candidate"))
        return tuple(found)
