"""A call cut off by its caller's deadline is recorded as DEADLINE_EXCEEDED,
even when the caller's cancellation arrives before the gateway's own copy of
the deadline has run out; a call its caller cancelled stays CANCELLED."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import TYPE_CHECKING

import grpc
import pytest

from llmgateway.server.call_path.calls import deadline_passed
from llmgateway.server.process.server import start_gateway
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from tests.conftest import user
from tests.test_ledger import ledger_rows
from tests.test_reaper import until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from llmgateway.server.config import Settings

# How much later than the caller's the gateway's copy of the deadline ends:
# the request's headers are held up this long on their way (a busy
# connection, a proxy), the cancellation is not.
HEADER_DELAY = 0.15
DEADLINE = 3.0


class HeaderDelayingProxy:
    """A TCP proxy that holds back what the client sends during a short window
    (a new call's headers and message), and nothing else."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._hold_until = 0.0
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._server.wait_closed()

    def hold_next_call(self) -> None:
        """Delay what the client sends in the next 100 ms by HEADER_DELAY."""
        self._hold_until = asyncio.get_running_loop().time() + 0.1

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self._target_port
        )
        for pump in (
            self._pump(reader, upstream_writer, delayed=True),
            self._pump(upstream_reader, writer, delayed=False),
        ):
            task = asyncio.get_running_loop().create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while chunk := await reader.read(65536):
                arrived = loop.time()
                if delayed and arrived < self._hold_until:
                    await asyncio.sleep(HEADER_DELAY)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def skewed_gateway(
    settings: Settings,
) -> AsyncIterator[tuple[pb_grpc.CompletionServiceAsyncStub, HeaderDelayingProxy]]:
    running = await start_gateway(settings, address="127.0.0.1:0")
    proxy = HeaderDelayingProxy(running.port)
    await proxy.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
            await channel.channel_ready()
            yield pb_grpc.CompletionServiceStub(channel), proxy
    finally:
        await proxy.close()
        await running.stop(grace=0)


@pytest.fixture
def keyed(settings: Settings, db_location: str) -> Settings:
    return dataclasses.replace(settings, db=db_location)


async def test_calls_past_their_deadline_are_recorded_as_deadline_exceeded(keyed, fake):
    async with skewed_gateway(keyed) as (stub, proxy):
        proxy.hold_next_call()
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            # The upstream never answers.
            await stub.Complete(
                pb.CompleteRequest(model="openrouter/x/fault-hang", messages=[user("hi")]),
                timeout=DEADLINE,
            )
        await asyncio.sleep(0.3)  # the proxy's window has passed
        proxy.hold_next_call()
        # The upstream streams for about 4 s: the deadline falls mid-stream.
        stream = stub.StreamComplete(
            pb.StreamCompleteRequest(model="zai/fault-slow", messages=[user("hi")]),
            timeout=DEADLINE,
        )
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            async for _ in stream:
                pass
        # A stream its caller gives up on, long before its deadline.
        left = stub.StreamComplete(
            pb.StreamCompleteRequest(model="openrouter/x/fault-slow", messages=[user("hi")]),
            timeout=30,
        )
        await left.read()
        left.cancel()
        await until(lambda: len(ledger_rows(keyed.db)) == 3, "three rows")
        await until(
            lambda: "IN_FLIGHT" not in {r["status"] for r in ledger_rows(keyed.db)},
            "three completed rows",
        )
    assert unary.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert streamed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    rows = ledger_rows(keyed.db)
    assert [(r["method"], r["status"]) for r in rows] == [
        ("Complete", "DEADLINE_EXCEEDED"),
        ("StreamComplete", "DEADLINE_EXCEEDED"),
        ("StreamComplete", "CANCELLED"),
    ]
    assert rows[1]["ttft_ms"] is not None  # the deadline came mid-stream


def test_a_cancellation_near_the_deadline_is_the_deadline():
    # No deadline: the caller cancelled.
    assert not deadline_passed(None, 5.0)
    # Past it, or just before it (the caller's copy runs a little ahead of ours).
    assert deadline_passed(0.0, 2.0)
    assert deadline_passed(0.15, 1.85)
    assert deadline_passed(0.015, 0.085)
    # Well before it: the caller's choice.
    assert not deadline_passed(0.5, 1.5)
    assert not deadline_passed(9.0, 1.0)
    # However long the deadline, a second before it is not "at" it.
    assert deadline_passed(0.9, 99.1)
    assert not deadline_passed(1.5, 98.5)
