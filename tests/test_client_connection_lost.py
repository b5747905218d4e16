"""A connection that breaks after the gateway answered is not an unreachable gateway.

gRPC core ends such calls with its own UNAVAILABLE and no ErrorInfo (here
"Cancelling all calls": the gateway stopped and its drain grace ran out), the
same status a refused connection gets. The call had reached the gateway, and
here its provider too, so the client says ConnectionLostError, not
GatewayUnreachableError and its "cannot reach" (which invites a blind retry).
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import grpc
import pytest

from llmgateway.client import (
    AsyncCompletionClient,
    CompletionClient,
    ConnectionLostError,
    GatewayError,
    GatewayUnreachableError,
    UnavailableError,
    acollect,
)
from llmgateway.server.process.server import start_gateway

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from llmgateway.server.config import Settings
    from llmgateway.server.process.server import Gateway
    from llmgateway.testing.fake_upstream import FakeUpstream

# The fake upstream never answers this one, so the gateway's call stays in flight.
HANGING = "zai/fault-hang"
# The fake streams a few chunks of this one, then goes quiet without closing.
STALLING = "openrouter/openai/fault-stall"
# Short enough to cut the calls above off, which is the case under test.
GRACE = 0.1


class Stoppable:
    """A gateway of the test's own, stopped once: by the test, or at the end."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.target = f"127.0.0.1:{gateway.port}"
        self._stopped = False

    async def stop(self, grace: float) -> None:
        if not self._stopped:
            self._stopped = True
            await self.gateway.stop(grace=grace)


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[Stoppable]:
    stoppable = Stoppable(await start_gateway(settings, address="127.0.0.1:0"))
    try:
        yield stoppable
    finally:
        await stoppable.stop(0)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (not time) for something another task or thread does."""
    async with asyncio.timeout(30):
        # The fake upstream and the client threads offer no asyncio.Event to await.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def assert_connection_lost(error: GatewayError, target: str) -> None:
    assert isinstance(error, ConnectionLostError)
    assert isinstance(error, UnavailableError)  # one except clause still catches every case
    assert not isinstance(error, GatewayUnreachableError)
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.target == target
    assert error.reason == ""  # the channel spoke, not the gateway
    cause = error.__cause__
    assert isinstance(cause, grpc.RpcError)
    grpc_details = cause.details()
    assert grpc_details  # what gRPC said is kept, here its drain message
    assert error.message == (
        f"the connection to the gateway at {target} broke during the call: {grpc_details}"
    )
    assert str(error) == f"UNAVAILABLE: {error.message}"


async def test_async_unary_cut_off_by_a_drain(running: Stoppable, fake: FakeUpstream) -> None:
    async with AsyncCompletionClient(running.target, timeout=30, max_attempts=1) as client:
        call = asyncio.create_task(client.complete(HANGING, "hi"))
        await until(lambda: bool(fake.requests))  # the provider has the request
        await running.stop(GRACE)
        with pytest.raises(GatewayError) as caught:
            await call
    assert_connection_lost(caught.value, running.target)


async def test_async_stream_cut_off_after_its_first_event(
    running: Stoppable, fake: FakeUpstream
) -> None:
    async with (
        AsyncCompletionClient(running.target, timeout=30, max_attempts=1) as client,
        client.stream(STALLING, "hi") as events,
    ):
        iterator = aiter(events)
        first = await anext(iterator)
        assert first.WhichOneof("event") is not None
        await running.stop(GRACE)
        with pytest.raises(GatewayError) as caught:
            await acollect(iterator)
    assert_connection_lost(caught.value, running.target)
    assert len(fake.requests) == 1


async def test_sync_unary_and_stream_cut_off_by_a_drain(
    running: Stoppable, fake: FakeUpstream
) -> None:
    # The gateway runs on this test's event loop, so the blocking client runs in threads.
    first_event = threading.Event()

    def unary() -> GatewayError:
        with CompletionClient(running.target, timeout=30, max_attempts=1) as client:
            with pytest.raises(GatewayError) as caught:
                client.complete(HANGING, "hi")
            return caught.value

    def stream() -> GatewayError:
        with (
            CompletionClient(running.target, timeout=30, max_attempts=1) as client,
            client.stream(STALLING, "hi") as events,
            pytest.raises(GatewayError) as caught,
        ):
            for _ in events:
                first_event.set()
        return caught.value

    unary_call = asyncio.create_task(asyncio.to_thread(unary))
    stream_call = asyncio.create_task(asyncio.to_thread(stream))
    await until(lambda: len(fake.requests) == 2 and first_event.is_set())
    await running.stop(GRACE)
    for error in (await unary_call, await stream_call):
        assert_connection_lost(error, running.target)


async def test_a_stopped_gateway_is_unreachable_not_lost(running: Stoppable) -> None:
    # The other side of the rule: nothing came back, so the gateway was not reached.
    await running.stop(0)
    async with AsyncCompletionClient(running.target, timeout=30, max_attempts=1) as client:
        with pytest.raises(GatewayUnreachableError) as unary:
            await client.complete(HANGING, "hi")
        with pytest.raises(GatewayUnreachableError) as stream:
            await acollect(client.stream(STALLING, "hi"))
    for error in (unary.value, stream.value):
        assert error.message.startswith(f"cannot reach the gateway at {running.target}: ")
