"""One small database layer over SQLite (the default) and PostgreSQL.

Both are used through their synchronous drivers on threads of the gateway's
own (`threads.py`): work is a plain function of a `Tx` run in one
transaction, so the same code serves both, and the event loop never waits on
a lock or a disk. (One exception, `try_now`: a single small SQLite write that
cannot wait on a lock may be committed on the loop; state/loop_writes.py says
when, and what that costs.)
SQLite gets one thread (one writer at a time is all it
allows anyway); PostgreSQL a few, each with its own connection. SQL is
written with `?` placeholders and translated for PostgreSQL.

On the serving path (`run`) every wait is bounded by the database timeout:
for a free thread, for a connection, for a lock, for a statement. A failure
that means "the database is unavailable" (unreachable, restarting, stopped,
locked or stalled past the timeout, disk trouble) raises
StateUnavailableError, which callers turn into UNAVAILABLE; a broken
connection is replaced on the next unit of work. Any other failure (an SQL
error, a bug) is raised as the driver raised it, to be seen.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from llmgateway.server.config import ConfigError
from llmgateway.server.state.availability import Availability
from llmgateway.server.state.loop_writes import LoopWrites
from llmgateway.server.state.threads import AbandonedError, StateUnavailableError, WorkThreads

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from llmgateway.server.state.threads import Job

__all__ = ["DEFAULT_TIMEOUT", "Database", "Row", "StateUnavailableError", "Tx", "unavailable"]

T = TypeVar("T")
Row = tuple[Any, ...]
_POSTGRES_PREFIXES = ("postgresql://", "postgres://")
_POSTGRES_THREADS = 4
DEFAULT_TIMEOUT = 5.0
# Units of work waiting for a database thread before more are refused at once.
_MAX_PENDING = 10_000
# How long start-up and the command line wait for SQLite's switch to WAL.
_WAL_PATIENCE = 30.0

# SQLite result codes that mean the database cannot do the work now, rather
# than that the SQL is wrong: busy or locked (past the busy timeout),
# interrupted (past our deadline), out of memory, disk I/O, full, cannot
# open, a damaged or foreign file, a read-only file system.
_SQLITE_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_INTERRUPT,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOTADB,
    }
)
# PostgreSQL SQLSTATE classes meaning the same: connection exception,
# transaction rollback (serialization, deadlock), insufficient resources,
# operator intervention (shutdown, statement timeout), system (I/O) error.
_POSTGRES_UNAVAILABLE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
# ... and single states: lock_not_available (lock_timeout), and
# read_only_sql_transaction (connected to a standby during a failover).
_POSTGRES_UNAVAILABLE_STATES = frozenset({"55P03", "25006"})


def unavailable(exc: BaseException, *, broken: bool = False) -> bool:
    """Whether `exc` says the database cannot do the work now (worth a retry),
    rather than that the work is wrong. `broken`: the connection it was
    raised on is lost, so whatever the error, the database went away."""
    if isinstance(exc, StateUnavailableError):
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return isinstance(code, int) and code & 0xFF in _SQLITE_UNAVAILABLE
    if not type(exc).__module__.startswith("psycopg"):
        return False
    import psycopg  # loaded already: it raised `exc`

    if not isinstance(exc, psycopg.Error):
        return False
    sqlstate = exc.sqlstate
    if sqlstate is None:
        # Raised by the driver, not the server: the connection failed, timed
        # out or was lost (OperationalError), or the driver was misused.
        return isinstance(exc, psycopg.OperationalError) or broken
    return (
        sqlstate[:2] in _POSTGRES_UNAVAILABLE_CLASSES
        or sqlstate in _POSTGRES_UNAVAILABLE_STATES
        or broken
    )


class Tx(Protocol):
    """One open transaction."""

    dialect: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a query; its rows."""

    def lock(self, name: str) -> None:
        """Serialise this transaction with others taking the same lock."""


class _SQLiteTx:
    dialect = "sqlite"

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._connection.execute(sql, tuple(params)).rowcount

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._connection.execute(sql, tuple(params)).fetchall()

    def lock(self, name: str) -> None:
        # BEGIN IMMEDIATE already holds the database's one write lock.
        del name


class _PostgresTx:
    dialect = "postgresql"

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._cursor.execute(_postgres_sql(sql), tuple(params))
        return int(self._cursor.rowcount)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self._cursor.execute(_postgres_sql(sql), tuple(params))
        return list(self._cursor.fetchall())

    def lock(self, name: str) -> None:
        self._cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))


