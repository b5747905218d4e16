"""An admission with nothing queued ahead of it is written on the event loop
(`Database.try_now`), when SQLite's write lock is free; anything else (the
lock held elsewhere, an SQLite error, PostgreSQL) falls back to the database
thread, with its bounded waits and its errors."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from typing import TYPE_CHECKING

import pytest

from llmgateway.server.observability.observe import CallRecord
from llmgateway.server.state.db import Database, StateUnavailableError
from llmgateway.server.state.ledger import Ledger
from llmgateway.server.state.schema import migrate
from tests.test_reaper import statuses

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from llmgateway.server.state.db import Tx


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    db = Database(str(tmp_path / "state.db"), timeout=0.5)
    migrate(db)
    try:
        yield db
    finally:
        db.close()


def count(location: str, table: str) -> int:
    connection = sqlite3.connect(location)
    try:
        return int(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608  # test constant
    finally:
        connection.close()


def insert_key(tx: Tx, key_id: str) -> str:
    """A row of some table (a reservation's); the key id back."""
    tx.execute(
        "INSERT INTO reservations (key_id, created_at, tokens, cost_usd) VALUES (?, 0, 1, 0.0)",
        (key_id,),
    )
    return key_id


def test_a_write_with_the_lock_free_commits_here(sqlite_db):
    written, result = sqlite_db.try_now(lambda tx: insert_key(tx, "k1"))
    assert (written, result) == (True, "k1")
    assert count(sqlite_db.location, "reservations") == 1


def test_with_the_lock_held_elsewhere_nothing_is_written_and_nothing_waits(sqlite_db):
    holder = sqlite3.connect(sqlite_db.location, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        assert sqlite_db.try_now(lambda tx: insert_key(tx, "k1")) == (False, None)
        # Not the database timeout (0.5 s): "not now" at once.
        assert time.monotonic() - started < 0.25
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert count(sqlite_db.location, "reservations") == 0


def test_an_sqlite_error_rolls_back_and_says_not_written(sqlite_db):
    def half_then_fail(tx: Tx) -> None:
        insert_key(tx, "k1")
        tx.execute("INSERT INTO no_such_table VALUES (1)")

    assert sqlite_db.try_now(half_then_fail) == (False, None)
    assert count(sqlite_db.location, "reservations") == 0
    # The connection is usable afterwards.
    assert sqlite_db.try_now(lambda tx: insert_key(tx, "k2"))[0]


def test_another_error_rolls_back_and_is_raised(sqlite_db):
    def half_then_bug(tx: Tx) -> None:
        insert_key(tx, "k1")
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        sqlite_db.try_now(half_then_bug)
    assert count(sqlite_db.location, "reservations") == 0


def test_a_closed_database_writes_nothing_here(tmp_path):
    db = Database(str(tmp_path / "state.db"))
    migrate(db)
    db.close()
    assert db.try_now(lambda tx: insert_key(tx, "k1")) == (False, None)


def test_postgresql_is_never_written_here() -> None:
    # No server needed: try_now refuses before connecting.
    db = Database("postgresql://user@127.0.0.1:1/none")
    ran = []
    assert db.try_now(lambda tx: ran.append(tx)) == (False, None)
    assert ran == []


async def test_an_admission_is_written_here_while_the_database_thread_is_busy(sqlite_db):
    ledger = Ledger(sqlite_db, instance_id="me")
    ledger.start()
    release = threading.Event()
    busy = asyncio.ensure_future(sqlite_db.run(lambda tx: release.wait(10), write=False))
    try:
        await asyncio.sleep(0.05)  # the thread is inside the read
        async with asyncio.timeout(0.4):  # under the database timeout: no thread answered
            await ledger.call_admitted(CallRecord(request_id="r1", method="Complete"), None)
        assert statuses(sqlite_db.location) == {"r1": "IN_FLIGHT"}
    finally:
        release.set()
        await busy
        await ledger.close()


async def test_an_admission_finding_the_lock_held_is_bounded_by_the_timeout(sqlite_db):
    ledger = Ledger(sqlite_db, instance_id="me")
    ledger.start()
    holder = sqlite3.connect(sqlite_db.location, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(StateUnavailableError):
            await ledger.call_admitted(CallRecord(request_id="r1", method="Complete"), None)
        assert time.monotonic() - started >= 0.4  # it waited on the thread, bounded
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # Once the lock is free, the next admission goes in.
    await ledger.call_admitted(CallRecord(request_id="r2", method="Complete"), None)
    record = CallRecord(request_id="r1", method="Complete", status="UNAVAILABLE")
    ledger.call_finished(record)
    await ledger.flush()
    assert statuses(sqlite_db.location) == {"r1": "UNAVAILABLE", "r2": "IN_FLIGHT"}
    await ledger.close()
