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


def delete_beyond(db: sqlite3.Connection, table: str, model: str, keep: int, order: str = "rowid",
                  where: str = "", args: tuple[object, ...] = ()) -> int:
    """Delete ``model``'s rows of ``table`` older than its newest ``keep`` by ``order``, of those ``where``
    selects (a row it leaves out stays at any age: a pending version, a decision a rollback may follow).

    Retention's one query; returns the number of rows deleted. The caller holds the store's lock and
    its transaction.
    """
    extra = f" AND {where}" if where else ""
    row = db.execute(f"SELECT {order} FROM {table} WHERE model = ? ORDER BY {order} DESC LIMIT 1 OFFSET ?",
                     (model, keep)).fetchone()
    if row is None:
        return 0
    before = db.total_changes
    db.execute(f"DELETE FROM {table} WHERE model = ? AND {order} <= ?{extra}", (model, row[0], *args))
    return db.total_changes - before
