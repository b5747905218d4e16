"""Gemini end to end: a real gRPC channel, the gateway, and the fake's Gemini wire."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import struct_pb2

from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from tests.conftest import gateway_stub, rich_status, user

if TYPE_CHECKING:
    from llmgateway.server.config import Settings
    from llmgateway.testing.fake_upstream.app import FakeUpstream
    from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc


def weather_tool() -> common.Tool:
    schema = struct_pb2.Struct()
    schema.update({"type": "object", "properties": {"location": {"type": "string"}}})
    return common.Tool(name="weather", description="Weather now.", parameters=schema)


async def test_unary_text_with_usage(
    stub: pb_grpc.CompletionServiceAsyncStub, fake: FakeUpstream
) -> None:
    response = await stub.Complete(
        pb.CompleteRequest(model="gemini/gemini-2.5-flash", messages=[user("hi")])
    )
    assert response.content.startswith("Hello from the fake upstream!")
    assert response.model == "gemini/gemini-2.5-flash"
    assert response.finish_reason == common.FINISH_REASON_STOP
    assert (
        response.usage.total_tokens
        == response.usage.prompt_tokens + response.usage.completion_tokens
    )
    sent = [r for r in fake.requests if r.provider == "gemini"][-1]
    assert sent.path == "/gemini/v1beta/models/gemini-2.5-flash:generateContent"
    assert "key=" not in sent.path


async def test_stream_text_and_usage_in_done(stub: pb_grpc.CompletionServiceAsyncStub) -> None:
    events = [
        e
        async for e in stub.StreamComplete(
            pb.StreamCompleteRequest(model="gemini/gemini-2.5-pro", messages=[user("hi")])
        )
    ]
    text = "".join(e.content_delta.text for e in events if e.HasField("content_delta"))
    assert text.startswith("Hello from the fake upstream!")
    done = events[-1].done
    assert done.finish_reason == common.FINISH_REASON_STOP
    # The fake's earlier chunks report more prompt tokens than its last: the last wins.
    assert done.usage.prompt_tokens == 6  # 5 + one word, as answers.py counts
    assert done.usage.completion_tokens > 0


async def test_tools_and_a_gemini_3_signature_carried_to_the_next_turn(
    stub: pb_grpc.CompletionServiceAsyncStub,
) -> None:
    model = "gemini/gemini-3-pro-preview"
    first = await stub.Complete(
        pb.CompleteRequest(model=model, messages=[user("weather?")], tools=[weather_tool()])
    )
    assert first.finish_reason == common.FINISH_REASON_TOOL_CALLS
    assert first.native_finish_reason == "STOP"
    [call] = first.tool_calls
    assert call.name == "weather"
    assert [d.tool_call_id for d in first.reasoning_details] == [call.id]
    turn = common.ChatMessage(
        role=common.ROLE_ASSISTANT, tool_calls=[call], reasoning_details=first.reasoning_details
    )
    result = common.ChatMessage(role=common.ROLE_TOOL, content='{"temp": 21}', tool_call_id=call.id)
    events = [
        e
        async for e in stub.StreamComplete(
            pb.StreamCompleteRequest(
                model=model, messages=[user("weather?"), turn, result], tools=[weather_tool()]
            )
        )
    ]
    text = "".join(e.content_delta.text for e in events if e.HasField("content_delta"))
    assert "The tool answered" in text
    # Without the signature, Gemini 3 refuses the turn: INVALID_ARGUMENT with its words.
    unsigned = common.ChatMessage(role=common.ROLE_ASSISTANT, tool_calls=[call])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            pb.CompleteRequest(
                model=model, messages=[user("weather?"), unsigned, result], tools=[weather_tool()]
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "thought_signature" in (caught.value.details() or "")


async def test_streamed_parallel_calls_with_gemini_s_own_ids(
    stub: pb_grpc.CompletionServiceAsyncStub,
) -> None:
    clock = common.Tool(name="clock", description="Time now.")
    events = [
        e
        async for e in stub.StreamComplete(
            pb.StreamCompleteRequest(
                model="gemini/fault-parallel",
                messages=[user("both")],
                tools=[weather_tool(), clock],
            )
        )
    ]
    calls = [e.tool_call for e in events if e.HasField("tool_call")]
    assert [c.name for c in calls] == ["weather", "clock"]
    assert len({c.id for c in calls}) == 2
    assert events[-1].done.finish_reason == common.FINISH_REASON_TOOL_CALLS
    own = await stub.Complete(
        pb.CompleteRequest(
            model="gemini/fault-own-ids", messages=[user("x")], tools=[weather_tool()]
        )
    )
    assert [c.id for c in own.tool_calls] == ["fk000000"]


async def test_a_safety_stop_is_an_answer(stub: pb_grpc.CompletionServiceAsyncStub) -> None:
    response = await stub.Complete(
        pb.CompleteRequest(model="gemini/fault-safety", messages=[user("hi")])
    )
    assert response.content == ""
    assert response.finish_reason == common.FINISH_REASON_CONTENT_FILTER
    assert response.native_finish_reason == "SAFETY"


async def test_a_blocked_prompt_is_permission_denied(
    stub: pb_grpc.CompletionServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            pb.CompleteRequest(model="gemini/fault-blocked-prompt", messages=[user("hi")])
        )
    status = rich_status(caught.value)
    assert status.code == grpc.StatusCode.PERMISSION_DENIED
    assert status.info.reason == "UPSTREAM_CONTENT_FLAGGED"
    assert status.info.metadata["upstreamCode"] == "SAFETY"


async def test_a_429_with_retry_info_gives_the_caller_its_delay(
    stub: pb_grpc.CompletionServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            pb.CompleteRequest(model="gemini/fault-retry-info", messages=[user("hi")])
        )
    status = rich_status(caught.value)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status.info.reason == "UPSTREAM_RATE_LIMITED"
    assert status.retry is not None
    assert status.retry.retry_delay.seconds == 7


async def test_without_a_key_gemini_fails_naming_the_variable_and_others_work(
    settings: Settings,
) -> None:
    keyless = dataclasses.replace(
        settings, gemini=dataclasses.replace(settings.gemini, api_key=None)
    )
    async with gateway_stub(keyless) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Complete(
                pb.CompleteRequest(model="gemini/gemini-2.5-flash", messages=[user("hi")])
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "GEMINI_API_KEY" in (caught.value.details() or "")
        answer = await stub.Complete(pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")]))
        assert answer.content


async def test_list_models_includes_gemini_s_catalogue(
    stub: pb_grpc.CompletionServiceAsyncStub,
) -> None:
    listed = await stub.ListModels(pb.ListModelsRequest())
    names = {m.name for m in listed.models}
    assert {"gemini/gemini-2.5-flash", "gemini/gemini-3-pro-preview"} <= names
    assert "gemini/text-embedding-004" not in names
    assert common.PROVIDER_GEMINI not in listed.incomplete_providers
