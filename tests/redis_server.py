"""A throwaway Redis server for the limit tests, which a test may also kill, restart and pause.

Configured as docs/deploy.md asks of a production one for budgets: an
append-only file fsynced at every write, no snapshots, no eviction. The
program comes from the OS packages: scripts/ensure-redis.sh installs it
(scripts/test.sh runs that).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

MISSING = (
    "redis-server is not installed: run `bash scripts/ensure-redis.sh` (as root it installs "
    "Debian's package) or install Redis; the limit tests run against it"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server on a free loopback port, its data in its own directory."""

    def __init__(self, binary: str, base: Path, port: int) -> None:
        self._binary = binary
        self.base = base
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (on the same port and data as before) and wait until it answers."""
        log = (self.base / "redis.log").open("ab")
        self._process = subprocess.Popen(
            [
                self._binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.base),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
                "--protected-mode",
                "no",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        give_up = time.monotonic() + 30.0  # a bound for a loaded machine, not a speed check
        while not self._answers():
            if self._process.poll() is not None:
                msg = f"redis-server exited with {self._process.returncode}; see {self.base}"
                raise RuntimeError(msg)
            if time.monotonic() > give_up:
                msg = f"redis-server did not answer on port {self.port}"
                raise RuntimeError(msg)
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, *, kill: bool = False) -> None:
        """Stop: SIGTERM (it finishes its writes), or with `kill` SIGKILL, as a crash."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)  # a paused server would not stop
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        process.wait(timeout=30)

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, but nothing answers (a hung server)."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGCONT)


@contextlib.contextmanager
def throwaway_redis() -> Iterator[RedisServer]:
    """A running server; fails (never skips) when redis-server is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(MISSING)
    base = Path(tempfile.mkdtemp(prefix="llmgateway-redis-"))
    server = RedisServer(binary, base, _free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)
        shutil.rmtree(base, ignore_errors=True)


class EchoingServer:
    """What `echoing_server` yields: its port, and the connections open to it now."""

    def __init__(self) -> None:
        self.port = 0
        self.handlers: set[asyncio.Task[None]] = set()

    @property
    def connections(self) -> int:
        return sum(not handler.done() for handler in self.handlers)


@contextlib.asynccontextmanager
async def echoing_server(prefix: str) -> AsyncIterator[EchoingServer]:
    """A server speaking just enough RESP to answer every command with the
    error `prefix` followed by the command's words (AUTH's password among them):
    `LOADING ...` is an outage to redis-py, `ERR ...` a plain error."""
    echoing = EchoingServer()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        echoing.handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while True:
                header = await reader.readline()
                if not header.startswith(b"*"):
                    break
                words = []
                for _ in range(int(header[1:])):
                    size = int((await reader.readline())[1:])
                    words.append((await reader.readexactly(size + 2))[:-2].decode())
                writer.write(f"-{prefix} {' '.join(words)}\r\n".encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    echoing.port = server.sockets[0].getsockname()[1]
    try:
        yield echoing
    finally:
        server.close()
        for handler in echoing.handlers:  # Python 3.11 leaves open connections to them
            handler.cancel()
        await asyncio.gather(*echoing.handlers, return_exceptions=True)
        await server.wait_closed()
