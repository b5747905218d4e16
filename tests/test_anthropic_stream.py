"""AnthropicStreamAssembler: named SSE events -> the gateway's stream events, however cut."""

from __future__ import annotations

import itertools
from typing import Any

import grpc
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmgateway.server.config import AnthropicSettings, Secret, Timeouts
from llmgateway.server.errors import GatewayError
from llmgateway.server.providers.anthropic import AnthropicProvider
from llmgateway.server.providers.anthropic_stream import AnthropicStreamAssembler
from llmgateway.server.providers.assembly import coalesce
from llmgateway.server.providers.redaction import REDACTED
from llmgateway.server.providers.sse import SSEDecoder
from llmgateway.server.routing.router import Route
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

ROUTE = Route(common.PROVIDER_ANTHROPIC, "claude-sonnet-4-5", "anthropic/claude-sonnet-4-5")
KEY = "sk-ant-api03-streamtestkey0000000000000000"
# Built once: the provider's client is never used by these tests.
PROVIDER = AnthropicProvider(AnthropicSettings(api_key=Secret(KEY)), Timeouts())


def event(name: str, payload: dict[str, Any], padding: bytes = b"") -> bytes:
    return f"event: {name}\n".encode() + b"data: " + orjson.dumps(payload) + padding + b"\n\n"


def start(index: int, block: dict[str, Any]) -> bytes:
    return event(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def delta(index: int, payload: dict[str, Any]) -> bytes:
    return event(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": payload}
    )


def stop(index: int) -> bytes:
    return event("content_block_stop", {"type": "content_block_stop", "index": index})


def message_start(**usage: int) -> bytes:
    return event(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_stream01",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5-20250929",
                "content": [],
                "stop_reason": None,
                "usage": usage or {"input_tokens": 12, "output_tokens": 1},
            },
        },
    )


def message_delta(stop_reason: str | None, **usage: int) -> bytes:
    return event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": usage,
        },
    )


PING = event("ping", {"type": "ping"})
MESSAGE_STOP = event("message_stop", {"type": "message_stop"})
SIGNATURE = "EqQBCkYIBxgCKkBmZmFrZS1zaWduYXR1cmUtYnl0ZXMtZm9yLXRlc3Rz/+=="

# What a thinking model that answers and calls two tools sends, padded as the
# real API pads: thinking with its signature, a multi-byte character split by
# the cuts below, a tool whose input arrives in awkward pieces after a first
# "", a tool without arguments, then cumulative usage repeating the input counts.
BODY = b"".join(
    [
        message_start(
            input_tokens=20,
            cache_read_input_tokens=100,
            cache_creation_input_tokens=30,
            output_tokens=1,
        ),
        start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        PING,
        delta(0, {"type": "thinking_delta", "thinking": "The user wants "}),
        delta(0, {"type": "thinking_delta", "thinking": "the weather."}),
        delta(0, {"type": "thinking_delta", "thinking": ""}),
        delta(0, {"type": "signature_delta", "signature": SIGNATURE}),
        stop(0),
        start(1, {"type": "text", "text": ""}),
        delta(1, {"type": "text_delta", "text": "Let me check \u2019"}),
        delta(1, {"type": "text_delta", "text": "the weather."}),
        stop(1),
        start(2, {"type": "tool_use", "id": "toolu_01", "name": "weather", "input": {}}),
        delta(2, {"type": "input_json_delta", "partial_json": ""}),
        delta(2, {"type": "input_json_delta", "partial_json": '{"ci'}),
        delta(2, {"type": "input_json_delta", "partial_json": 'ty": "Os'}),
        delta(2, {"type": "input_json_delta", "partial_json": 'lo\\u00e9"}'}),
        stop(2),
        start(3, {"type": "tool_use", "id": "toolu_02", "name": "now", "input": {}}),
        delta(3, {"type": "input_json_delta", "partial_json": ""}),
        stop(3),
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {
                    "input_tokens": 20,
                    "cache_read_input_tokens": 100,
                    "cache_creation_input_tokens": 30,
                    "output_tokens": 57,
                },
            },
            b"   ",
        ),
        MESSAGE_STOP,
    ]
)