class _Session:
    """One thread's connection. Only that thread uses it; `interrupt` may
    come from any thread, so it and `discard` share a lock."""

    def __init__(self) -> None:
        self.connection: Any = None
        # A duplicate of a PostgreSQL connection's socket descriptor: shutting
        # it down ends a statement blocked on a stopped server. Ours alone, so
        # it never names some other socket, even after the driver closed its own.
        self._watch: socket.socket | None = None
        self._lock = threading.Lock()

    def attach(self, connection: Any, watch: socket.socket | None = None) -> None:
        with self._lock:
            self.connection, self._watch = connection, watch

    def interrupt(self) -> None:
        with self._lock:
            if self._watch is not None:
                with contextlib.suppress(OSError):
                    self._watch.shutdown(socket.SHUT_RDWR)
            elif isinstance(self.connection, sqlite3.Connection):
                self.connection.interrupt()

    def broken(self) -> bool:
        """Whether the connection is gone (PostgreSQL: lost or closed)."""
        connection = self.connection
        if connection is None:
            return True
        if isinstance(connection, sqlite3.Connection):
            return False
        return bool(connection.closed or connection.broken)

    def discard(self) -> None:
        with self._lock:
            connection, watch = self.connection, self._watch
            self.connection = self._watch = None
        if watch is not None:
            watch.close()
        if connection is not None:
            with contextlib.suppress(Exception):  # it may be broken already
                connection.close()


class _StaleConnectionError(Exception):
    """A kept connection failed at BEGIN: the server went away since its last
    use (restarted, say). Nothing was done; a new connection may succeed."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _use_wal(connection: sqlite3.Connection, seconds: float) -> None:
    """Switch the database to write-ahead logging (readers and the writer stop
    blocking each other). Switching needs a moment alone with the file, and
    SQLite answers "locked" at once, not after its busy timeout, when another
    process (another worker starting) holds it: so wait and try again."""
    give_up = time.monotonic() + seconds
    while True:
        try:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > give_up:
                raise
            time.sleep(0.05)
            continue
        if mode and str(mode[0]).lower() == "wal":
            return
        if time.monotonic() > give_up:
            msg = f"the database stays in {mode[0] if mode else 'an unknown'} journal mode"
            raise StateUnavailableError(msg)
        time.sleep(0.05)


@functools.lru_cache(maxsize=16)
def _postgres_begin(seconds: float | None) -> str:
    """BEGIN, bounding statements and lock waits when `seconds` is given (per
    transaction: SET LOCAL works through connection poolers, unlike start-up
    options). One round trip."""
    if seconds is None:
        return "BEGIN"
    millis = max(1, math.ceil(seconds * 1000))
    return f"BEGIN; SET LOCAL statement_timeout = {millis}; SET LOCAL lock_timeout = {millis}"


@functools.lru_cache(maxsize=256)
def _postgres_sql(sql: str) -> str:
    return sql.replace("?", "%s")


def _reason(exc: BaseException) -> str:
    """A driver's message on one line, bounded (it goes to the log)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"


