"""The services' SQLite stores: opened one way, written in transactions (autocommit mode otherwise)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Everything in the block commits together, or not at all.

    ``BEGIN IMMEDIATE`` takes the write lock at the start, so the block never fails half-way for
    another writer. On any exception, a failed ``COMMIT`` included, the transaction is rolled
    back, so the connection is never left inside a transaction. Without one, an autocommit
    connection also commits (and, with ``synchronous=FULL``, syncs) each row of an
    ``executemany`` on its own.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise



def open_store(path: Path, schema: str, added: Mapping[str, Mapping[str, str]] | None = None,
               after: str = "") -> sqlite3.Connection:
    """Every service store opens the same way: WAL, ``synchronous=FULL`` (a committed row survives
    power loss), a busy timeout and autocommit (blocks use :func:`transaction`).

    Then its ``schema``; then the columns a later version ``added`` ({table: {column: type}}) to a
    store an earlier version created; then ``after`` (indexes over those columns, backfills). Each
    step is idempotent, so opening any store of any earlier version brings it up to date.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=5000")
    db.executescript(schema)
    for table, columns in (added or {}).items():
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for column, kind in columns.items():
            if column not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    if after:
        db.executescript(after)
    return db
