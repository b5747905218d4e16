"""Ollama end to end: a real gRPC channel, the gateway, and the fake's Ollama wire."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from llmgateway.server.config import Settings
from llmgateway.server.process.server import start_gateway
from llmgateway.testing.fake_upstream import FakeUpstream
from llmgateway.testing.fake_upstream.ollama_wire import DURATIONS
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from tests.conftest import gateway_stub, rich_status, user

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


WEATHER = struct_pb2.Struct()
WEATHER.update({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
TOOLS = [common.Tool(name="get_weather", description="The weather in a city", parameters=WEATHER)]
HOSTED_KEY = "ollama-hosted-fake-key-0123456789abcdef"


async def stream(
    stub: pb_grpc.CompletionServiceAsyncStub, request: pb.StreamCompleteRequest
) -> list[pb.StreamCompleteResponse]:
    return [event async for event in stub.StreamComplete(request, timeout=10)]


def chat_bodies(fake: FakeUpstream) -> list[dict[str, object]]:
    return [r.body for r in fake.requests if r.provider == "ollama"]


async def test_unary_text(stub: pb_grpc.CompletionServiceAsyncStub, fake: FakeUpstream) -> None:
    answer = await stub.Complete(
        pb.CompleteRequest(model="ollama/llama3.2", messages=[user("Say hello.")]), timeout=10
    )
    assert answer.provider == common.PROVIDER_OLLAMA
    assert answer.model == "ollama/llama3.2"
    assert "Say hello." in answer.content
    assert answer.finish_reason == common.FINISH_REASON_STOP
    assert answer.native_finish_reason == "stop"
    assert answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    [body] = chat_bodies(fake)
    assert body["stream"] is False
    assert body["options"] == {"num_ctx": 8192}
    # A local Ollama is sent no key.
    assert "authorization" not in fake.requests[-1].headers


async def test_streamed_text_matches_the_unary_answer(
    stub: pb_grpc.CompletionServiceAsyncStub, fake: FakeUpstream
) -> None:
    messages = [user("Say hello.")]
    unary = await stub.Complete(
        pb.CompleteRequest(model="ollama/llama3.2", messages=messages), timeout=10
    )
    events = await stream(
        stub, pb.StreamCompleteRequest(model="ollama/llama3.2", messages=messages)
    )
    text = "".join(e.content_delta.text for e in events if e.HasField("content_delta"))
    assert text == unary.content
    done = events[-1].done
    assert done.finish_reason == common.FINISH_REASON_STOP
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (
        unary.usage.prompt_tokens,
        unary.usage.completion_tokens,
    )
    assert chat_bodies(fake)[-1]["stream"] is True


async def test_tools_unary_and_streamed_then_the_result_turn(
    stub: pb_grpc.CompletionServiceAsyncStub, fake: FakeUpstream
) -> None:
    messages = [user("What is the weather in Boston?")]
    unary = await stub.Complete(
        pb.CompleteRequest(model="ollama/llama3.2", messages=messages, tools=TOOLS), timeout=10
    )
    [call] = unary.tool_calls
    assert (call.name, call.arguments) == ("get_weather", '{"city":"Boston"}')
    assert call.id
    assert unary.finish_reason == common.FINISH_REASON_TOOL_CALLS
    assert unary.native_finish_reason == "stop"

    events = await stream(
        stub, pb.StreamCompleteRequest(model="ollama/llama3.2", messages=messages, tools=TOOLS)
    )
    calls = [e.tool_call for e in events if e.HasField("tool_call")]
    assert [(c.id, c.name, c.arguments) for c in calls] == [(call.id, call.name, call.arguments)]
    assert events[-1].done.finish_reason == common.FINISH_REASON_TOOL_CALLS

    # The next turn carries the call and its result; Ollama pairs them by name.
    turn = [
        *messages,
        common.ChatMessage(role=common.ROLE_ASSISTANT, tool_calls=[call]),
        common.ChatMessage(role=common.ROLE_TOOL, tool_call_id=call.id, content="72F and sunny"),
    ]
    answer = await stub.Complete(
        pb.CompleteRequest(model="ollama/llama3.2", messages=turn, tools=TOOLS), timeout=10
    )
    assert "72F and sunny" in answer.content
    assert answer.finish_reason == common.FINISH_REASON_STOP
    sent = chat_bodies(fake)[-1]["messages"]
    assert isinstance(sent, list)
    assert sent[1]["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": {"city": "Boston"}}}
    ]
    assert sent[2] == {"role": "tool", "content": "72F and sunny", "tool_name": "get_weather"}


async def test_calls_without_ids_get_made_up_ones(stub: pb_grpc.CompletionServiceAsyncStub) -> None:
    request = pb.CompleteRequest(
        model="ollama/fault-no-call-ids", messages=[user("Weather in Oslo?")], tools=TOOLS
    )
    first = await stub.Complete(request, timeout=10)
    second = await stub.Complete(request, timeout=10)
    assert first.tool_calls[0].id.startswith("call_")
    assert first.tool_calls[0].id != second.tool_calls[0].id


async def test_tool_choice_none_sends_no_tools_and_required_is_refused(
    stub: pb_grpc.CompletionServiceAsyncStub, fake: FakeUpstream
) -> None:
    none = common.ToolChoice(mode=common.TOOL_CHOICE_MODE_NONE)
    answer = await stub.Complete(
        pb.CompleteRequest(
            model="ollama/llama3.2", messages=[user("Hi")], tools=TOOLS, tool_choice=none
        ),
        timeout=10,
    )
    assert not answer.tool_calls
    assert "tools" not in chat_bodies(fake)[-1]
    required = common.ToolChoice(mode=common.TOOL_CHOICE_MODE_REQUIRED)
    before = len(fake.requests)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            pb.CompleteRequest(
                model="ollama/llama3.2", messages=[user("Hi")], tools=TOOLS, tool_choice=required
            ),
            timeout=10,
        )
    status = rich_status(caught.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.bad_request is not None
    assert [v.field for v in status.bad_request.field_violations] == ["tool_choice.mode"]
    assert len(fake.requests) == before  # refused before any upstream request


async def test_thinking_streams_as_reasoning(
    stub: pb_grpc.CompletionServiceAsyncStub, fake: FakeUpstream
) -> None:
    reasoning = common.ReasoningOptions(effort=common.REASONING_EFFORT_HIGH)
    events = await stream(
        stub,
        pb.StreamCompleteRequest(
            model="ollama/qwen3:8b", messages=[user("Hi")], reasoning=reasoning
        ),
    )
    thought = "".join(e.reasoning_delta.text for e in events if e.HasField("reasoning_delta"))
    assert thought.startswith("Let me think")
    assert chat_bodies(fake)[-1]["think"] == "high"
    unary = await stub.Complete(
        pb.CompleteRequest(
            model="ollama/qwen3:8b",
            messages=[user("Hi")],
            reasoning=common.ReasoningOptions(enabled=True, exclude=True),
        ),
        timeout=10,
    )
    # Excluded: the model thinks (think: true) but the text does not come back.
    assert chat_bodies(fake)[-1]["think"] is True
    assert unary.reasoning == ""
    assert unary.content


async def test_an_image_by_url_is_refused_before_any_request(
    stub: pb_grpc.CompletionServiceAsyncStub, fake: FakeUpstream
) -> None:
    message = common.ChatMessage(
        role=common.ROLE_USER,
        parts=[
            common.ContentPart(text="What is this?"),
            common.ContentPart(image=common.ImagePart(url="https://example.test/cat.png")),
        ],
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            pb.CompleteRequest(model="ollama/llama3.2", messages=[message]), timeout=10
        )
    status = rich_status(caught.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.bad_request is not None
    assert status.bad_request.field_violations[0].field == "messages[0].parts[1].image.url"
    assert chat_bodies(fake) == []


@pytest.mark.parametrize(
    ("model", "code", "reason", "words"),
    [
        (
            "ollama/fault-context-length",
            grpc.StatusCode.INVALID_ARGUMENT,
            "UPSTREAM_CONTEXT_LENGTH_EXCEEDED",
            "the input length exceeds the context length",
        ),
        (
            "ollama/fault-no-tools",
            grpc.StatusCode.INVALID_ARGUMENT,
            "UPSTREAM_REJECTED_REQUEST",
            "does not support tools",
        ),
        (
            "ollama/fault-model-not-found",
            grpc.StatusCode.NOT_FOUND,
            "UPSTREAM_MODEL_NOT_FOUND",
            "not found",
        ),
        (
            "ollama/fault-error-only",
            grpc.StatusCode.UNAVAILABLE,
            "UPSTREAM_UNAVAILABLE",
            "an error was encountered while running the model",
        ),
    ],
)
async def test_each_error_shape_both_rpcs(
    stub: pb_grpc.CompletionServiceAsyncStub,
    model: str,
    code: grpc.StatusCode,
    reason: str,
    words: str,
) -> None:
    for rpc in ("unary", "stream"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if rpc == "unary":
                await stub.Complete(
                    pb.CompleteRequest(model=model, messages=[user("Hi")]), timeout=10
                )
            else:
                await stream(stub, pb.StreamCompleteRequest(model=model, messages=[user("Hi")]))
        status = rich_status(caught.value)
        assert (status.code, status.info.reason) == (code, reason), rpc
        assert words in status.message, rpc
        assert status.info.metadata["provider"] == "ollama"


async def test_an_error_line_after_content_fails_the_stream_after_the_content(
    stub: pb_grpc.CompletionServiceAsyncStub,
) -> None:
    received: list[pb.StreamCompleteResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in stub.StreamComplete(
            pb.StreamCompleteRequest(model="ollama/fault-error-line", messages=[user("Hi")]),
            timeout=10,
        ):
            received.append(event)
    assert received
    assert all(e.HasField("content_delta") for e in received)
    status = rich_status(caught.value)
    assert (status.code, status.info.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
    )


async def test_a_stream_without_its_done_line_is_truncated(
    stub: pb_grpc.CompletionServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream(
            stub, pb.StreamCompleteRequest(model="ollama/fault-no-done", messages=[user("Hi")])
        )
    assert rich_status(caught.value).info.reason == "UPSTREAM_STREAM_TRUNCATED"


async def test_a_prompt_cache_hit_reports_0_prompt_tokens(
    stub: pb_grpc.CompletionServiceAsyncStub,
) -> None:
    answer = await stub.Complete(
        pb.CompleteRequest(model="ollama/fault-cache-hit", messages=[user("Hi")]), timeout=10
    )
    assert answer.usage.prompt_tokens == 0
    assert answer.usage.completion_tokens > 0


async def test_list_models_lists_the_servers_models_with_their_context(
    stub: pb_grpc.CompletionServiceAsyncStub,
) -> None:
    reply = await stub.ListModels(pb.ListModelsRequest(provider=common.PROVIDER_OLLAMA), timeout=10)
    assert list(reply.incomplete_providers) == []
    models = {m.name: m for m in reply.models}
    assert set(models) == {
        "ollama/llama3.2",
        "ollama/gemma3:1b",
        "ollama/qwen3:8b",
        "ollama/broken-show",
    }
    llama = models["ollama/llama3.2"]
    assert (llama.upstream_model, llama.display_name) == ("llama3.2", "llama3.2:latest")
    assert llama.context_length == 131072
    assert models["ollama/gemma3:1b"].context_length == 32768
    # /api/show failed for it: listed, without a context window.
    assert not models["ollama/broken-show"].HasField("context_length")
    assert all(m.available for m in models.values())
    assert llama.pricing.prompt_per_million == 0
    assert llama.pricing.completion_per_million == 0


@contextlib.asynccontextmanager
async def hosted(
    tmp_path: Path,
) -> AsyncIterator[tuple[FakeUpstream, pb_grpc.CompletionServiceAsyncStub]]:
    """A fake that wants hosted Ollama's Bearer key, and a gateway that has it."""
    async with FakeUpstream(keys={"ollama": HOSTED_KEY}) as fake:
        environment = {
            **fake.environment(),
            "OLLAMA_API_KEY": HOSTED_KEY,
            "LLMGATEWAY_DB": str(tmp_path / "state.db"),
        }
        async with gateway_stub(Settings.load(environment)) as stub:
            yield fake, stub


