"""Inference's request ids: the old per-process prefix and counter (guessable: issue 17, defect 14)
against ``RequestIds`` (every bit from ``os.urandom``, read in chunks), and ``uuid.uuid4()``
(a getrandom(2) call per id), in the same process and run (docs/benchmarks.md).

    .venv/bin/python bench/request_ids.py            # --number 200000 --repeat 7

Bounded: repeat × number ids per generator; prints the best per-id time and the ratios.
"""

from __future__ import annotations

import argparse
import itertools
import secrets
import timeit
import uuid
from collections.abc import Callable

from services.inference.predict import RequestIds


class PrefixAndCounter:
    """The ids before: a random prefix per process and a counter. One id tells every next one."""

    def __init__(self) -> None:
        self._prefix = secrets.randbits(64) << 64
        self._counter = itertools.count(1)

    def new(self) -> str:
        return str(uuid.UUID(int=self._prefix | next(self._counter) & (2**62 - 1), version=4))


def per_id_ns(make: Callable[[], str], number: int, repeat: int) -> float:
    return min(timeit.repeat(make, number=number, repeat=repeat)) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    old = per_id_ns(PrefixAndCounter().new, args.number, args.repeat)
    new = per_id_ns(RequestIds().new, args.number, args.repeat)
    per_call = per_id_ns(lambda: str(uuid.uuid4()), args.number, args.repeat)
    print(f"prefix+counter (old, guessable): {old:7.0f} ns/id")
    print(f"RequestIds (buffered urandom):   {new:7.0f} ns/id   {new / old:.2f}x the old")
    print(f"uuid.uuid4() (a syscall per id): {per_call:7.0f} ns/id   {per_call / old:.2f}x the old")


if __name__ == "__main__":
    main()
