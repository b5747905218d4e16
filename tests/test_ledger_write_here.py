"""An admission with nothing queued ahead of it is written on the event loop
(`Database.try_now`, state/loop_writes.py) when SQLite's write lock is free;
anything else (the lock held elsewhere, an error, a slow disk, PostgreSQL, a
database not opened for it) falls back to the database thread, with its
bounded waits and its errors."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from typing import TYPE_CHECKING

import pytest

from llmgateway.server.observability.observe import CallRecord
from llmgateway.server.state import loop_writes
from llmgateway.server.state.db import Database, StateUnavailableError
from llmgateway.server.state.ledger import Ledger
from llmgateway.server.state.schema import migrate
from tests.test_reaper import query

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from llmgateway.server.state.db import Tx


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    db = Database(str(tmp_path / "state.db"), timeout=0.5)
    migrate(db)
    assert db.open_here()
    try:
        yield db
    finally:
        db.close()


def reservation_keys(location: str) -> list[str]:
    return [str(key) for (key,) in query(location, "SELECT key_id FROM reservations ORDER BY id")]


def ledger_statuses(location: str) -> list[tuple[str, str]]:
    """Every row's request id and status: a row written twice shows twice."""
    rows = query(location, "SELECT request_id, status FROM usage_records ORDER BY request_id")
    return [(str(request_id), str(status)) for request_id, status in rows]


