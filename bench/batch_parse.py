"""Ingest's batch body: its hand parse (orjson, then pydantic on the decoded value) against pydantic's
own ``BatchIn.model_validate_json``, in the same process and run (docs/benchmarks.md).

    .venv/bin/python bench/batch_parse.py            # --rows 500 --rounds 9 --repeat 200

Bounded: rounds × repeat parses of one body; prints medians and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import orjson

from refit.datasets import sample_rows
from services.ingest.batch import BatchIn, parse_batch


def body(rows: int) -> bytes:
    samples = [{"features": r["features"], "label": r["label"], "idempotency_key": r["idempotency_key"]}
               for r in sample_rows("digits")[:rows]]
    return orjson.dumps({"model": "digits", "samples": samples})


def per_parse(parse: object, data: bytes, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        parse(data)  # type: ignore[operator]
    return (time.perf_counter() - started) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    data = body(args.rows)
    assert parse_batch(data, "application/json") == BatchIn.model_validate_json(data)  # the same answer
    hand, native = [], []
    for _ in range(args.rounds):  # alternated, so a slower stretch of the machine costs both alike
        hand.append(per_parse(lambda b: parse_batch(b, "application/json"), data, args.repeat))
        native.append(per_parse(BatchIn.model_validate_json, data, args.repeat))
    ratios = [n / h for h, n in zip(hand, native, strict=True)]
    print(f"batch of {args.rows} digits rows, {len(data):,} bytes, {args.rounds} rounds of {args.repeat}")
    print(f"hand parse (orjson + model_validate): median {statistics.median(hand) * 1e3:.3f} ms")
    print(f"BatchIn.model_validate_json:          median {statistics.median(native) * 1e3:.3f} ms")
    print(f"model_validate_json / hand: median {statistics.median(ratios):.2f} "
          f"(rounds {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
