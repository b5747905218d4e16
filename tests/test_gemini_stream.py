"""The Gemini stream assembler, fed through the SSE decoder at every kind of split."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmgateway.server.config import GeminiSettings, Secret, Timeouts
from llmgateway.server.errors import GatewayError
from llmgateway.server.providers.gemini import GeminiProvider
from llmgateway.server.providers.sse import SSEDecoder
from llmgateway.server.routing.router import Route
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Sequence

KEY = "AIzaTestGeminiKey00000000000000000000000"
ROUTE = Route(common.PROVIDER_GEMINI, "gemini-2.5-pro", "gemini/gemini-2.5-pro")
PROVIDER = GeminiProvider(GeminiSettings(api_key=Secret(KEY)), Timeouts())


def chunk(parts: list[dict[str, object]], prompt: int, candidates: int, **extra: object) -> bytes:
    body = {
        "candidates": [{"content": {"parts": parts, "role": "model"}, "index": 0, **extra}],
        "usageMetadata": {
            "promptTokenCount": prompt,
            "candidatesTokenCount": candidates,
            "thoughtsTokenCount": 5,
            "totalTokenCount": prompt + candidates + 5,
        },
        "modelVersion": "gemini-2.5-pro",
        "responseId": "rid7",
    }
    return b"data: " + orjson.dumps(body) + b"\r\n\r\n"


# Written from what recorded streams show: thoughts first, text in pieces, two
# parallel calls whole in one chunk (the first signed), an empty text part with
# the finish, and prompt counts that go down as well as up.
STREAM = b"".join(
    [
        chunk([{"text": "Thinking é…", "thought": True}], 121, 0),
        chunk([{"text": "Let me "}], 124, 1),
        chunk([{"text": "add and multiply."}], 124, 3),
        chunk(
            [
                {
                    "functionCall": {"name": "add", "args": {"a": 2, "b": 3}},
                    "thoughtSignature": "SIG",
                },
                {"functionCall": {"name": "multiply", "args": {"a": 2, "b": 3}}},
            ],
            125,
            5,
        ),
        chunk([{"text": ""}], 121, 5, finishReason="STOP"),
    ]
)


def run(
    pieces: Sequence[bytes], *, include_reasoning: bool = True
) -> list[pb.StreamCompleteResponse]:
    decoder = SSEDecoder()
    assembler = PROVIDER.stream_assembler(ROUTE, include_reasoning)
    out: list[pb.StreamCompleteResponse] = []
    for piece in pieces:
        for event in decoder.feed(piece):
            out.extend(assembler.on_event(event))
        assert not assembler.done  # Gemini's stream ends only at the end of the body
    assembler.on_end(decoder.end())
    out.extend(assembler.finish())
    return out


def summary(
    events: list[pb.StreamCompleteResponse],
) -> tuple[str, str, list[str], pb.CompletionDone]:
    content = "".join(e.content_delta.text for e in events if e.HasField("content_delta"))
    reasoning = "".join(e.reasoning_delta.text for e in events if e.HasField("reasoning_delta"))
    calls = [
        f"{e.tool_call.id}:{e.tool_call.name}:{e.tool_call.arguments}"
        for e in events
        if e.HasField("tool_call")
    ]
    assert events[-1].HasField("done")
    return content, reasoning, calls, events[-1].done


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


EXPECTED = summary(run([STREAM]))


def test_one_buffer() -> None:
    content, reasoning, calls, done = EXPECTED
    assert content == "Let me add and multiply."
    assert reasoning == "Thinking é…"
    assert calls == ['call_rid7_0:add:{"a":2,"b":3}', 'call_rid7_1:multiply:{"a":2,"b":3}']
    assert done.id == "rid7"
    assert done.model == "gemini/gemini-2.5-pro"
    assert done.finish_reason == common.FINISH_REASON_TOOL_CALLS
    assert done.native_finish_reason == "STOP"
    # The last usageMetadata wins, though its prompt count is lower than before.
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (
        121,
        10,
        131,
    )
    assert done.usage.reasoning_tokens == 5
    assert [(d.signature, d.tool_call_id) for d in done.reasoning_details] == [
        ("SIG", "call_rid7_0")
    ]
    assert all(d.provider == common.PROVIDER_GEMINI for d in done.reasoning_details)


def test_every_single_byte_split_gives_the_same_answer() -> None:
    for at in range(1, len(STREAM)):
        assert summary(run([STREAM[:at], STREAM[at:]])) == EXPECTED


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=30))
def test_any_cut_points_give_the_same_answer(points: list[int]) -> None:
    assert summary(run(cut(STREAM, points))) == EXPECTED


def test_reasoning_is_dropped_when_excluded() -> None:
    _, reasoning, _, _ = summary(run([STREAM], include_reasoning=False))
    assert reasoning == ""


def test_a_last_chunk_without_its_blank_line_still_counts() -> None:
    assert summary(run([STREAM.removesuffix(b"\r\n\r\n")])) == EXPECTED


def test_end_of_body_without_a_finish_reason_is_truncated() -> None:
    last = STREAM.rindex(b"data: ")
    with pytest.raises(GatewayError) as caught:
        run([STREAM[:last]])
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_STREAM_TRUNCATED
    with pytest.raises(GatewayError) as caught:
        run([STREAM[: last + 20]])  # the finish chunk cut in the middle
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_STREAM_TRUNCATED


def test_an_error_chunk_ends_the_stream_with_its_reason() -> None:
    error = (
        b'data: {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}\r\n\r\n'
    )
    with pytest.raises(GatewayError) as caught:
        run([STREAM[: STREAM.index(b"data: ", 10)], error])
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_UNAVAILABLE
    assert "overloaded" in caught.value.message


def test_a_blocked_prompt_in_a_stream_is_content_flagged() -> None:
    blocked = b'data: {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}\r\n\r\n'
    with pytest.raises(GatewayError) as caught:
        run([blocked])
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_CONTENT_FLAGGED
    assert caught.value.metadata["upstreamCode"] == "PROHIBITED_CONTENT"


def test_a_malformed_function_call_finish_is_an_error() -> None:
    with pytest.raises(GatewayError) as caught:
        run([chunk([], 5, 0, finishReason="MALFORMED_FUNCTION_CALL")])
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_INVALID_TOOL_CALL


def test_a_safety_stop_with_no_content_is_an_answer() -> None:
    events = run([b'data: {"candidates": [{"finishReason": "SAFETY", "index": 0}]}\r\n\r\n'])
    assert [e.WhichOneof("event") for e in events] == ["done"]
    assert events[0].done.finish_reason == common.FINISH_REASON_CONTENT_FILTER


def test_the_key_is_redacted_from_what_the_stream_passes_on() -> None:
    leaky = chunk([{"text": f"key {KEY}"}], 1, 1, finishReason="STOP").replace(
        b"rid7", KEY.encode()
    )
    content, _, _, done = summary(run([leaky]))
    assert KEY not in content
    assert KEY not in done.id


def test_an_error_in_a_last_chunk_without_its_blank_line_keeps_its_reason() -> None:
    # Not reported as a truncation: the chunk is whole, and says what failed.
    error = (
        b'data: {"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}'
    )
    with pytest.raises(GatewayError) as caught:
        run([chunk([{"text": "Hi"}], 3, 1), error])
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_RATE_LIMITED
