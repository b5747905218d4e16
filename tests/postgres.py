"""A throwaway PostgreSQL server for the state tests, when the machine has one.

`.ci/run` installs PostgreSQL from the OS packages when it is missing; on a
machine without it, the PostgreSQL variants of the state tests are skipped
(the SQLite ones still run).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """A throwaway server that a test may also restart, stop and pause."""

    def __init__(self, pg_ctl: str, as_user: list[str], base: Path, port: int) -> None:
        self._pg_ctl = pg_ctl
        self._as_user = as_user
        self.data = base / "data"
        self._options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._log = base / "log"
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run(
            [*self._as_user, self._pg_ctl, "-D", str(self.data), *args],
            check=check,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        self._ctl("-o", self._options, "-l", str(self._log), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop (`fast`: sessions are told the administrator ends them)."""
        self._ctl("-m", mode, "-w", "stop", check=mode != "immediate")

    def processes(self) -> list[int]:
        """The postmaster and every process it started (backends too)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                # The parent's pid is the second field after the command's ")".
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(stat.parent.name))
        return [postmaster, *children]

    def pause(self) -> None:
        """SIGSTOP every process of the server: it accepts TCP connections
        (the kernel does) but never answers, as a hung server."""
        for pid in self.processes():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self.processes():
            os.kill(pid, signal.SIGCONT)


def _programs() -> tuple[str, str]:
    """initdb and pg_ctl; FileNotFoundError when PostgreSQL is not installed."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise FileNotFoundError("PostgreSQL's initdb and pg_ctl are not installed")
    return initdb, pg_ctl


def installed() -> bool:
    """Whether PostgreSQL's server programs are on this machine."""
    return _binary("initdb") is not None and _binary("pg_ctl") is not None


def _as_postgres_user() -> list[str]:
    # PostgreSQL refuses to run as root; as root, run it as the postgres user.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def init_server(base: Path, port: int) -> PostgresServer:
    """A new server, not started, in the empty directory `base` (data in base/data,
    its log in base/log, its socket in base) for loopback port `port`.
    FileNotFoundError when PostgreSQL is not installed."""
    initdb, pg_ctl = _programs()
    as_user = _as_postgres_user()
    base.chmod(0o755)
    if as_user:
        shutil.chown(base, "postgres")
    subprocess.run(
        [*as_user, initdb, "-D", str(base / "data"), "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return PostgresServer(pg_ctl, as_user, base, port)


def server_at(base: Path, port: int) -> PostgresServer:
    """The server `init_server` made in `base`, started or not (to stop it from
    another process)."""
    return PostgresServer(_programs()[1], _as_postgres_user(), base, port)


@contextlib.contextmanager
def throwaway_server() -> Iterator[PostgresServer | None]:
    """A running server (database `postgres`, user `postgres`, no password,
    loopback only), or None when PostgreSQL is not installed."""
    if not installed():
        yield None
        return
    base = Path(tempfile.mkdtemp(prefix="llmgateway-pg-"))
    server = init_server(base, _free_port())
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(OSError, ValueError):
            server.resume()  # a paused server would not stop
        server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str | None]:
    """A running server's URL (see throwaway_server), or None when
    PostgreSQL is not installed."""
    with throwaway_server() as server:
        yield None if server is None else server.url


def fresh_database(server_url: str, name: str) -> str:
    """Create an empty database on the server; its URL."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name