def lock_is_free(location: str) -> bool:
    """Whether another connection can take the write lock at once."""
    other = sqlite3.connect(location, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()
    return True


def reserve(tx: Tx, key_id: str) -> str:
    """A row of some table (a reservation's); the key id back."""
    tx.execute(
        "INSERT INTO reservations (key_id, created_at, tokens, cost_usd) VALUES (?, 0, 1, 0.0)",
        (key_id,),
    )
    return key_id


def test_a_write_with_the_lock_free_commits_here_and_lets_the_lock_go(sqlite_db):
    assert sqlite_db.try_now(lambda tx: reserve(tx, "k1")) == (True, "k1")
    assert reservation_keys(sqlite_db.location) == ["k1"]
    assert lock_is_free(sqlite_db.location)


def test_with_the_lock_held_elsewhere_nothing_is_written_and_nothing_waits(sqlite_db):
    holder = sqlite3.connect(sqlite_db.location, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        assert sqlite_db.try_now(lambda tx: reserve(tx, "k1")) == (False, None)
        # Not the database timeout (0.5 s): "not now" at once.
        assert time.monotonic() - started < 0.25
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert reservation_keys(sqlite_db.location) == []
    # A held lock is no reason to stop writing here.
    assert sqlite_db.try_now(lambda tx: reserve(tx, "k2"))[0]


@pytest.mark.parametrize("error", [sqlite3.OperationalError, ZeroDivisionError, OverflowError])
def test_an_error_in_the_work_rolls_back_and_leaves_it_to_the_thread(sqlite_db, error):
    def half_then_fail(tx: Tx) -> None:
        reserve(tx, "k1")
        raise error

    # Not raised here: the thread runs it again, and says what the error is.
    assert sqlite_db.try_now(half_then_fail) == (False, None)
    assert reservation_keys(sqlite_db.location) == []
    assert lock_is_free(sqlite_db.location)
    assert sqlite_db.try_now(lambda tx: reserve(tx, "k2")) == (True, "k2")


def test_nothing_is_written_here_unless_opened_for_it_at_start_up(tmp_path):
    db = Database(str(tmp_path / "state.db"))
    migrate(db)
    try:
        assert not db.writes_here
        assert db.try_now(lambda tx: reserve(tx, "k1")) == (False, None)
    finally:
        db.close()
    assert reservation_keys(db.location) == []


def test_a_closed_database_writes_nothing_here(sqlite_db):
    sqlite_db.close()
    assert not sqlite_db.writes_here
    assert sqlite_db.try_now(lambda tx: reserve(tx, "k1")) == (False, None)
    assert not sqlite_db.open_here()


def test_postgresql_is_never_written_here() -> None:
    # No server needed: neither opens a connection.
    db = Database("postgresql://user@127.0.0.1:1/none")
    ran: list[Tx] = []
    assert not db.open_here()
    assert db.try_now(ran.append) == (False, None)
    assert ran == []


def test_a_slow_write_sends_the_next_ones_to_the_thread(sqlite_db, monkeypatch, caplog):
    monkeypatch.setattr(loop_writes, "SLOW", 0.02)

    def slow(tx: Tx) -> str:
        time.sleep(0.05)
        return reserve(tx, "slow")

    with caplog.at_level(logging.WARNING, logger=loop_writes.__name__):
        assert sqlite_db.try_now(slow) == (True, "slow")
    assert "the disk is slow" in caplog.text
    assert sqlite_db.try_now(lambda tx: reserve(tx, "next")) == (False, None)
    assert reservation_keys(sqlite_db.location) == ["slow"]


async def test_writing_here_stops_while_nothing_checkpoints_and_resumes_after(
    sqlite_db, monkeypatch
):
    monkeypatch.setattr(loop_writes, "MAX_UNCHECKPOINTED", 3)
    for key in ("a", "b", "c"):
        assert sqlite_db.try_now(lambda tx, key=key: reserve(tx, key))[0]
    assert sqlite_db.try_now(lambda tx: reserve(tx, "d")) == (False, None)
    # A commit on the database thread (which checkpoints as due) lets it resume.
    await sqlite_db.run(lambda tx: reserve(tx, "thread"))
    assert sqlite_db.try_now(lambda tx: reserve(tx, "e"))[0]
    assert reservation_keys(sqlite_db.location) == ["a", "b", "c", "thread", "e"]


async def test_an_admission_is_written_here_while_the_database_thread_is_busy(sqlite_db):
    ledger = Ledger(sqlite_db, instance_id="me")
    ledger.start()
    release = threading.Event()
    busy = asyncio.ensure_future(sqlite_db.run(lambda tx: release.wait(10), write=False))
    try:
        await asyncio.sleep(0.05)  # the thread is inside the read
        async with asyncio.timeout(0.4):  # under the database timeout: no thread answered
            await ledger.call_admitted(CallRecord(request_id="r1", method="Complete"), None)
        assert ledger_statuses(sqlite_db.location) == [("r1", "IN_FLIGHT")]
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
    await asyncio.sleep(0.01)
    await ledger.call_admitted(CallRecord(request_id="r2", method="Complete"), None)
    ledger.call_finished(CallRecord(request_id="r1", method="Complete", status="UNAVAILABLE"))
    await ledger.flush()
    assert ledger_statuses(sqlite_db.location) == [("r1", "UNAVAILABLE"), ("r2", "IN_FLIGHT")]
    await ledger.close()


async def test_an_admission_behind_a_queued_one_queues_too(sqlite_db):
    ledger = Ledger(sqlite_db, instance_id="me")
    ledger.start()
    tries = 0
    try_now = sqlite_db.try_now

    def counting(work):
        nonlocal tries
        tries += 1
        return try_now(work)

    sqlite_db.try_now = counting
    release = threading.Event()
    # The thread is busy, and the lock held elsewhere: the first admission
    # cannot be written here, and its batch waits for the thread.
    busy = asyncio.ensure_future(sqlite_db.run(lambda tx: release.wait(10), write=False))
    holder = sqlite3.connect(sqlite_db.location, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        await asyncio.sleep(0.05)
        first = asyncio.ensure_future(
            ledger.call_admitted(CallRecord(request_id="first", method="Complete"), None)
        )
        await asyncio.sleep(0.05)
        assert tries == 1
        holder.execute("ROLLBACK")
        # Past the millisecond and the turn: only the batch ahead keeps it from here.
        second = asyncio.ensure_future(
            ledger.call_admitted(CallRecord(request_id="second", method="Complete"), None)
        )
        await asyncio.sleep(0.05)
        assert tries == 1
        assert not second.done()
    finally:
        holder.close()
        release.set()
        await busy
    await asyncio.gather(first, second)
    assert ledger_statuses(sqlite_db.location) == [("first", "IN_FLIGHT"), ("second", "IN_FLIGHT")]
    await ledger.close()
