"""When to restart a process that died: capped exponential backoff, and when to give up.

Like compose's ``restart: unless-stopped`` (whose backoff also doubles and resets once a container
has run for a while), except that a process failing fast again and again is not restarted forever:
after ``give_up_after`` fast failures in a row the supervisor gives up, loudly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    first_s: float = 0.5  # the delay before the first restart
    cap_s: float = 30.0  # no delay is longer
    factor: float = 2.0
    fast_s: float = 10.0  # a run shorter than this is a fast failure; a longer one resets the count
    give_up_after: int = 5  # fast failures in a row


@dataclass(frozen=True)
class Restart:
    """What to do about one death: restart after ``delay_s``, or give up (``delay_s`` is None)."""

    delay_s: float | None
    fast_failures: int  # in a row, this one included

    @property
    def give_up(self) -> bool:
        return self.delay_s is None


def after_death(policy: RestartPolicy, fast_failures: int, ran_s: float) -> Restart:
    """The restart after a process that ran ``ran_s`` seconds died, ``fast_failures`` fast ones before it.

    >>> p = RestartPolicy(first_s=1.0, cap_s=3.0, give_up_after=4)
    >>> [after_death(p, n, ran_s=0).delay_s for n in range(4)]
    [1.0, 2.0, 3.0, None]
    >>> after_death(p, 3, ran_s=60)
    Restart(delay_s=1.0, fast_failures=0)
    """
    if ran_s >= policy.fast_s:
        return Restart(policy.first_s, 0)
    count = fast_failures + 1
    if count >= policy.give_up_after:
        return Restart(None, count)
    return Restart(min(policy.first_s * policy.factor ** (count - 1), policy.cap_s), count)
