"""A minimal HTTP/1.1 server on asyncio streams, with the hooks faults need.

Hand-rolled rather than a framework so a fault can misbehave at the byte
level: close before headers, cut a chunked body short, stall, or notice the
moment a client hangs up on a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    524: "A Timeout Occurred",
    529: "Site Overloaded",
}
_MAX_BODY = 64 * 1024 * 1024
# Every task the fake starts carries this name prefix, so a test counting the
# tasks a call leaves behind can tell the fake's own from the gateway's.
TASK_NAME_PREFIX = "fake-upstream"


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request as received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Response:
    """A complete response with a Content-Length."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class StreamResponse:
    """A chunked response. `abort_after` cuts the connection once the chunks run
    out (a FIN: the client sees the body end early); `reset_after` resets it (a
    TCP RST: the client's next read fails)."""

    chunks: AsyncIterator[bytes]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    abort_after: bool = False
    reset_after: bool = False
    # Raw bytes written after the chunks, outside the chunked framing (a fault).
    raw_tail: bytes = b""


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Close the connection without answering: with a TCP RST (`reset`, a reset
    before headers) or an orderly FIN (the server hung up before answering)."""

    reset: bool = True


@dataclass(frozen=True, slots=True)
class Hang:
    """Never answer; wait until the client gives up."""


Result = Response | StreamResponse | CloseConnection | Hang
Handler = Callable[[Request], Awaitable[Result]]


@dataclass(slots=True)
class ConnectionStats:
    """What the server saw of its clients, for tests to assert on."""

    open_connections: int = 0
    # Connections between reading a request and finishing its answer. An idle
    # keep-alive connection is not busy; one still busy after its call ended
    # is held open for nothing.
    busy_connections: int = 0
    connections_accepted: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    # Streams the client closed before the server finished sending them.
    streams_abandoned_by_client: int = 0
    abandoned: asyncio.Event = field(default_factory=asyncio.Event)


class HTTPServer:
    """Serves `handler` on a loopback port."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.stats = ConnectionStats()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; returns the bound port."""
        self._server = await asyncio.start_server(self._serve_connection, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        # Aborting the transports lets every connection task end on its own;
        # cancelling them instead trips an asyncio logging bug in 3.11.
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover  # start_server always runs us in a task
            return
        task.set_name(f"{TASK_NAME_PREFIX}-connection")
        self._tasks.add(task)
        self._writers.add(writer)
        self.stats.open_connections += 1
        self.stats.connections_accepted += 1
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                self.stats.busy_connections += 1
                try:
                    result = await self._handler(request)
                    if not await self._send(result, reader, writer):
                        return
                finally:
                    self.stats.busy_connections -= 1
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            self.stats.open_connections -= 1
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _send(
        self, result: Result, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Send `result`; False when the connection must close afterwards."""
        if isinstance(result, CloseConnection):
            if result.reset:
                _reset(writer)
            else:
                writer.transport.abort()
            return False
        if isinstance(result, Hang):
            await reader.read()  # returns at EOF, when the client hangs up
            return False
        if isinstance(result, Response):
            headers = {"Content-Length": str(len(result.body)), **result.headers}
            writer.write(_head(result.status, headers) + result.body)
            await writer.drain()
            return True
        return await self._send_stream(result, reader, writer)

    async def _send_stream(
        self, result: StreamResponse, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        self.stats.streams_started += 1
        writer.write(_head(result.status, {"Transfer-Encoding": "chunked", **result.headers}))
        # The client sends nothing while it reads a response, so a finished
        # read here means it hung up.
        hangup = asyncio.create_task(reader.read(1), name=f"{TASK_NAME_PREFIX}-hangup-watch")
        try:
            async for chunk in result.chunks:
                if hangup.done():
                    self._abandoned()
                    return False
                if chunk:
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                try:
                    await writer.drain()
                except ConnectionError:
                    self._abandoned()
                    return False
            if result.raw_tail:
                writer.write(result.raw_tail)
                await writer.drain()
                await hangup  # leave the connection open until the client hangs up
                return False
            if result.reset_after:
                _reset(writer)
                return False
            if result.abort_after:
                writer.transport.abort()
                return False
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            self.stats.streams_completed += 1
            return True
        finally:
            hangup.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await hangup

    def _abandoned(self) -> None:
        self.stats.streams_abandoned_by_client += 1
        self.stats.abandoned.set()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST rather than a FIN: a zero linger time makes the
    kernel drop the connection at once, as a crashed peer or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    if path.startswith(("http://", "https://")):
        # Absolute form: the client sent the request through us as a proxy.
        path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if length > _MAX_BODY:
        raise ConnectionError("request body too large")
    body = await reader.readexactly(length) if length else b""
    return Request(method=method, path=path, headers=headers, body=body)


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
