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
>>> started = ShadowPlan()  # a replica that starts: the topic brings v3's promotion first,
>>> started.follow("ModelPromoted", 3, 3, "c")
>>> started.follow("ModelPromoted", 1, 1, "a")  # then the monitor the decision before it
>>> [(c.version, c.role) for c in started.challengers(serving=3)]
[(1, 'previous')]
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    """One model's two newest serving decisions (the champion's, and the one it followed) and its newest
    rejected candidate, in whatever order they are read.

    The order does not matter: a replica that starts learns the decisions before its champion's from
    the monitor (``GET /v1/models/{name}/champion``), possibly after the topic brought newer ones.
    """

    serving: dict[int, tuple[str, int, str]] = field(default_factory=dict)  # sequence: (event type, version, digest)
    rejected: tuple[int, str] | None = None

    def follow(self, event_type: str, sequence: int, version: int, digest: str) -> None:
        """One authenticated decision. A rejection counts if it names a newer version; a serving
        decision counts if it is one of the two newest read (a replay changes nothing)."""
        if event_type == "CandidateRejected":
            if self.rejected is None or version > self.rejected[0]:
                self.rejected = (version, digest)
            return
        self.serving[sequence] = (event_type, version, digest)
        for old in sorted(self.serving)[:-2]:
            del self.serving[old]

    @property
    def champion(self) -> tuple[int, str] | None:
        if not self.serving:
            return None
        _, version, digest = self.serving[max(self.serving)]
        return version, digest

    @property
    def previous(self) -> tuple[int, str] | None:
        """The champion a promotion replaced; a rollback leaves none (the version rolled back from lost)."""
        if len(self.serving) < 2:
            return None
        before, latest = sorted(self.serving)
        event_type, version, _ = self.serving[latest]
        _, replaced, digest = self.serving[before]
        return (replaced, digest) if event_type == "ModelPromoted" and replaced != version else None

    def challengers(self, serving: int) -> tuple[Contender, ...]:
        """The challengers of version ``serving`` when it is the champion (a replica that refused a swap
        serves another version, whose pairs the monitor's tests of the champion could not use)."""
        champion = self.champion
        if champion is None or champion[0] != serving:
            return ()
        found: list[Contender] = []
        if (previous := self.previous) is not None:
            found.append(Contender(*previous, "previous"))
        if self.rejected is not None and self.rejected[0] > serving:
            found.append(Contender(*self.rejected, "candidate"))
        return tuple(found)
