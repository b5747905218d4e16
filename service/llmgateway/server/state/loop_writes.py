"""Small SQLite writes committed on the event loop, where that cannot wait on a lock.

A call's in-flight ledger row (state/ledger.py) must be committed before the
call goes upstream. On the database thread that costs a hop there and back,
which measured more than the write itself (about 1.3 ms of CPU per call at
concurrency 1 on a slow machine, docs/performance.md). So when nothing is
queued, the row is committed here instead, on a connection of its own:

- Its busy timeout is zero: a write lock held by any other connection
  (another worker, this process's database thread) means "not now" at once,
  and the row goes to the thread, whose waits are bounded by the timeout.
- It never checkpoints (`wal_autocheckpoint=0`); the thread's connections do,
  at their commits. With synchronous=NORMAL a commit writes the log to the
  page cache and does not sync it; only the first write after a checkpoint
  restarts the log and syncs its header (0.5-6 ms here, a few times a second
  under load).
- A write that takes longer than SLOW (a disk in trouble) turns writing here
  off for PAUSE, with one warning: the thread, where a stall is bounded by
  the timeout, takes every write meanwhile. The write that found the disk
  slow has blocked the loop for as long as it took; a file system frozen
  outright blocks it until it thaws (as it would the log's own writes).
- After MAX_UNCHECKPOINTED writes here with no commit on the thread (so no
  checkpoint: the thread stuck or failing), writing here stops until the
  thread commits again, so the log cannot grow without bound.
- The connection is opened at start-up (`Database.open_here`), never on the loop; an error
  other than a held lock closes it for good (the thread carries on).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmgateway.server.state.db import Tx

logger = logging.getLogger(__name__)

T = TypeVar("T")
# A write here slower than this means trouble with the disk...
SLOW = 0.05
# ... and writing here stops for this long.
PAUSE = 60.0
# Writes here while the thread commits nothing (so nothing checkpoints).
MAX_UNCHECKPOINTED = 20_000
_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class LoopWrites:
    """try_write's connection and the rules for using it (see the module)."""

    def __init__(
        self, connection: sqlite3.Connection, make_tx: Callable[[sqlite3.Connection], Tx]
    ) -> None:
        self._connection: sqlite3.Connection | None = connection
        self._make_tx = make_tx
        self._paused_until = 0.0
        self._uncheckpointed = 0

    @classmethod
    def open(
        cls, connection: sqlite3.Connection, make_tx: Callable[[sqlite3.Connection], Tx]
    ) -> LoopWrites | None:
        """Take `connection` (in WAL mode, busy timeout 0; opened at start-up)
        for writes here, after turning its checkpoints off; None (and the
        connection closed) when that fails."""
        try:
            connection.execute("PRAGMA wal_autocheckpoint=0")
        except sqlite3.Error:
            connection.close()
            return None
        return cls(connection, make_tx)

    def try_write(self, work: Callable[[Tx], T]) -> tuple[bool, T | None]:
        """`work` in one write transaction here: (True, its result) when it
        committed, (False, None) when nothing was committed (not now, or an
        error: the thread is to do it, and classify any error)."""
        connection = self._connection
        if (
            connection is None
            or self._uncheckpointed >= MAX_UNCHECKPOINTED
            or (self._paused_until and time.monotonic() < self._paused_until)
        ):
            return False, None
        started = time.monotonic()
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if exc.sqlite_errorcode not in _BUSY:
                self.close()
            return False, None
        try:
            result = work(self._make_tx(connection))
            connection.execute("COMMIT")
        except BaseException as exc:
            # An error in COMMIT leaves the transaction open (busy) or rolled
            # back by SQLite (I/O, full); either way nothing is committed.
            if connection.in_transaction:
                try:
                    connection.execute("ROLLBACK")
                except sqlite3.Error:
                    self.close()
            if isinstance(exc, Exception):
                return False, None
            raise
        finally:
            self._check_pace(time.monotonic() - started)
        self._uncheckpointed += 1
        return True, result

    @property
    def usable(self) -> bool:
        """Whether a write may be tried (the connection is open)."""
        return self._connection is not None

    def thread_committed(self) -> None:
        """The database thread committed a write (and so checkpoints as due)."""
        self._uncheckpointed = 0

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(sqlite3.Error):
                connection.close()

    def _check_pace(self, took: float) -> None:
        if took <= SLOW:
            return
        self._paused_until = time.monotonic() + PAUSE
        logger.warning(
            "a ledger write on the event loop took %.0f ms (the disk is slow); for the next "
            "%.0f s every ledger write goes through the database thread",
            took * 1000,
            PAUSE,
        )
