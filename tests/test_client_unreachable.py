"""A gateway that cannot be reached is not an upstream outage: GatewayUnreachableError
for the channel's UNAVAILABLE, UpstreamUnavailableError for the gateway's own, and
UnavailableError catches both."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest

from bench.processes import free_port
from llmgateway.client import (
    AsyncCompletionClient,
    CompletionClient,
    GatewayError,
    GatewayUnreachableError,
    UnavailableError,
    UpstreamUnavailableError,
    acollect,
    collect,
)

if TYPE_CHECKING:
    from llmgateway.server.process.server import Gateway

# The fake upstream answers this model with HTTP 503 (see llmgateway.testing.fake_upstream).
FAILING_UPSTREAM = "openrouter/x/fault-http-503"


def assert_unreachable(error: GatewayError, target: str) -> None:
    assert isinstance(error, GatewayUnreachableError)
    assert isinstance(error, UnavailableError)
    # An outage of the gateway is not an outage of its provider.
    assert not isinstance(error, UpstreamUnavailableError)
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.target == target
    assert error.reason == ""  # no ErrorInfo: nothing but the local channel spoke
    assert error.message.startswith(f"cannot reach the gateway at {target}: ")
    # What gRPC said follows, so the cause (here a refused connection) is visible.
    assert "connect" in error.message.lower()
    assert str(error) == f"UNAVAILABLE: {error.message}"
    assert isinstance(error.__cause__, grpc.RpcError)


async def test_async_unary_and_stream_to_a_port_nothing_listens_on() -> None:
    target = f"127.0.0.1:{free_port()}"
    async with AsyncCompletionClient(target, timeout=10) as client:
        with pytest.raises(GatewayError) as unary:
            await client.complete("zai/glm-4.7", "hi")
        assert_unreachable(unary.value, target)
        with pytest.raises(GatewayError) as listing:
            await client.list_models()
        assert_unreachable(listing.value, target)
        with pytest.raises(GatewayError) as stream:
            await acollect(client.stream("zai/glm-4.7", "hi"))
        assert_unreachable(stream.value, target)


def test_sync_unary_and_stream_to_a_port_nothing_listens_on() -> None:
    target = f"127.0.0.1:{free_port()}"
    with CompletionClient(target, timeout=10) as client:
        with pytest.raises(GatewayError) as unary:
            client.complete("zai/glm-4.7", "hi")
        assert_unreachable(unary.value, target)
        with pytest.raises(GatewayError) as usage:
            client.get_usage()
        assert_unreachable(usage.value, target)
        with pytest.raises(GatewayError) as stream:
            collect(client.stream("zai/glm-4.7", "hi"))
        assert_unreachable(stream.value, target)


def test_a_name_that_does_not_resolve() -> None:
    # `.invalid` never resolves (RFC 6761), with or without a network.
    target = "no-such-gateway.invalid:50051"
    with (
        CompletionClient(target, timeout=10, max_attempts=1) as client,
        pytest.raises(GatewayUnreachableError) as caught,
    ):
        client.list_models()
    assert caught.value.message.startswith(f"cannot reach the gateway at {target}: ")
    assert "no-such-gateway.invalid" in caught.value.message


async def test_one_except_clause_catches_both_kinds_of_unavailable(gateway: Gateway) -> None:
    dead = f"127.0.0.1:{free_port()}"
    caught: list[UnavailableError] = []
    for target in (f"127.0.0.1:{gateway.port}", dead):
        async with AsyncCompletionClient(target, timeout=10, max_attempts=1) as client:
            try:
                await client.complete(FAILING_UPSTREAM, "hi")
            except UnavailableError as error:
                caught.append(error)
    assert [type(error) for error in caught] == [UpstreamUnavailableError, GatewayUnreachableError]


async def test_the_gateway_saying_its_upstream_is_down_stays_an_upstream_outage(
    gateway: Gateway,
) -> None:
    target = f"127.0.0.1:{gateway.port}"
    async with AsyncCompletionClient(target, timeout=10) as client:
        with pytest.raises(UpstreamUnavailableError) as unary:
            await client.complete(FAILING_UPSTREAM, "hi")
        with pytest.raises(UpstreamUnavailableError) as stream:
            await acollect(client.stream(FAILING_UPSTREAM, "hi"))
    for error in (unary.value, stream.value):
        assert not isinstance(error, GatewayUnreachableError)
        assert error.reason == "UPSTREAM_UNAVAILABLE"
        assert error.domain == "llmgateway.v1"
        assert str(error).startswith("UNAVAILABLE (UPSTREAM_UNAVAILABLE): ")


async def test_the_sync_client_tells_an_upstream_outage_apart_too(gateway: Gateway) -> None:
    # The gateway runs on this test's event loop, so the blocking client runs in a thread.
    def call() -> GatewayError:
        with CompletionClient(f"127.0.0.1:{gateway.port}", timeout=10) as client:
            with pytest.raises(UpstreamUnavailableError):
                client.complete(FAILING_UPSTREAM, "hi")
            with pytest.raises(GatewayError) as caught:
                collect(client.stream(FAILING_UPSTREAM, "hi"))
            return caught.value

    error = await asyncio.to_thread(call)
    assert isinstance(error, UpstreamUnavailableError)
    assert error.reason == "UPSTREAM_UNAVAILABLE"
