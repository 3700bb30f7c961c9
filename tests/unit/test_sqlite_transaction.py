"""``refit.sqlite.transaction``: all or nothing, and never a connection left inside a transaction."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from refit.sqlite import transaction


def connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY)")
    return db


def test_the_block_commits_together(tmp_path: Path) -> None:
    db = connect(tmp_path / "db")
    with transaction(db):
        db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    assert not db.in_transaction
    assert connect(tmp_path / "db").execute("SELECT COUNT(*) FROM t").fetchone() == (100,)


def test_an_exception_rolls_everything_back(tmp_path: Path) -> None:
    db = connect(tmp_path / "db")
    with pytest.raises(sqlite3.IntegrityError), transaction(db):
        db.execute("INSERT INTO t VALUES (1)")
        db.execute("INSERT INTO t VALUES (1)")
    assert not db.in_transaction
    assert db.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)
    with transaction(db):  # the connection is usable again
        db.execute("INSERT INTO t VALUES (2)")
    assert db.execute("SELECT k FROM t").fetchall() == [(2,)]


def test_another_writer_holding_the_lock_fails_the_begin_not_half_the_block(tmp_path: Path) -> None:
    db, other = connect(tmp_path / "db"), sqlite3.connect(tmp_path / "db", isolation_level=None, timeout=0)
    db.execute("BEGIN IMMEDIATE")
    reached = False
    with pytest.raises(sqlite3.OperationalError, match="locked"), transaction(other):
        reached = True
    assert not reached and not other.in_transaction
    db.execute("ROLLBACK")