class Database:
    """Runs transactions on the database named by a path or a PostgreSQL URL.
    `timeout`: seconds a unit of work on the serving path may wait in all."""

    def __init__(self, location: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.location = location
        self.dialect = "postgresql" if location.startswith(_POSTGRES_PREFIXES) else "sqlite"
        self.timeout = timeout
        threads = _POSTGRES_THREADS if self.dialect == "postgresql" else 1
        self._threads: WorkThreads[_Session] = WorkThreads(
            threads,
            _Session,
            _Session.discard,
            timeout=timeout,
            max_pending=_MAX_PENDING,
            name="llmgateway-db",
        )
        self._availability = Availability(self.display)
        # Sessions of threads calling run_sync (the command line, start-up).
        self._local = threading.local()
        self._sessions: list[_Session] = []
        self._guard = threading.Lock()
        # try_now's SQLite connection, used on the event loop only (open_here).
        self._here: LoopWrites | None = None
        self._closed = False
        if self.dialect == "sqlite":
            try:
                Path(location).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create the directory for --db {location}: {exc}"
                ) from exc

    @property
    def display(self) -> str:
        """The location without a password."""
        if self.dialect == "sqlite":
            return self.location
        scheme, _, rest = self.location.partition("://")
        # Query parameters may carry a password (…?password=…): never shown.
        rest = rest.split("?", 1)[0]
        credentials, at, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}{'@' if at else ''}{host}"

    @property
    def unavailable(self) -> bool:
        """Whether the last unit of work on the serving path failed for want
        of the database (it has not answered since)."""
        return self._availability.unavailable

    async def run(
        self,
        work: Callable[[Tx], T],
        *,
        write: bool = True,
        within: float | None = None,
        if_late: Callable[[T], None] | None = None,
    ) -> T:
        """`work` in one transaction on a database thread: committed if it
        returns, rolled back if it raises. `write=False` for work that only
        reads: on SQLite it then takes no write lock, so reads never queue
        behind (or hold up) reservations and ledger writes. Raises
        StateUnavailableError when the database cannot answer within the
        timeout (or `within` seconds, for work known to take longer, such as
        aggregating a long ledger); `if_late` hears of a result committed after
        that all the same (only when a database thread ignored being
        interrupted)."""
        seconds = within or self.timeout
        try:
            result = await self._threads.run(
                functools.partial(self._job, work, write, seconds),
                within=seconds,
                if_late=if_late,
            )
        except StateUnavailableError as exc:
            self._availability.failed(str(exc))
            raise StateUnavailableError(f"the state database {self.display}: {exc}") from None
        self._availability.answered()
        if write and self._here is not None:
            self._here.thread_committed()
        return result

    def open_here(self) -> bool:
        """Open the connection `try_now` writes on (blocking: at start-up, after
        migrating); whether it could be (SQLite in WAL mode only)."""
        if self.dialect != "sqlite" or self._closed:
            return False
        if self._here is None:
            try:
                # Busy timeout 0: a lock held elsewhere means "not now" at once.
                connection = self._sqlite_open(busy_timeout=0, patience=_WAL_PATIENCE)
            except (sqlite3.Error, StateUnavailableError):
                return False
            self._here = LoopWrites.open(connection, _SQLiteTx)
        return self._here is not None

    @property
    def writes_here(self) -> bool:
        """Whether `try_now` may write (opened, and not given up on)."""
        return self._here is not None and self._here.usable

    def try_now(self, work: Callable[[Tx], T]) -> tuple[bool, T | None]:
        """`work` in one write transaction on the calling thread (the event
        loop), where that cannot wait on a lock (state/loop_writes.py): (True,
        its result) when it committed; (False, None) when nothing was (not
        opened with `open_here`, PostgreSQL, the lock held elsewhere, a slow
        disk, any error), for the caller to `run` it, where waits are bounded
        and errors classified. For one small row at a time."""
        if self._here is None:
            return False, None
        return self._here.try_write(work)

    def run_sync(self, work: Callable[[Tx], T], *, write: bool = True) -> T:
        """The same, blocking, on the calling thread: for the command line and
        start-up (migrations), which wait as long as the database's own
        settings let statements run; connecting is bounded all the same."""
        session: _Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = _Session()
            with self._guard:
                self._sessions.append(session)
        try:
            return self._transaction(session, work, write=write, job=None, seconds=None)
        except StateUnavailableError as exc:
            raise StateUnavailableError(f"the state database {self.display}: {exc}") from None

    def close(self, timeout: float | None = None) -> None:
        """Close every connection, waiting for running transactions for up to
        `timeout` seconds in all (by default twice the database timeout and
        2 s); a thread still busy then is left behind."""
        self._closed = True
        here, self._here = self._here, None
        if here is not None:
            here.close()
        self._threads.close(timeout=2 * self.timeout + 2.0 if timeout is None else timeout)
        with self._guard:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.discard()

    def _job(
        self,
        work: Callable[[Tx], T],
        write: bool,
        seconds: float,
        session: _Session,
        job: Job[T],
    ) -> T:
        return self._transaction(session, work, write=write, job=job, seconds=seconds)

    def _transaction(
        self,
        session: _Session,
        work: Callable[[Tx], T],
        *,
        write: bool,
        job: Job[T] | None,
        seconds: float | None,
    ) -> T:
        """`seconds`: the bound on statements and lock waits; None (with no
        job: the command line, start-up) leaves them to the database."""
        try:
            if self.dialect == "sqlite":
                return self._sqlite_transaction(session, work, write=write, job=job)
            return self._postgres_transaction(session, work, job=job, seconds=seconds)
        except (AbandonedError, StateUnavailableError):
            raise
        except Exception as exc:
            broken = session.broken()
            if broken:
                session.discard()  # the next unit of work connects afresh
            if unavailable(exc, broken=broken):
                raise StateUnavailableError(_reason(exc)) from exc
            raise

    def _sqlite_transaction(
        self, session: _Session, work: Callable[[Tx], T], *, write: bool, job: Job[T] | None
    ) -> T:
        connection: sqlite3.Connection = session.connection or self._sqlite_connect(
            session, patience=_WAL_PATIENCE if job is None else self.timeout
        )
        if job is not None:
            job.begin(session.interrupt)
        # IMMEDIATE: take the write lock at the start, so two processes
        # reserving against one budget cannot both read before either writes.
        # Reads under WAL need no lock at all. Waiting for the lock is bounded
        # by the connection's busy timeout.
        connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = work(_SQLiteTx(connection))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                try:
                    connection.execute("ROLLBACK")
                except sqlite3.Error:
                    session.discard()  # in an unknown state: start afresh
            raise
        return result

    def _sqlite_connect(self, session: _Session, *, patience: float) -> sqlite3.Connection:
        # Each connection is used by its own thread only; closing happens from
        # whichever thread shuts the database down.
        connection = self._sqlite_open(busy_timeout=self.timeout, patience=patience)
        session.attach(connection)
        return connection

    def _sqlite_open(self, *, busy_timeout: float, patience: float) -> sqlite3.Connection:
        """A connection in WAL mode with synchronous=NORMAL (every one of ours)."""
        connection = sqlite3.connect(
            Path(self.location).expanduser(),
            isolation_level=None,
            timeout=busy_timeout,
            check_same_thread=False,
        )
        try:
            _use_wal(connection, patience)
            connection.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            connection.close()
            raise
        return connection

    def _postgres_transaction(
        self,
        session: _Session,
        work: Callable[[Tx], T],
        *,
        job: Job[T] | None,
        seconds: float | None,
    ) -> T:
        for attempt in range(2):
            fresh = session.connection is None
            if fresh:
                self._postgres_connect(session)
            if job is not None:
                job.begin(session.interrupt)
            try:
                return self._postgres_attempt(session, work, seconds=seconds)
            except _StaleConnectionError as stale:
                session.discard()
                if fresh or attempt:
                    raise stale.error from None
                if job is not None:
                    job.pause()  # nothing was done: abandoning it is safe again
        raise AssertionError("unreachable")  # pragma: no cover

    def _postgres_attempt(
        self, session: _Session, work: Callable[[Tx], T], *, seconds: float | None
    ) -> T:
        import psycopg

        connection = session.connection
        with connection.cursor() as cursor:
            try:
                cursor.execute(_postgres_begin(seconds))
            except psycopg.OperationalError as exc:
                if session.broken():
                    raise _StaleConnectionError(exc) from exc
                raise
            try:
                result = work(_PostgresTx(cursor))
                cursor.execute("COMMIT")
            except BaseException:
                _postgres_rollback(session)
                raise
        return result

    def _postgres_connect(self, session: _Session) -> None:
        try:
            import psycopg  # only PostgreSQL deployments need it
            from psycopg.conninfo import conninfo_to_dict
        except ImportError as exc:  # pragma: no cover  # a dependency of the package
            raise ConfigError("a PostgreSQL --db needs the psycopg package") from exc
        try:
            given = conninfo_to_dict(self.location)
        except psycopg.ProgrammingError as exc:
            raise ConfigError(f"the database URL {self.display} is malformed: {exc}") from exc
        extra: dict[str, Any] = {}
        if "connect_timeout" not in given:
            # libpq counts whole seconds, at least 2; a caller still hears
            # within the timeout, as connecting is abandoned by then.
            extra["connect_timeout"] = max(2, math.ceil(self.timeout))
        connection = psycopg.connect(self.location, autocommit=True, **extra)
        try:
            watch = socket.socket(fileno=os.dup(connection.pgconn.socket))
        except BaseException:
            connection.close()
            raise
        session.attach(connection, watch)


def _postgres_rollback(session: _Session) -> None:
    """End a failed transaction, keeping the connection when it is sound."""
    import psycopg
    from psycopg.pq import TransactionStatus

    connection = session.connection
    if session.broken() or connection.info.transaction_status == TransactionStatus.IDLE:
        return
    try:
        connection.execute("ROLLBACK")
    except psycopg.Error:
        session.discard()
