"""The monitor's holdout writes: rows per second into its SQLite registry.

``Registry.add_holdout`` stores a consumed batch of holdout rows in one transaction. The
baseline, measured in the same run on the same file settings (WAL, ``synchronous=FULL``), is
the same INSERT with one transaction per row: what an autocommit connection does without an
explicit transaction, and what the registry did before. Rounds alternate the two.

    .venv/bin/python bench/holdout_writes.py --rows 3000 --batch 500 --rounds 3
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from refit.events import SampleIngested
from services.monitor.registry import Registry

INSERT = "INSERT OR IGNORE INTO holdout (model, sample_id, features, text, label) VALUES (?, ?, ?, ?, ?)"


def samples(rows: int, offset: int) -> list[SampleIngested]:
    return [SampleIngested(model="digits", sample_id=f"s-{offset + i}", features={f"p{j}": float(j) for j in range(64)},
                           label=str(i % 10)) for i in range(rows)]


def registry_rate(path: Path, rows: list[SampleIngested], batch: int) -> float:
    registry = Registry(path)
    try:
        started = time.perf_counter()
        for start in range(0, len(rows), batch):
            registry.add_holdout(rows[start:start + batch])
        elapsed = time.perf_counter() - started
        assert registry.holdout_size("digits") == len(rows)
    finally:
        registry.close()
    return len(rows) / elapsed


def row_by_row_rate(path: Path, rows: list[SampleIngested]) -> float:
    Registry(path).close()  # the same schema and pragmas
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=FULL")
    try:
        started = time.perf_counter()
        db.executemany(INSERT, [(s.model, s.sample_id, orjson.dumps(s.features), None, str(s.label)) for s in rows])
        elapsed = time.perf_counter() - started
        assert db.execute("SELECT COUNT(*) FROM holdout").fetchone() == (len(rows),)
    finally:
        db.close()
    return len(rows) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=500, help="rows per consumed batch (the consumer's poll)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"one transaction per row (baseline)": [], "Registry.add_holdout": []}
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:  # the disk the services write to, not tmpfs
        for round_ in range(args.rounds):
            rows = samples(args.rows, round_ * args.rows)
            rates["one transaction per row (baseline)"].append(row_by_row_rate(Path(tmp) / f"b{round_}.sqlite", rows))
            rates["Registry.add_holdout"].append(registry_rate(Path(tmp) / f"r{round_}.sqlite", rows, args.batch))
    base = statistics.median(rates["one transaction per row (baseline)"])
    print(f"{args.rows:,} digits holdout rows, batches of {args.batch}, {args.rounds} rounds (median)")
    print("| writer | rows/s | ratio to baseline |\n|---|---|---|")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"| {name} | {rate:,.0f} | {rate / base:.1f} |")


if __name__ == "__main__":
    main()
