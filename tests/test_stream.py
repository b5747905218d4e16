"""StreamComplete end to end: ordering, the single final event, and honest failure."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from tests.conftest import rich_status, user
from tests.test_complete import WEATHER_TOOL


async def collect(stub, model, *, timeout=10, **fields):
    """Every event of one stream, and the error that ended it (or None)."""
    events = []
    request = pb.StreamCompleteRequest(model=model, messages=[user("hi there")], **fields)
    try:
        async for event in stub.StreamComplete(request, timeout=timeout):
            events.append(event)
    except grpc.aio.AioRpcError as error:
        return events, error
    return events, None


def kinds(events):
    return [e.WhichOneof("event") for e in events]


def text(events, kind="content_delta"):
    return "".join(getattr(e, kind).text for e in events if e.WhichOneof("event") == kind)


@pytest.mark.parametrize("model", ["openrouter/openai/gpt-4o-mini", "zai/glm-4.7"])
async def test_stream_delivers_deltas_then_exactly_one_done(stub, model):
    events, error = await collect(stub, model)
    assert error is None
    assert kinds(events).count("done") == 1
    assert kinds(events)[-1] == "done"
    assert text(events) == "Hello from the fake upstream! You said: hi there"
    done = events[-1].done
    assert done.finish_reason == common.FINISH_REASON_STOP
    assert done.model == model
    assert done.usage.completion_tokens > 0
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens


async def test_openrouter_stream_keeps_usage_and_cost_sent_after_finish(stub, fake):
    events, error = await collect(stub, "openrouter/openai/gpt-4o-mini")
    assert error is None
    done = events[-1].done
    assert done.usage.cost_usd == pytest.approx(7e-6 + 9 * 2e-6)
    assert done.upstream_provider == "OpenAI"
    assert done.id.startswith("gen-")
    body = fake.requests[-1].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_zai_stream_reasoning_comes_first_and_separate(stub):
    events, error = await collect(stub, "zai/glm-4.7")
    assert error is None
    order = [k for k in kinds(events) if k != "done"]
    first_content = order.index("content_delta")
    assert set(order[:first_content]) == {"reasoning_delta"}
    assert "reasoning_delta" not in order[first_content:]
    assert text(events, "reasoning_delta") == "Let me think about what the user asked, then answer."
    assert events[-1].done.usage.reasoning_tokens == 10


@pytest.mark.parametrize("model", ["openrouter/openai/gpt-4o-mini", "zai/glm-4.7"])
async def test_streamed_tool_calls_arrive_assembled_before_done(stub, model):
    events, error = await collect(stub, model, tools=[WEATHER_TOOL])
    assert error is None
    calls = [e.tool_call for e in events if e.WhichOneof("event") == "tool_call"]
    assert [(c.id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("call_fake_0001", "get_weather", {"location": "Boston"})
    ]
    assert kinds(events)[-2:] == ["tool_call", "done"]
    assert events[-1].done.finish_reason == common.FINISH_REASON_TOOL_CALLS


async def test_openrouter_error_only_chunk_in_stream(stub):
    events, error = await collect(stub, "openrouter/google/fault-error-in-200")
    assert events == []
    assert error is not None
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rich_status(error)
    assert status.info.reason == "UPSTREAM_RATE_LIMITED"
    assert "free-models-per-day" in status.message


async def test_cancelling_a_stream_closes_the_upstream_connection(stub, fake):
    request = pb.StreamCompleteRequest(
        model="openrouter/openai/fault-slow", messages=[user("count")]
    )
    call = stub.StreamComplete(request, timeout=30)
    received = 0
    async for event in call:
        if event.WhichOneof("event") == "content_delta":
            received += 1
            if received == 3:
                break
    call.cancel()
    # The fake notices the hang-up on its next write, within one chunk delay.
    await asyncio.wait_for(fake.stats.abandoned.wait(), timeout=5)
    assert fake.stats.streams_abandoned_by_client == 1
    assert fake.stats.streams_completed == 0


async def test_finished_streams_reuse_the_upstream_connection(stub, fake):
    for _ in range(3):
        _events, error = await collect(stub, "openrouter/openai/gpt-4o-mini")
        assert error is None
    assert fake.stats.streams_completed == 3
    assert fake.stats.connections_accepted == 1


@pytest.mark.parametrize(
    "model", ["openrouter/openai/fault-done-no-blank", "zai/fault-done-no-blank"]
)
async def test_a_final_done_without_its_blank_line_still_completes(stub, model):
    events, error = await collect(stub, model)
    assert error is None
    assert kinds(events)[-1] == "done"


async def test_openrouter_content_filter_keeps_what_was_said(stub, fake):
    # Only Z.AI asks for withdrawal; an OpenRouter content_filter keeps its text.
    response = await stub.Complete(
        pb.CompleteRequest(model="openrouter/openai/fault-content-filter", messages=[user("hi")]),
        timeout=10,
    )
    assert response.finish_reason == common.FINISH_REASON_CONTENT_FILTER
    assert response.content
