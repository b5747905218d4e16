"""StreamComplete end to end: ordering, the single final event, and honest failure."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import grpc
import pytest
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

from service.config import Timeouts
from tests.conftest import gateway_stub, rich_status, user
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


@pytest.mark.parametrize(
    ("model", "code", "reason"),
    [
        # OpenRouter: in-band error chunk after tokens, HTTP status already 200.
        (
            "openrouter/openai/fault-midstream-error",
            grpc.StatusCode.UNAVAILABLE,
            "UPSTREAM_UNAVAILABLE",
        ),
        # Z.AI: `event: error` carrying a business code.
        ("zai/fault-midstream-error", grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
        # The connection drops mid-body.
        (
            "openrouter/openai/fault-truncated",
            grpc.StatusCode.UNAVAILABLE,
            "UPSTREAM_STREAM_TRUNCATED",
        ),
        ("zai/fault-truncated", grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_TRUNCATED"),
        # A clean end of body, but no [DONE].
        (
            "openrouter/openai/fault-no-done",
            grpc.StatusCode.UNAVAILABLE,
            "UPSTREAM_STREAM_TRUNCATED",
        ),
        ("zai/fault-no-done", grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_TRUNCATED"),
        # [DONE] without any finish_reason.
        (
            "openrouter/openai/fault-no-finish",
            grpc.StatusCode.UNAVAILABLE,
            "UPSTREAM_STREAM_TRUNCATED",
        ),
        ("zai/fault-no-finish", grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_TRUNCATED"),
        # An event that is not JSON.
        (
            "openrouter/openai/fault-malformed-event",
            grpc.StatusCode.UNAVAILABLE,
            "UPSTREAM_MALFORMED_RESPONSE",
        ),
        ("zai/fault-malformed-event", grpc.StatusCode.UNAVAILABLE, "UPSTREAM_MALFORMED_RESPONSE"),
        # Z.AI's `network_error` finish: inference failed, not an answer.
        ("zai/fault-network-error", grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    ],
)
async def test_broken_streams_end_with_non_ok_status_after_deltas(stub, model, code, reason):
    events, error = await collect(stub, model)
    assert error is not None, "a broken upstream stream must not look complete"
    assert "done" not in kinds(events)
    assert error.code() == code
    assert rich_status(error).info.reason == reason
    if "network-error" not in model:
        assert any(k in ("content_delta", "reasoning_delta") for k in kinds(events)), (
            "these faults happen after some output reached the caller"
        )


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


async def test_deadline_bounds_a_hanging_upstream(stub, fake):
    loop = asyncio.get_running_loop()
    started = loop.time()
    events, error = await collect(stub, "zai/fault-hang", timeout=0.5)
    elapsed = loop.time() - started
    assert events == []
    assert error is not None
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 5  # bounded by the deadline, not by the upstream
    # The gateway gave up on the upstream too: its connection closes.
    await _until_no_upstream_connections(fake)


async def test_unary_deadline_bounds_a_hanging_upstream(stub, fake):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            pb.CompleteRequest(model="openrouter/x/fault-hang", messages=[user("hi")]), timeout=0.5
        )
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The caller's deadline alone would produce that code; the gateway must
    # also have let go of the upstream request.
    await _until_no_upstream_connections(fake)


async def test_stalled_stream_ends_with_idle_timeout(stub):
    # The test gateway's stream idle timeout is 2 s (conftest).
    events, error = await collect(stub, "zai/fault-stall", timeout=20)
    assert error is not None
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert rich_status(error).info.reason == "UPSTREAM_TIMEOUT"
    assert "done" not in kinds(events)


async def test_finished_streams_reuse_the_upstream_connection(stub, fake):
    for _ in range(3):
        _events, error = await collect(stub, "openrouter/openai/gpt-4o-mini")
        assert error is None
    assert fake.stats.streams_completed == 3
    assert fake.stats.connections_accepted == 1


async def _until_no_upstream_connections(fake):
    for _ in range(250):
        if fake.stats.open_connections == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{fake.stats.open_connections} upstream connection(s) still open")


async def test_keepalive_comments_do_not_keep_a_stream_alive_forever(settings, fake):
    short = dataclasses.replace(
        settings, timeouts=Timeouts(connect=1, stream_idle=0.5, stream_total=1)
    )
    async with gateway_stub(short) as short_stub:
        events, error = await collect(
            short_stub, "openrouter/x/fault-keepalive-forever", timeout=30
        )
    assert events == []
    assert error is not None
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert rich_status(error).info.reason == "UPSTREAM_TIMEOUT"
    await _until_no_upstream_connections(fake)


@pytest.mark.parametrize(
    "model", ["openrouter/openai/fault-done-no-blank", "zai/fault-done-no-blank"]
)
async def test_a_final_done_without_its_blank_line_still_completes(stub, model):
    events, error = await collect(stub, model)
    assert error is None
    assert kinds(events)[-1] == "done"


async def test_an_upstream_lingering_after_done_does_not_hold_the_call(stub):
    # The fake keeps the body open for 30 s after [DONE]; the call must end long before.
    events, error = await asyncio.wait_for(
        collect(stub, "openrouter/openai/fault-linger"), timeout=10
    )
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


@pytest.mark.parametrize(
    "model", ["openrouter/openai/fault-bad-chunking", "zai/fault-bad-chunking"]
)
async def test_broken_http_framing_mid_stream_ends_the_call(stub, fake, model):
    # The test gateway's stream idle timeout is 2 s; the call must not hang past it.
    events, error = await asyncio.wait_for(collect(stub, model, timeout=30), timeout=15)
    assert error is not None
    assert error.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    assert "done" not in kinds(events)
    await _until_no_upstream_connections(fake)