def assembler(*, include_reasoning: bool = True) -> AnthropicStreamAssembler:
    return AnthropicStreamAssembler(PROVIDER, ROUTE, include_reasoning=include_reasoning)


def run(chunks: list[bytes], *, include_reasoning: bool = True) -> list[pb.StreamCompleteResponse]:
    """The events a body cut into `chunks` produces, as the core's loop makes them."""
    decoder = SSEDecoder()
    assembly = assembler(include_reasoning=include_reasoning)
    out: list[pb.StreamCompleteResponse] = []
    for chunk in chunks:
        for frame in decoder.feed(chunk):
            out.extend(assembly.on_event(frame))
        if assembly.done:
            break
    else:
        assembly.on_end(decoder.end())
    out.extend(assembly.finish())
    return coalesce(out)


def texts(events: list[pb.StreamCompleteResponse], kind: str) -> str:
    return "".join(getattr(e, kind).text for e in events if e.WhichOneof("event") == kind)


def error_of(chunks: list[bytes]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        run(chunks)
    return caught.value


WHOLE = run([BODY])


def test_the_whole_stream():
    assert texts(WHOLE, "content_delta") == "Let me check \u2019the weather."
    assert texts(WHOLE, "reasoning_delta") == "The user wants the weather."
    calls = [e.tool_call for e in WHOLE if e.WhichOneof("event") == "tool_call"]
    assert [(c.id, c.name) for c in calls] == [("toolu_01", "weather"), ("toolu_02", "now")]
    assert orjson.loads(calls[0].arguments) == {"city": "Oslo\u00e9"}
    # A tool without arguments: only the first "" arrived, so {}.
    assert calls[1].arguments == "{}"
    done = WHOLE[-1].done
    assert WHOLE[-1].WhichOneof("event") == "done"
    assert done.id == "msg_stream01"
    assert done.model == "anthropic/claude-sonnet-4-5-20250929"
    assert done.upstream_provider == "Anthropic"
    assert done.finish_reason == common.FINISH_REASON_TOOL_CALLS
    assert done.native_finish_reason == "tool_use"


def test_thinking_becomes_a_signed_detail_byte_for_byte():
    (detail,) = WHOLE[-1].done.reasoning_details
    assert detail.provider == common.PROVIDER_ANTHROPIC
    assert detail.kind == common.REASONING_DETAIL_KIND_THINKING
    assert detail.text == "The user wants the weather."
    assert detail.signature == SIGNATURE
    assert detail.index == 0


def test_usage_counts_cache_reads_and_writes_as_prompt_tokens():
    usage = WHOLE[-1].done.usage
    assert usage.prompt_tokens == 150
    assert usage.cached_tokens == 100
    assert usage.cache_write_tokens == 30
    assert usage.completion_tokens == 57
    assert usage.total_tokens == 207


def test_excluded_reasoning_still_returns_the_details():
    events = run([BODY], include_reasoning=False)
    assert texts(events, "reasoning_delta") == ""
    assert events[-1].done.reasoning_details[0].text == "The user wants the weather."


def test_every_single_byte_split_gives_the_same_events():
    for cut in range(1, len(BODY)):
        assert run([BODY[:cut], BODY[cut:]]) == WHOLE, cut


def test_one_byte_at_a_time():
    assert run([BODY[i : i + 1] for i in range(len(BODY))]) == WHOLE


@given(st.lists(st.integers(min_value=0, max_value=len(BODY)), max_size=30))
def test_any_cut_points_give_the_same_events(cuts):
    points = sorted({0, len(BODY), *cuts})
    chunks = [BODY[a:b] for a, b in itertools.pairwise(points)]
    assert run(chunks) == WHOLE


def test_unknown_events_and_blocks_are_skipped():
    body = b"".join(
        [
            message_start(),
            event("content_block_future", {"type": "content_block_future", "what": [1]}),
            start(0, {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search"}),
            delta(0, {"type": "input_json_delta", "partial_json": '{"q": "x"}'}),
            stop(0),
            start(1, {"type": "text", "text": ""}),
            delta(1, {"type": "citations_delta", "citation": {"cited_text": "x"}}),
            delta(1, {"type": "text_delta", "text": "Found it."}),
            stop(1),
            message_delta("end_turn", output_tokens=3),
            MESSAGE_STOP,
        ]
    )
    events = run([body])
    assert [e.WhichOneof("event") for e in events] == ["content_delta", "done"]
    assert events[0].content_delta.text == "Found it."


def test_kimi_style_input_in_the_block_start_is_kept():
    body = b"".join(
        [
            message_start(),
            start(0, {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": [1, 2]}}),
            stop(0),
            message_delta("tool_use", output_tokens=3),
            MESSAGE_STOP,
        ]
    )
    call = run([body])[0].tool_call
    assert orjson.loads(call.arguments) == {"a": [1, 2]}


def test_invalid_tool_json_is_passed_on_as_the_model_wrote_it():
    body = b"".join(
        [
            message_start(),
            start(0, {"type": "tool_use", "id": "t1", "name": "f", "input": {}}),
            delta(0, {"type": "input_json_delta", "partial_json": ""}),
            delta(0, {"type": "input_json_delta", "partial_json": '{"a": '}),
            stop(0),
            message_delta("tool_use", output_tokens=3),
            MESSAGE_STOP,
        ]
    )
    assert run([body])[0].tool_call.arguments == '{"a": '


def test_redacted_thinking_is_a_detail_with_its_data():
    body = b"".join(
        [
            message_start(),
            start(0, {"type": "redacted_thinking", "data": "RWRhdGEtb3BhcXVl"}),
            stop(0),
            start(1, {"type": "thinking", "thinking": "", "signature": ""}),
            delta(1, {"type": "signature_delta", "signature": "c2ln"}),
            stop(1),
            start(2, {"type": "text", "text": ""}),
            delta(2, {"type": "text_delta", "text": "Hi."}),
            stop(2),
            message_delta("end_turn", output_tokens=3),
            MESSAGE_STOP,
        ]
    )
    events = run([body])
    assert texts(events, "reasoning_delta") == ""
    redacted, empty = events[-1].done.reasoning_details
    assert redacted.kind == common.REASONING_DETAIL_KIND_REDACTED_THINKING
    assert (redacted.signature, redacted.index, redacted.text) == ("RWRhdGEtb3BhcXVl", 0, "")
    # A thinking block may hold only a signature: it is still passed back.
    assert empty.kind == common.REASONING_DETAIL_KIND_THINKING
    assert (empty.text, empty.signature, empty.index) == ("", "c2ln", 1)


usage_fields = st.sampled_from(
    ["input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"]
)


@given(st.lists(st.dictionaries(usage_fields, st.integers(0, 10**6)), max_size=6))
def test_usage_takes_the_latest_value_of_each_field_never_a_sum(deltas):
    first = {"input_tokens": 7, "output_tokens": 1}
    body = b"".join(
        [
            message_start(**first),
            *(message_delta(None, **d) for d in deltas),
            message_delta("end_turn"),
            MESSAGE_STOP,
        ]
    )
    latest: dict[str, int] = dict(first)
    for d in deltas:
        latest.update(d)
    usage = run([body])[-1].done.usage
    cache_read = latest.get("cache_read_input_tokens", 0)
    cache_write = latest.get("cache_creation_input_tokens", 0)
    assert usage.prompt_tokens == latest["input_tokens"] + cache_read + cache_write
    assert usage.completion_tokens == latest["output_tokens"]
    assert usage.cached_tokens == cache_read
    assert usage.cache_write_tokens == cache_write


def test_a_null_usage_field_keeps_the_earlier_count():
    body = b"".join(
        [
            message_start(input_tokens=9, output_tokens=1),
            event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn"},
                    "usage": {"input_tokens": None, "output_tokens": 4},
                },
            ),
            MESSAGE_STOP,
        ]
    )
    usage = run([body])[-1].done.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (9, 4)


def test_no_message_stop_is_a_truncation():
    body = BODY[: BODY.index(b"event: message_stop")]
    error = error_of([body])
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.reason == pb.ERROR_REASON_UPSTREAM_STREAM_TRUNCATED
    assert "message_stop" in error.message


def test_a_last_message_stop_without_its_blank_line_is_accepted():
    assert run([BODY.removesuffix(b"\n")]) == WHOLE


def test_message_stop_without_a_stop_reason_is_a_truncation():
    body = b"".join([message_start(), message_delta(None, output_tokens=2), MESSAGE_STOP])
    assert error_of([body]).reason == pb.ERROR_REASON_UPSTREAM_STREAM_TRUNCATED


def test_an_error_event_after_content_raises_after_the_content():
    body = b"".join(
        [
            message_start(),
            start(0, {"type": "text", "text": ""}),
            delta(0, {"type": "text_delta", "text": "Hel"}),
            event(
                "error",
                {
                    "type": "error",
                    "error": {"type": "overloaded_error", "message": "Overloaded", "details": None},
                    "request_id": "req_err1",
                },
            ),
        ]
    )
    decoder = SSEDecoder()
    assembly = assembler()
    frames = decoder.feed(body)
    events = [e for frame in frames[:3] for e in assembly.on_event(frame)]
    assert texts(events, "content_delta") == "Hel"
    with pytest.raises(GatewayError) as caught:
        assembly.on_event(frames[3])
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_OVERLOADED
    assert caught.value.metadata["upstreamRequestId"] == "req_err1"
    assert "Overloaded" in caught.value.message


def test_a_frame_that_is_not_json_is_malformed():
    body = message_start() + b'event: content_block_delta\ndata: {"type": "content_bl\n\n'
    assert error_of([body]).reason == pb.ERROR_REASON_UPSTREAM_MALFORMED_RESPONSE


def test_tool_input_for_a_block_that_never_started_is_malformed():
    body = message_start() + delta(4, {"type": "input_json_delta", "partial_json": "{}"})
    assert error_of([body]).reason == pb.ERROR_REASON_UPSTREAM_MALFORMED_RESPONSE


def test_events_after_message_stop_are_ignored():
    assert run([BODY + delta(1, {"type": "text_delta", "text": "more"})]) == WHOLE


def test_the_key_is_redacted_from_everything_emitted():
    body = b"".join(
        [
            message_start(),
            start(0, {"type": "thinking", "thinking": "", "signature": ""}),
            delta(0, {"type": "thinking_delta", "thinking": f"key {KEY}"}),
            delta(0, {"type": "signature_delta", "signature": "c2ln"}),
            stop(0),
            start(1, {"type": "text", "text": ""}),
            delta(1, {"type": "text_delta", "text": f"the key is {KEY}"}),
            stop(1),
            start(2, {"type": "tool_use", "id": KEY, "name": "f", "input": {}}),
            delta(
                2, {"type": "input_json_delta", "partial_json": orjson.dumps({"k": KEY}).decode()}
            ),
            stop(2),
            message_delta(KEY, output_tokens=3),
            MESSAGE_STOP,
        ]
    )
    events = run([body])
    assert all(KEY.encode() not in e.SerializeToString() for e in events)
    assert REDACTED in texts(events, "content_delta")


def test_a_block_left_open_at_message_stop_is_closed_then_and_sent_once():
    # An Anthropic-compatible upstream that never sends content_block_stop:
    # the tool call and the thinking are not lost, and the call goes out once.
    body = b"".join(
        [
            message_start(),
            start(0, {"type": "thinking", "thinking": "", "signature": ""}),
            delta(0, {"type": "thinking_delta", "thinking": "hmm"}),
            delta(0, {"type": "signature_delta", "signature": SIGNATURE}),
            start(1, {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {}}),
            delta(1, {"type": "input_json_delta", "partial_json": '{"a": 1}'}),
            message_delta("tool_use", output_tokens=5),
            MESSAGE_STOP,
        ]
    )
    events = run([body])
    calls = [e.tool_call for e in events if e.WhichOneof("event") == "tool_call"]
    assert [(c.id, c.name, orjson.loads(c.arguments)) for c in calls] == [
        ("toolu_9", "f", {"a": 1})
    ]
    done = events[-1].done
    assert [(d.text, d.signature, d.index) for d in done.reasoning_details] == [
        ("hmm", SIGNATURE, 0)
    ]
    assert done.finish_reason == common.FINISH_REASON_TOOL_CALLS
