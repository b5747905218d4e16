"""One small database layer over SQLite (the default) and PostgreSQL.

Both are used through their synchronous drivers on threads of the gateway's
own: work is a plain function of a `Tx` run in one transaction, so the same
code serves both, and the event loop never waits on a lock or a disk.
SQLite gets one thread (one writer at a time is all it allows anyway);
PostgreSQL a few, each with its own connection. SQL is written with `?`
placeholders and translated for PostgreSQL.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from service.config import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

T = TypeVar("T")
Row = tuple[Any, ...]
_POSTGRES_PREFIXES = ("postgresql://", "postgres://")
_POSTGRES_THREADS = 4


class StateUnavailableError(RuntimeError):
    """The database could not do the work now (locked past the timeout,
    unreachable, out of space): a condition to retry, not a bug."""


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


def _use_wal(connection: sqlite3.Connection, seconds: float = 30.0) -> None:
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
            raise sqlite3.OperationalError(msg)
        time.sleep(0.05)


@functools.lru_cache(maxsize=256)
def _postgres_sql(sql: str) -> str:
    return sql.replace("?", "%s")


class Database:
    """Runs transactions on the database named by a path or a PostgreSQL URL."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.dialect = "postgresql" if location.startswith(_POSTGRES_PREFIXES) else "sqlite"
        threads = _POSTGRES_THREADS if self.dialect == "postgresql" else 1
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="llmgateway-db")
        self._local = threading.local()
        self._connections: list[Any] = []
        self._guard = threading.Lock()
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

    async def run(self, work: Callable[[Tx], T], *, write: bool = True) -> T:
        """`work` in one transaction on a database thread: committed if it
        returns, rolled back if it raises. `write=False` for work that only
        reads: on SQLite it then takes no write lock, so reads never queue
        behind (or hold up) reservations and ledger writes."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(self.run_sync, work, write=write)
        )

    def run_sync(self, work: Callable[[Tx], T], *, write: bool = True) -> T:
        """The same, blocking: for the command line. Driver failures that say
        the database is unavailable raise StateUnavailableError."""
        try:
            if self.dialect == "sqlite":
                return self._run_sqlite(work, write=write)
            return self._run_postgres(work)
        except sqlite3.OperationalError as exc:
            raise StateUnavailableError(f"the state database {self.display}: {exc}") from exc
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg") and type(exc).__name__ in (
                "OperationalError",
                "InterfaceError",
            ):
                raise StateUnavailableError(f"the state database {self.display}: {exc}") from exc
            raise

    def close(self) -> None:
        """Close every connection (waits for running transactions)."""
        self._executor.shutdown(wait=True)
        with self._guard:
            for connection in self._connections:
                connection.close()
            self._connections.clear()

    def _run_sqlite(self, work: Callable[[Tx], T], *, write: bool) -> T:
        connection = self._sqlite_connection()
        # IMMEDIATE: take the write lock at the start, so two processes
        # reserving against one budget cannot both read before either writes.
        # Reads under WAL need no lock at all.
        connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = work(_SQLiteTx(connection))
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return result

    def _sqlite_connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            try:
                # Each connection is used by its own thread only; closing
                # happens from whichever thread shuts the database down.
                connection = sqlite3.connect(
                    Path(self.location).expanduser(),
                    isolation_level=None,
                    timeout=30.0,
                    check_same_thread=False,
                )
                _use_wal(connection)
                connection.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise ConfigError(f"cannot open the database {self.location}: {exc}") from exc
            self._local.connection = connection
            with self._guard:
                self._connections.append(connection)
        return connection

    def _run_postgres(self, work: Callable[[Tx], T]) -> T:
        connection = getattr(self._local, "connection", None)
        if connection is None or connection.closed:
            connection = self._postgres_connect()
            self._local.connection = connection
        with connection.transaction(), connection.cursor() as cursor:
            return work(_PostgresTx(cursor))

    def _postgres_connect(self) -> Any:
        try:
            import psycopg  # only PostgreSQL deployments need it
        except ImportError as exc:  # pragma: no cover  # a dependency of the package
            raise ConfigError("a PostgreSQL --db needs the psycopg package") from exc
        try:
            connection = psycopg.connect(self.location, autocommit=True)
        except psycopg.Error as exc:
            raise ConfigError(f"cannot connect to the database {self.display}: {exc}") from exc
        with self._guard:
            self._connections.append(connection)
        return connection
