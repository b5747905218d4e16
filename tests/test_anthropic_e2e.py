"""anthropic/<model> end to end: a real gRPC channel, the gateway, and the fake's strict
Anthropic wire (which refuses what the real API refuses, thinking signatures included)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

import grpc
import orjson
import pytest
from google.protobuf import struct_pb2

from llmgateway.testing.fake_upstream.anthropic_wire import INVALID_SIGNATURE
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from tests.conftest import gateway_stub, rich_status, user

if TYPE_CHECKING:
    from llmgateway.server.config import Settings
    from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

MODEL = "anthropic/claude-sonnet-4-5"


def weather_tool() -> common.Tool:
    schema = struct_pb2.Struct()
    schema.update(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    )
    return common.Tool(name="weather", description="The weather in a city", parameters=schema)


async def stream(
    stub: pb_grpc.CompletionServiceAsyncStub, request: pb.StreamCompleteRequest
) -> list[pb.StreamCompleteResponse]:
    return [event async for event in stub.StreamComplete(request)]


def joined(events: list[pb.StreamCompleteResponse], kind: str) -> str:
    return "".join(getattr(e, kind).text for e in events if e.WhichOneof("event") == kind)


async def test_unary_text_and_what_the_upstream_was_sent(stub, fake):
    answer = await stub.Complete(
        pb.CompleteRequest(
            model=MODEL,
            messages=[common.ChatMessage(role=common.ROLE_SYSTEM, content="Be kind."), user("hi")],
        )
    )
    assert answer.content == "Hello from the fake upstream! You said: hi"
    assert answer.model == MODEL
    assert answer.provider == common.PROVIDER_ANTHROPIC
    assert answer.id.startswith("msg_fake")
    assert answer.finish_reason == common.FINISH_REASON_STOP
    assert answer.native_finish_reason == "end_turn"
    (sent,) = [r for r in fake.requests if r.provider == "anthropic"]
    assert sent.path == "/anthropic/v1/messages"
    assert sent.headers["x-api-key"] == fake.keys["anthropic"]
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.body["system"] == "Be kind."
    assert sent.body["max_tokens"] == 4096
    assert sent.body["model"] == "claude-sonnet-4-5"


async def test_usage_with_cache_writes_and_its_cost_in_done(stub):
    events = await stream(
        stub,
        pb.StreamCompleteRequest(
            model=MODEL,
            messages=[common.ChatMessage(role=common.ROLE_SYSTEM, content="Be kind."), user("hi")],
        ),
    )
    assert [e.WhichOneof("event") for e in events][-1] == "done"
    assert joined(events, "content_delta") == "Hello from the fake upstream! You said: hi"
    usage = events[-1].done.usage
    # The fake reports 3 cache-write tokens for a request with a system prompt,
    # apart from input_tokens: the gateway counts them in the prompt.
    assert usage.cache_write_tokens == 3
    assert usage.prompt_tokens >= 3 + usage.cached_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # Priced from the built-in table, cache writes at their own rate ($3.75).
    fresh = usage.prompt_tokens - usage.cache_write_tokens - usage.cached_tokens
    expected = (fresh * 3.0 + 3 * 3.75 + usage.completion_tokens * 15.0) / 1e6
    assert usage.cost_usd == pytest.approx(expected)
    rows = []
    for _ in range(50):  # the ledger writes in the background
        report = await stub.GetUsage(pb.GetUsageRequest(group_by=pb.USAGE_GROUPING_MODEL))
        rows = [r for r in report.rows if r.group == MODEL]
        if rows:
            break
        await asyncio.sleep(0.05)
    (row,) = rows
    assert row.cache_write_tokens == 3


async def test_tools_unary_and_streamed(stub):
    request = pb.CompleteRequest(
        model=MODEL, messages=[user("Weather in Boston?")], tools=[weather_tool()]
    )
    answer = await stub.Complete(request)
    (call,) = answer.tool_calls
    assert call.name == "weather"
    assert orjson.loads(call.arguments) == {"city": "Boston"}
    assert answer.finish_reason == common.FINISH_REASON_TOOL_CALLS
    events = await stream(
        stub,
        pb.StreamCompleteRequest(
            model=MODEL, messages=[user("Weather in Boston?")], tools=[weather_tool()]
        ),
    )
    calls = [e.tool_call for e in events if e.WhichOneof("event") == "tool_call"]
    assert [(c.name, orjson.loads(c.arguments)) for c in calls] == [("weather", {"city": "Boston"})]
    assert events[-1].done.native_finish_reason == "tool_use"


async def test_a_tool_result_turn_answers_the_call(stub, fake):
    first = await stub.Complete(
        pb.CompleteRequest(model=MODEL, messages=[user("Weather?")], tools=[weather_tool()])
    )
    (call,) = first.tool_calls
    turns = [
        user("Weather?"),
        common.ChatMessage(role=common.ROLE_ASSISTANT, tool_calls=[call]),
        common.ChatMessage(role=common.ROLE_TOOL, tool_call_id=call.id, content="Sunny, 21C"),
    ]
    answer = await stub.Complete(
        pb.CompleteRequest(model=MODEL, messages=turns, tools=[weather_tool()])
    )
    assert answer.content == "The tool answered: Sunny, 21C"
    last = fake.requests[-1].body["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "user"]
    assert last[2]["content"] == [
        {"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21C"}
    ]


async def test_a_tool_result_for_no_call_gets_anthropics_words(stub):
    turns = [
        user("Weather?"),
        common.ChatMessage(
            role=common.ROLE_ASSISTANT,
            tool_calls=[
                common.ToolCall(id="toolu_real", name="weather", arguments='{"city": "Oslo"}')
            ],
        ),
        common.ChatMessage(role=common.ROLE_TOOL, tool_call_id="toolu_other", content="Sunny"),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(pb.CompleteRequest(model=MODEL, messages=turns))
    status = rich_status(caught.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.info.reason == "UPSTREAM_REJECTED_REQUEST"
    assert "unexpected `tool_use_id`" in status.message
    assert status.info.metadata["upstreamRequestId"] == "req_fake_error"


@pytest.mark.parametrize("streamed", [False, True])
async def test_thinking_signatures_carry_across_turns(stub, streamed):
    thinking = common.ReasoningOptions(effort=common.REASONING_EFFORT_LOW)
    first_turn = [user("Weather in Boston?")]
    if streamed:
        events = await stream(
            stub,
            pb.StreamCompleteRequest(
                model=MODEL, messages=first_turn, tools=[weather_tool()], reasoning=thinking
            ),
        )
        assert (
            joined(events, "reasoning_delta")
            == "Let me think about what the user asked, then answer."
        )
        calls = [e.tool_call for e in events if e.WhichOneof("event") == "tool_call"]
        details = list(events[-1].done.reasoning_details)
    else:
        answer = await stub.Complete(
            pb.CompleteRequest(
                model=MODEL, messages=first_turn, tools=[weather_tool()], reasoning=thinking
            )
        )
        assert answer.reasoning == "Let me think about what the user asked, then answer."
        calls, details = list(answer.tool_calls), list(answer.reasoning_details)
    (detail,) = details
    assert detail.kind == common.REASONING_DETAIL_KIND_THINKING
    assert detail.provider == common.PROVIDER_ANTHROPIC

    def next_turn(reasoning_details: list[common.ReasoningDetail]) -> pb.CompleteRequest:
        assistant = common.ChatMessage(
            role=common.ROLE_ASSISTANT, tool_calls=calls, reasoning_details=reasoning_details
        )
        tool = common.ChatMessage(role=common.ROLE_TOOL, tool_call_id=calls[0].id, content="Sunny")
        return pb.CompleteRequest(
            model=MODEL,
            messages=[*first_turn, assistant, tool],
            tools=[weather_tool()],
            reasoning=thinking,
        )

    # Passed back unchanged, the fake's HMAC check accepts it.
    answer = await stub.Complete(next_turn(details))
    assert answer.content == "The tool answered: Sunny"
    # One changed byte, and Anthropic's 400 comes back in its own words.
    tampered = common.ReasoningDetail()
    tampered.CopyFrom(detail)
    tampered.text = detail.text.replace("think", "thinc")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(next_turn([tampered]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert INVALID_SIGNATURE in (caught.value.details() or "")


async def test_excluded_reasoning_still_returns_the_signature(stub):
    answer = await stub.Complete(
        pb.CompleteRequest(
            model=MODEL,
            messages=[user("hi")],
            reasoning=common.ReasoningOptions(enabled=True, exclude=True),
        )
    )
    assert answer.reasoning == ""
    (detail,) = answer.reasoning_details
    assert detail.signature


async def test_a_field_anthropic_cannot_honour_is_refused_before_any_request(stub, fake):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            pb.CompleteRequest(
                model=MODEL, messages=[user("hi")], sampling=common.SamplingParams(seed=7)
            )
        )
    status = rich_status(caught.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.bad_request is not None
    assert [v.field for v in status.bad_request.field_violations] == ["sampling.seed"]
    assert not [r for r in fake.requests if r.provider == "anthropic"]


@pytest.mark.parametrize("streamed", [False, True])
async def test_overloaded_twice_then_answered(stub, streamed):
    model = "anthropic/fault-flaky"
    if streamed:
        events = await stream(stub, pb.StreamCompleteRequest(model=model, messages=[user("hi")]))
        assert events[-1].done.attempts == 3
    else:
        answer = await stub.Complete(pb.CompleteRequest(model=model, messages=[user("hi")]))
        assert answer.attempts == 3


async def test_overloaded_after_output_ends_the_stream_unavailable(stub):
    received: list[str] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in stub.StreamComplete(
            pb.StreamCompleteRequest(
                model="anthropic/fault-overloaded-midstream", messages=[user("hi")]
            )
        ):
            received.append(str(event.WhichOneof("event")))
    assert "content_delta" in received
    assert "done" not in received
    status = rich_status(caught.value)
    assert (status.code, status.info.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_OVERLOADED")


async def test_without_a_key_anthropic_calls_name_the_variable_and_the_rest_work(
    settings: Settings,
) -> None:
    keyless = dataclasses.replace(
        settings, anthropic=dataclasses.replace(settings.anthropic, api_key=None)
    )
    async with gateway_stub(keyless) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Complete(pb.CompleteRequest(model=MODEL, messages=[user("hi")]))
        status = rich_status(caught.value)
        assert status.code == grpc.StatusCode.FAILED_PRECONDITION
        assert status.info.reason == "PROVIDER_NOT_CONFIGURED"
        assert status.info.metadata["variable"] == "ANTHROPIC_API_KEY"
        assert "ANTHROPIC_API_KEY" in status.message
        answer = await stub.Complete(pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")]))
        assert answer.content


async def test_list_models_pages_through_the_catalogue(stub):
    listed = await stub.ListModels(pb.ListModelsRequest(provider=common.PROVIDER_ANTHROPIC))
    names = [m.name for m in listed.models if m.provider == common.PROVIDER_ANTHROPIC]
    # The fake serves four models two to a page.
    assert names == [
        "anthropic/claude-sonnet-4-5-20250929",
        "anthropic/claude-opus-4-6",
        "anthropic/claude-haiku-4-5-20251001",
        "anthropic/claude-3-haiku-20240307",
    ]
    assert common.PROVIDER_ANTHROPIC not in listed.incomplete_providers
