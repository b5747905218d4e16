"""The Python clients end to end: typed results and errors, cancellation, the sync twin."""

from __future__ import annotations

import asyncio
import json
import threading

import grpc
import grpc_testing
import pytest

from llmgateway.client import (
    AsyncCompletionClient,
    CompletionClient,
    DeadlineExceededError,
    FailedPreconditionError,
    GatewayUnreachableError,
    InvalidRequestError,
    ModelNotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    UpstreamUnavailableError,
    acollect,
    collect,
    message,
    to_messages,
    tool,
)
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from tests.tls import make_certificates

SERVICE = pb.DESCRIPTOR.services_by_name["CompletionService"]


@pytest.fixture
async def client(gateway):
    async with AsyncCompletionClient(f"127.0.0.1:{gateway.port}", timeout=10) as opened:
        yield opened


async def test_complete_with_pairs_and_a_tool_schema(client, fake):
    weather = tool(
        "get_weather",
        {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
        "Current weather",
    )
    response = await client.complete(
        "zai/glm-4.7", [("system", "Be terse."), ("user", "Weather in Boston?")], tools=[weather]
    )
    assert [(c.name, json.loads(c.arguments)) for c in response.tool_calls] == [
        ("get_weather", {"location": "Boston"})
    ]
    sent = fake.requests[-1].body
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert sent["tools"][0]["function"]["parameters"]["required"] == ["location"]


async def test_stream_collects_text_reasoning_usage_and_cost(client):
    collected = await acollect(
        client.stream(
            "openrouter/openai/gpt-4o-mini",
            "hi there",
            reasoning=common.ReasoningOptions(enabled=True),
        )
    )
    assert collected.text == "Hello from the fake upstream! You said: hi there"
    assert collected.reasoning
    assert collected.done is not None
    assert collected.done.finish_reason == common.FINISH_REASON_STOP
    assert collected.usage is not None
    assert collected.usage.total_tokens > 0
    assert collected.cost_usd is not None
    assert collected.cost_usd > 0


@pytest.mark.parametrize(
    ("model", "error_type", "reason"),
    [
        ("openrouter/x/fault-http-429", RateLimitedError, "UPSTREAM_RATE_LIMITED"),
        ("openrouter/x/fault-http-404", ModelNotFoundError, "UPSTREAM_MODEL_NOT_FOUND"),
        ("openrouter/x/fault-http-503", UpstreamUnavailableError, "UPSTREAM_UNAVAILABLE"),
        ("openrouter/x/fault-moderation", PermissionDeniedError, "UPSTREAM_CONTENT_FLAGGED"),
        ("zai/fault-zai-1113", FailedPreconditionError, "UPSTREAM_INSUFFICIENT_CREDITS"),
        ("not-a-model", InvalidRequestError, "UNKNOWN_MODEL"),
    ],
)
async def test_typed_errors_from_each_status(client, model, error_type, reason):
    with pytest.raises(error_type) as caught:
        await client.complete(model, "hi")
    error = caught.value
    assert error.reason == reason
    assert error.domain == "llmgateway.v1"
    assert error.metadata["model"] == model or reason == "UNKNOWN_MODEL"
    assert isinstance(error.__cause__, grpc.aio.AioRpcError)


async def test_rate_limit_error_carries_retry_after(client):
    with pytest.raises(RateLimitedError) as caught:
        await client.complete("openrouter/x/fault-http-429", "hi")
    assert caught.value.retry_after == 7
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_invalid_request_names_the_fields(client):
    with pytest.raises(InvalidRequestError) as caught:
        await client.complete("zai/glm-4.7", "hi", sampling=common.SamplingParams(temperature=7))
    assert "sampling.temperature" in caught.value.field_violations


async def test_stream_errors_are_typed_too(client):
    with pytest.raises(UpstreamUnavailableError) as caught:
        await acollect(client.stream("zai/fault-truncated", "hi"))
    assert caught.value.reason == "UPSTREAM_STREAM_TRUNCATED"


async def test_timeout_raises_deadline_exceeded(client):
    with pytest.raises(DeadlineExceededError):
        await client.complete("zai/fault-hang", "hi", timeout=0.3)


async def test_breaking_out_of_a_stream_cancels_the_upstream_request(client, fake):
    received = 0
    async for event in client.stream("openrouter/openai/fault-slow", "count"):
        if event.WhichOneof("event") == "content_delta":
            received += 1
            if received == 2:
                break
    await asyncio.wait_for(fake.stats.abandoned.wait(), timeout=5)
    assert fake.stats.streams_completed == 0


async def test_leaving_async_with_cancels_even_while_the_iterator_is_held(client, fake):
    async with client.stream("openrouter/openai/fault-slow", "count") as events:
        iterator = aiter(events)  # held: no garbage collection will close it
        await anext(iterator)
    await asyncio.wait_for(fake.stats.abandoned.wait(), timeout=3)
    assert fake.stats.streams_completed == 0
    assert iterator is not None


async def test_list_models(client):
    reply = await client.list_models(common.PROVIDER_ZAI)
    assert "zai/glm-4.7" in {m.name for m in reply.models}


async def test_sync_twin(gateway, fake):
    target = f"127.0.0.1:{gateway.port}"

    held = []

    def use_sync_client():
        with CompletionClient(target, timeout=10) as sync:
            response = sync.complete("zai/glm-4.7", "hello")
            collected = collect(sync.stream("openrouter/openai/gpt-4o-mini", "hello"))
            try:
                sync.complete("openrouter/x/fault-http-429", "hi")
            except RateLimitedError as error:
                retry_after = error.retry_after
            # Leaving the `with` cancels the call, though the iterator is still held.
            with sync.stream("openrouter/openai/fault-slow", "count") as events:
                iterator = iter(events)
                next(iterator)
            held.append(iterator)
            return response, collected, retry_after

    response, collected, retry_after = await asyncio.to_thread(use_sync_client)
    assert response.content.endswith("You said: hello")
    assert collected.text.endswith("You said: hello")
    assert collected.done is not None
    assert retry_after == 7
    await asyncio.wait_for(fake.stats.abandoned.wait(), timeout=3)
    assert fake.stats.streams_completed == 1  # only the collected stream
    assert held  # the iterator was alive while the upstream saw the hang-up


def test_message_helpers():
    assert to_messages("hi") == [message("user", "hi")]
    assert to_messages(("system", "s")) == [message("system", "s")]
    assert [m.role for m in to_messages([("user", "a"), message("assistant", "b")])] == [
        common.ROLE_USER,
        common.ROLE_ASSISTANT,
    ]
    with pytest.raises(ValueError, match="unknown role"):
        message("robot", "x")
    with pytest.raises(TypeError):
        to_messages([42])  # type: ignore[list-item]


def test_tool_schema_keeps_whole_numbers_whole():
    made = tool("f", {"type": "object", "maxProperties": 2})
    assert made.parameters["maxProperties"] == 2


async def test_the_client_does_not_multiply_the_gateways_retries(gateway, fake):
    # The gateway retries transient upstream failures itself and says so with a
    # negative retry pushback, so a client with a retry policy adds no attempts.
    async with AsyncCompletionClient(f"127.0.0.1:{gateway.port}", max_attempts=3) as retrying:
        with pytest.raises(UpstreamUnavailableError) as caught:
            await retrying.complete("zai/fault-zai-1305", "hi")
        assert caught.value.metadata["attempts"] == "3"
        assert len(fake.requests) == 3  # the gateway's three, not nine
        with pytest.raises(UpstreamUnavailableError):
            await acollect(retrying.stream("openrouter/x/fault-http-503", "hi"))
        assert len(fake.requests) == 4  # a stream: the gateway's one try (Retry-After too long)


async def test_api_key_travels_as_bearer_metadata():
    channel = grpc_testing.channel([SERVICE], grpc_testing.strict_real_time())
    sync = CompletionClient(channel=channel, api_key="gw-key-for-tests", timeout=10)
    reply: dict[str, pb.CompleteResponse] = {}
    thread = threading.Thread(target=lambda: reply.update(r=sync.complete("zai/glm-4.7", "hi")))
    thread.start()
    metadata, _, rpc = channel.take_unary_unary(SERVICE.methods_by_name["Complete"])
    rpc.terminate(pb.CompleteResponse(content="ok"), (), grpc.StatusCode.OK, "")
    thread.join(timeout=10)
    assert ("authorization", "Bearer gw-key-for-tests") in tuple(metadata)
    assert reply["r"].content == "ok"


class _ModelsOnly(pb_grpc.CompletionServiceServicer):
    """Just enough of the service to prove a TLS connection."""

    async def ListModels(self, request, context):  # noqa: N802  # generated method name
        return pb.ListModelsResponse(models=[pb.ModelInfo(name="zai/glm-4.7")])

    async def Complete(self, request, context):  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")

    async def StreamComplete(self, request, context):  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")
        yield pb.StreamCompleteResponse()  # unreachable; makes this an async generator

    async def GetUsage(self, request, context):  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")

    async def ExplainRoute(self, request, context):  # noqa: N802
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")


async def test_tls_with_a_ca_file_and_refusal_without_it(tmp_path):
    certs = make_certificates()
    server = grpc.aio.server()
    pb_grpc.add_CompletionServiceServicer_to_server(_ModelsOnly(), server)
    credentials = grpc.ssl_server_credentials([(certs.server_key, certs.server_cert)])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(certs.ca_cert)
    try:
        async with AsyncCompletionClient(f"localhost:{port}", ca_file=ca_file) as trusted:
            reply = await trusted.list_models(timeout=10)
        assert [m.name for m in reply.models] == ["zai/glm-4.7"]
        # The system roots do not know the throwaway CA: the handshake fails.
        async with AsyncCompletionClient(f"localhost:{port}", tls=True, max_attempts=1) as other:
            with pytest.raises(GatewayUnreachableError) as refused:
                await other.list_models(timeout=5)
        # A TLS handshake that failed on the certificate, not a plaintext mismatch.
        assert (
            "ssl" in refused.value.message.lower() or "handshake" in refused.value.message.lower()
        )
    finally:
        await server.stop(0)


def test_channel_options_never_ping_faster_than_the_gateway_accepts():
    from llmgateway.client.channel import channel_options

    options = dict(channel_options(keepalive_seconds=1, max_attempts=1))
    assert options["grpc.keepalive_time_ms"] == 10_000
    assert options["grpc.enable_retries"] == 0
    retrying = dict(channel_options(keepalive_seconds=None, max_attempts=3))
    config = json.loads(str(retrying["grpc.service_config"]))
    policy = config["methodConfig"][0]
    # ExplainRoute is a dry run (nothing sent upstream, nothing recorded): safe to repeat.
    assert {n["method"] for n in policy["name"]} == {"Complete", "ListModels", "ExplainRoute"}
    assert policy["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert "grpc.keepalive_time_ms" not in retrying


def test_an_error_names_its_reason_once():
    from llmgateway.client.errors import GatewayError as ClientError

    same = ClientError(grpc.StatusCode.UNAUTHENTICATED, "send a key", reason="UNAUTHENTICATED")
    other = ClientError(grpc.StatusCode.UNAVAILABLE, "down", reason="UPSTREAM_UNAVAILABLE")
    assert str(same) == "UNAUTHENTICATED: send a key"
    assert str(other) == "UNAVAILABLE (UPSTREAM_UNAVAILABLE): down"