async def test_hosted_ollama_gets_its_key_and_streams_labelled_json(tmp_path: Path) -> None:
    async with hosted(tmp_path) as (fake, stub):
        events = await stream(
            stub,
            pb.StreamCompleteRequest(model="ollama/hosted/gpt-oss:120b", messages=[user("Hi")]),
        )
        assert events[-1].done.finish_reason == common.FINISH_REASON_STOP
        assert fake.requests[-1].headers["authorization"] == f"Bearer {HOSTED_KEY}"


@pytest.mark.parametrize("rpc", ["unary", "stream"])
@pytest.mark.parametrize("fault", ["leak-answer", "leak-midstream", "echo-auth"])
async def test_the_hosted_key_never_reaches_the_caller(
    tmp_path: Path, rpc: str, fault: str
) -> None:
    async with hosted(tmp_path) as (_, stub):
        model = f"ollama/fault-{fault}"
        seen: list[bytes] = []
        try:
            if rpc == "unary":
                answer = await stub.Complete(
                    pb.CompleteRequest(model=model, messages=[user("Hi")]), timeout=10
                )
                seen.append(answer.SerializeToString())
            else:
                async for event in stub.StreamComplete(
                    pb.StreamCompleteRequest(model=model, messages=[user("Hi")]), timeout=10
                ):
                    seen.append(event.SerializeToString())
        except grpc.aio.AioRpcError as error:
            seen.append((error.details() or "").encode())
            seen.append(str(error.trailing_metadata()).encode())
        assert seen
        assert not any(HOSTED_KEY[:12].encode() in blob for blob in seen)


