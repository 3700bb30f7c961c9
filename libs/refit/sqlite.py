"""Transactions on the services' SQLite connections (autocommit mode: ``isolation_level=None``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


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
