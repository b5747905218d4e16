"""OpenAI and Groq end to end: a real gRPC channel, the gateway, the fake's strict OpenAI and Groq wires."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import struct_pb2

from llmgateway.server.config import Settings
from llmgateway.testing.fake_upstream.groq_wire import FAILED_GENERATION, RATELIMIT_RESET_SECONDS
from llmgateway.testing.fake_upstream.openai_wire import OPENAI_REASONING_TOKENS, REFUSAL_TEXT
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from tests.conftest import gateway_stub, rich_status, user

if TYPE_CHECKING:
    from pathlib import Path

    from llmgateway.testing.fake_upstream import FakeUpstream
    from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

OPENAI = "openai/gpt-4o-mini"
GROQ = "groq/llama-3.3-70b-versatile"
GROQ_OSS = "groq/openai/gpt-oss-120b"
PROVIDERS = {OPENAI: common.PROVIDER_OPENAI, GROQ: common.PROVIDER_GROQ}


def weather_tool() -> common.Tool:
    parameters = struct_pb2.Struct()
    parameters.update(
        {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}
    )
    return common.Tool(name="get_weather", description="Weather for a place", parameters=parameters)


async def stream(
    stub: pb_grpc.CompletionServiceAsyncStub, **fields: Any
) -> list[pb.StreamCompleteResponse]:
    fields.setdefault("messages", [user("hi there")])
    return [
        event async for event in stub.StreamComplete(pb.StreamCompleteRequest(**fields), timeout=10)
    ]


def text(events: list[pb.StreamCompleteResponse], kind: str = "content_delta") -> str:
    return "".join(getattr(e, kind).text for e in events if e.WhichOneof("event") == kind)


def done_of(events: list[pb.StreamCompleteResponse]) -> pb.CompletionDone:
    assert [e.WhichOneof("event") for e in events].count("done") == 1
    assert events[-1].WhichOneof("event") == "done"
    return events[-1].done


def last_body(fake: FakeUpstream, provider: str) -> dict[str, Any]:
    return next(r for r in reversed(fake.requests) if r.provider == provider).body


@pytest.mark.parametrize("model", list(PROVIDERS))
async def test_unary_text(
    stub: pb_grpc.CompletionServiceAsyncStub, fake: FakeUpstream, model: str
) -> None:
    answer = await stub.Complete(
        pb.CompleteRequest(model=model, messages=[user("hi there")]), timeout=10
    )
    assert answer.content == "Hello from the fake upstream! You said: hi there"
    assert answer.provider == PROVIDERS[model]
    assert answer.model == model
    assert answer.finish_reason == common.FINISH_REASON_STOP
    assert answer.usage.prompt_tokens > 0
    assert answer.usage.completion_tokens > 0
    recorded = next(
        r for r in reversed(fake.requests) if r.body.get("model") == model.split("/", 1)[1]
    )
    assert recorded.headers["authorization"] == f"Bearer {fake.keys[recorded.provider]}"


@pytest.mark.parametrize("model", list(PROVIDERS))
async def test_streamed_text_ends_with_usage_in_done(
    stub: pb_grpc.CompletionServiceAsyncStub, model: str
) -> None:
    events = await stream(stub, model=model)
    assert text(events) == "Hello from the fake upstream! You said: hi there"
    done = done_of(events)
    assert done.model == model
    assert done.finish_reason == common.FINISH_REASON_STOP
    # Counted once: Groq repeats the same usage in x_groq, on the finish chunk and after it.
    assert done.usage.completion_tokens == len(
        ["Hello", "from", "the", "fake", "upstream!", "You", "said:", "hi", "there"]
    )
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens


@pytest.mark.parametrize("model", list(PROVIDERS))
async def test_tools_unary_and_streamed(
    stub: pb_grpc.CompletionServiceAsyncStub, model: str
) -> None:
    answer = await stub.Complete(
        pb.CompleteRequest(
            model=model, messages=[user("Weather in Boston?")], tools=[weather_tool()]
        ),
        timeout=10,
    )
    assert answer.finish_reason == common.FINISH_REASON_TOOL_CALLS
    assert [(c.name, c.arguments) for c in answer.tool_calls] == [
        ("get_weather", '{"location": "Boston"}')
    ]
    events = await stream(
        stub, model=model, messages=[user("Weather in Boston?")], tools=[weather_tool()]
    )
    calls = [e.tool_call for e in events if e.WhichOneof("event") == "tool_call"]
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        (answer.tool_calls[0].id, "get_weather", '{"location": "Boston"}')
    ]
    assert done_of(events).finish_reason == common.FINISH_REASON_TOOL_CALLS


@pytest.mark.parametrize("model", list(PROVIDERS))
async def test_a_tool_result_turn(
    stub: pb_grpc.CompletionServiceAsyncStub, fake: FakeUpstream, model: str
) -> None:
    # The fake refuses a tool message that answers no call of an earlier turn.
    messages = [
        user("Weather in Boston?"),
        common.ChatMessage(
            role=common.ROLE_ASSISTANT,
            tool_calls=[
                common.ToolCall(id="call_1", name="get_weather", arguments='{"location": "Boston"}')
            ],
            reasoning="I should look it up.",
        ),
        common.ChatMessage(role=common.ROLE_TOOL, tool_call_id="call_1", content="Sunny, 21 C"),
    ]
    answer = await stub.Complete(
        pb.CompleteRequest(model=model, messages=messages, tools=[weather_tool()]), timeout=10
    )
    assert answer.content == "The tool answered: Sunny, 21 C"
    sent = last_body(fake, (PROVIDERS[model] == common.PROVIDER_OPENAI and "openai") or "groq")
    assert sent["messages"][1]["content"] is None
    # Neither wire takes reasoning back on an assistant message.
    assert set(sent["messages"][1]) == {"role", "content", "tool_calls"}


async def test_openai_reasoning_models_get_max_completion_tokens(
    stub: pb_grpc.CompletionServiceAsyncStub, fake: FakeUpstream
) -> None:
    # The fake answers max_tokens to gpt-5 with OpenAI's 400 unsupported_parameter.
    answer = await stub.Complete(
        pb.CompleteRequest(
            model="openai/gpt-5",
            messages=[user("hi there")],
            sampling=common.SamplingParams(max_tokens=500),
            reasoning=common.ReasoningOptions(effort=common.REASONING_EFFORT_LOW),
        ),
        timeout=10,
    )
    assert answer.usage.reasoning_tokens == OPENAI_REASONING_TOKENS
    assert answer.usage.completion_tokens > answer.usage.reasoning_tokens
    body = last_body(fake, "openai")
    assert body["max_completion_tokens"] == 500
    assert body["reasoning_effort"] == "low"
    assert "max_tokens" not in body


async def test_openai_refusal_unary_and_streamed(stub: pb_grpc.CompletionServiceAsyncStub) -> None:
    answer = await stub.Complete(
        pb.CompleteRequest(model="openai/fault-refusal", messages=[user("do harm")]), timeout=10
    )
    assert answer.refusal == REFUSAL_TEXT
    assert answer.content == ""
    assert answer.finish_reason == common.FINISH_REASON_STOP
    events = await stream(stub, model="openai/fault-refusal", messages=[user("do harm")])
    assert done_of(events).refusal == REFUSAL_TEXT
    assert text(events) == ""


async def test_openai_refusal_goes_back_on_the_next_turn(
    stub: pb_grpc.CompletionServiceAsyncStub, fake: FakeUpstream
) -> None:
    messages = [
        user("do harm"),
        common.ChatMessage(role=common.ROLE_ASSISTANT, content="No.", refusal=REFUSAL_TEXT),
        user("why not?"),
    ]
    await stub.Complete(pb.CompleteRequest(model=OPENAI, messages=messages), timeout=10)
    assert last_body(fake, "openai")["messages"][1]["refusal"] == REFUSAL_TEXT


async def test_groq_reasoning_gpt_oss(
    stub: pb_grpc.CompletionServiceAsyncStub, fake: FakeUpstream
) -> None:
    high = common.ReasoningOptions(effort=common.REASONING_EFFORT_HIGH)
    answer = await stub.Complete(
        pb.CompleteRequest(model=GROQ_OSS, messages=[user("hi there")], reasoning=high), timeout=10
    )
    assert answer.reasoning == "Let me think about what the user asked, then answer."
    assert answer.usage.reasoning_tokens > 0
    assert answer.model == GROQ_OSS
    assert last_body(fake, "groq")["reasoning_effort"] == "high"
    events = await stream(stub, model=GROQ_OSS, reasoning=high)
    assert text(events, "reasoning_delta") == answer.reasoning
    assert done_of(events).usage.reasoning_tokens == answer.usage.reasoning_tokens


async def test_groq_excluded_reasoning(
    stub: pb_grpc.CompletionServiceAsyncStub, fake: FakeUpstream
) -> None:
    events = await stream(stub, model=GROQ_OSS, reasoning=common.ReasoningOptions(exclude=True))
    assert text(events, "reasoning_delta") == ""
    assert text(events)
    assert last_body(fake, "groq")["include_reasoning"] is False


@pytest.mark.parametrize("model", ["openai/gpt-5", GROQ_OSS])
async def test_a_reasoning_budget_is_invalid_argument_before_any_request(
    stub: pb_grpc.CompletionServiceAsyncStub, fake: FakeUpstream, model: str
) -> None:
    before = len(fake.requests)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            pb.CompleteRequest(
                model=model,
                messages=[user("hi")],
                reasoning=common.ReasoningOptions(max_tokens=2048),
            ),
            timeout=10,
        )
    status = rich_status(caught.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.bad_request is not None
    assert [v.field for v in status.bad_request.field_violations] == ["reasoning.max_tokens"]
    assert len(fake.requests) == before


@pytest.mark.parametrize(
    ("model", "code", "reason", "attempts", "words"),
    [
        (
            "openai/fault-insufficient-quota",
            grpc.StatusCode.FAILED_PRECONDITION,
            "UPSTREAM_INSUFFICIENT_CREDITS",
            1,
            "exceeded your current quota",
        ),
        (
            "openai/fault-context-length",
            grpc.StatusCode.INVALID_ARGUMENT,
            "UPSTREAM_CONTEXT_LENGTH_EXCEEDED",
            1,
            "maximum context length",
        ),
        (
            "groq/x/fault-tool-use-failed",
            grpc.StatusCode.UNAVAILABLE,
            "UPSTREAM_INVALID_TOOL_CALL",
            3,
            '"town": "Boston"',
        ),
        (
            "groq/x/fault-capacity-exceeded",
            grpc.StatusCode.UNAVAILABLE,
            "UPSTREAM_OVERLOADED",
            3,
            "capacity",
        ),
        (
            "groq/x/fault-tpm-413",
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "UPSTREAM_QUOTA_EXCEEDED",
            1,
            "(TPM)",
        ),
        (
            "groq/x/fault-http-404",
            grpc.StatusCode.NOT_FOUND,
            "UPSTREAM_MODEL_NOT_FOUND",
            1,
            "HTTP 404",
        ),
        (
            "openai/fault-http-401",
            grpc.StatusCode.FAILED_PRECONDITION,
            "UPSTREAM_AUTH_FAILED",
            1,
            "OPENAI_API_KEY",
        ),
    ],
)
async def test_error_shapes(
    stub: pb_grpc.CompletionServiceAsyncStub,
    fake: FakeUpstream,
    model: str,
    code: grpc.StatusCode,
    reason: str,
    attempts: int,
    words: str,
) -> None:
    before = len(fake.requests)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(pb.CompleteRequest(model=model, messages=[user("hi")]), timeout=10)
    status = rich_status(caught.value)
    assert (status.code, status.info.reason) == (code, reason)
    assert words in status.message
    assert len(fake.requests) - before == attempts


async def test_groq_tool_use_failed_mid_stream(stub: pb_grpc.CompletionServiceAsyncStub) -> None:
    events = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in stub.StreamComplete(
            pb.StreamCompleteRequest(
                model="groq/x/fault-tool-use-failed-midstream", messages=[user("hi")]
            ),
            timeout=10,
        ):
            events.append(event)
    status = rich_status(caught.value)
    assert (status.code, status.info.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "UPSTREAM_INVALID_TOOL_CALL",
    )
    assert FAILED_GENERATION[:20] in status.message
    assert text(events, "reasoning_delta") == "We need to call the tool."
    assert "done" not in [e.WhichOneof("event") for e in events]


async def test_groq_rate_limit_reset_becomes_retry_info(
    stub: pb_grpc.CompletionServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            pb.CompleteRequest(model="groq/x/fault-ratelimit-reset", messages=[user("hi")]),
            timeout=10,
        )
    status = rich_status(caught.value)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status.retry is not None
    delay = status.retry.retry_delay
    assert delay.seconds + delay.nanos / 1e9 == pytest.approx(RATELIMIT_RESET_SECONDS)


@pytest.mark.parametrize(
    ("model", "variable"), [(OPENAI, "OPENAI_API_KEY"), (GROQ, "GROQ_API_KEY")]
)
async def test_without_its_key_the_provider_names_the_variable_and_the_rest_work(
    fake: FakeUpstream, tmp_path: Path, model: str, variable: str
) -> None:
    environment = {**fake.environment(), "LLMGATEWAY_DB": str(tmp_path / "state.db")}
    del environment[variable]
    async with gateway_stub(Settings.load(environment)) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Complete(pb.CompleteRequest(model=model, messages=[user("Hi")]), timeout=10)
        status = rich_status(caught.value)
        assert (status.code, status.info.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "PROVIDER_NOT_CONFIGURED",
        )
        assert variable in status.message
        for other in {*PROVIDERS, "openrouter/openai/gpt-4o-mini"} - {model}:
            answer = await stub.Complete(
                pb.CompleteRequest(model=other, messages=[user("Hi")]), timeout=10
            )
            assert answer.content


async def test_list_models_has_both_catalogues(stub: pb_grpc.CompletionServiceAsyncStub) -> None:
    reply = await stub.ListModels(pb.ListModelsRequest(), timeout=10)
    by_name = {m.name: m for m in reply.models}
    assert "openai/text-embedding-3-small" not in by_name
    assert "groq/whisper-large-v3" not in by_name
    mini = by_name[OPENAI]
    assert (mini.provider, mini.context_length, mini.pricing.prompt_per_million) == (
        common.PROVIDER_OPENAI,
        128_000,
        0.15,
    )
    assert by_name["openai/gpt-4o-2024-08-06"].pricing.completion_per_million == 10.0
    oss = by_name[GROQ_OSS]
    assert (oss.provider, oss.upstream_model, oss.context_length) == (
        common.PROVIDER_GROQ,
        "openai/gpt-oss-120b",
        131072,
    )
    assert common.PROVIDER_GROQ not in reply.incomplete_providers
    assert common.PROVIDER_OPENAI not in reply.incomplete_providers