async def test_a_gateway_with_no_provider_keys_serves_ollama_and_reports_it_serving(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    environment = {
        name: value for name, value in fake.environment().items() if name.endswith("_BASE_URL")
    }
    environment["LLMGATEWAY_DB"] = str(tmp_path / "state.db")
    settings = Settings.load(environment)
    assert settings.ollama.api_key is None
    running = await start_gateway(settings, address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            checker: Any = health_pb2_grpc.HealthStub(channel)  # its stubs type only the sync API
            health = await checker.Check(
                health_pb2.HealthCheckRequest(service="provider/ollama"), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stub = pb_grpc.CompletionServiceStub(channel)
            answer = await stub.Complete(
                pb.CompleteRequest(model="ollama/llama3.2", messages=[user("Hi")]), timeout=10
            )
            assert answer.provider == common.PROVIDER_OLLAMA
            events = await stream(
                stub, pb.StreamCompleteRequest(model="ollama/llama3.2", messages=[user("Hi")])
            )
            assert events[-1].HasField("done")
            # A keyed provider still names its variable.
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Complete(
                    pb.CompleteRequest(model="zai/glm-4.7", messages=[user("Hi")]), timeout=10
                )
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await running.stop(grace=0)


@pytest.mark.parametrize("rpc", ["unary", "stream"])
async def test_the_done_lines_timings_reach_the_upstream_span(settings: Settings, rpc: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    running = await start_gateway(settings, address="127.0.0.1:0", tracer_provider=provider)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.CompletionServiceStub(channel)
            for model in ("ollama/llama3.2", "ollama/fault-no-durations"):
                if rpc == "unary":
                    await stub.Complete(
                        pb.CompleteRequest(model=model, messages=[user("Hi")]), timeout=10
                    )
                else:
                    events = await stream(
                        stub, pb.StreamCompleteRequest(model=model, messages=[user("Hi")])
                    )
                    assert events[-1].HasField("done")
    finally:
        await running.stop(grace=0)
        provider.shutdown()
    timed, untimed = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert timed.attributes is not None
    assert untimed.attributes is not None
    assert {
        name: value
        for name, value in timed.attributes.items()
        if name.startswith("llmgateway.ollama.")
    } == {f"llmgateway.ollama.{name}_ns": value for name, value in DURATIONS.items()}
    assert timed.attributes["llmgateway.stream"] is (rpc == "stream")
    # A done line without timings (hosted Ollama omits some) adds none.
    assert not [name for name in untimed.attributes if name.startswith("llmgateway.ollama.")]
