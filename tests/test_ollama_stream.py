"""OllamaStreamAssembler: NDJSON lines -> the gateway's stream events, however they are cut."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import grpc
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmgateway.server.config import OllamaSettings, Secret, Timeouts
from llmgateway.server.errors import GatewayError
from llmgateway.server.providers.assembly import SpanAnnotating, coalesce
from llmgateway.server.providers.ndjson import NDJSONDecoder
from llmgateway.server.providers.ollama import OllamaProvider
from llmgateway.server.providers.ollama_stream import OllamaStreamAssembler
from llmgateway.server.providers.redaction import REDACTED
from llmgateway.server.routing.router import Route
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Iterator

ROUTE = Route(common.PROVIDER_OLLAMA, "qwen3:8b", "ollama/qwen3:8b")
KEY = "ollama-hosted-test-key-0123456789"
# Built once: the provider's client is never used by these tests.
PROVIDER = OllamaProvider(OllamaSettings(api_key=Secret(KEY)), Timeouts())


def line(message: dict[str, Any] | None = None, **fields: Any) -> bytes:
    payload: dict[str, Any] = {"model": "qwen3:8b", "created_at": "2026-01-05T10:00:00Z"}
    if message is not None:
        payload["message"] = {"role": "assistant", **message}
    payload.setdefault("done", False)
    payload.update(fields)
    return orjson.dumps(payload) + b"\n"


DONE = line(
    {"content": ""},
    done=True,
    done_reason="stop",
    total_duration=246778792,
    load_duration=39831125,
    prompt_eval_count=25,
    prompt_eval_duration=18102375,
    eval_count=9,
    eval_duration=104431583,
)
# Reasoning, text with a multi-byte character, a tool call with an id and one
# without, then the done line: what a thinking model that calls tools sends.
BODY = b"".join(
    [
        line({"content": "", "thinking": "The user wants "}),
        line({"content": "", "thinking": "the weather."}),
        line({"content": "Let me check \u2019"}),
        line({"content": "the weather."}),
        line(
            {
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_x1",
                        "function": {"index": 0, "name": "weather", "arguments": {"city": "Oslo"}},
                    },
                    {"function": {"index": 1, "name": "time", "arguments": {}}},
                ],
            }
        ),
        DONE,
    ]
)


def assembler(*, include_reasoning: bool = True) -> OllamaStreamAssembler:
    return OllamaStreamAssembler(PROVIDER, ROUTE, include_reasoning=include_reasoning, nonce="n0")


def run(
    pieces: Iterator[bytes] | list[bytes],
    target: OllamaStreamAssembler | None = None,
    **options: bool,
) -> list[pb.StreamCompleteResponse]:
    """The core's stream loop in small: decode each read, coalesce its events."""
    if target is None:
        target = assembler(**options)
    decoder = NDJSONDecoder()
    out: list[pb.StreamCompleteResponse] = []
    for piece in pieces:
        out.extend(coalesce([e for f in decoder.feed(piece) for e in target.on_event(f)]))
        if target.done:
            break
    else:
        target.on_end(decoder.end())
    out.extend(target.finish())
    return out


def summary(events: list[pb.StreamCompleteResponse]) -> dict[str, Any]:
    """What the caller ends up with, independent of how deltas were grouped."""
    done = [e.done for e in events if e.HasField("done")]
    assert len(done) == 1
    assert events[-1].HasField("done")
    return {
        "content": "".join(e.content_delta.text for e in events if e.HasField("content_delta")),
        "reasoning": "".join(
            e.reasoning_delta.text for e in events if e.HasField("reasoning_delta")
        ),
        "calls": [
            (e.tool_call.id, e.tool_call.name, e.tool_call.arguments)
            for e in events
            if e.HasField("tool_call")
        ],
        "done": done[0],
    }


EXPECTED = {
    "content": "Let me check \u2019the weather.",
    "reasoning": "The user wants the weather.",
    "calls": [("call_x1", "weather", '{"city":"Oslo"}'), ("call_n0_1", "time", "{}")],
}


def check(events: list[pb.StreamCompleteResponse]) -> None:
    got = summary(events)
    done = got.pop("done")
    assert got == EXPECTED
    assert done.model == "ollama/qwen3:8b"
    assert done.provider == common.PROVIDER_OLLAMA
    assert done.upstream_provider == "Ollama"
    assert done.finish_reason == common.FINISH_REASON_TOOL_CALLS
    assert done.native_finish_reason == "stop"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (25, 9)
    assert done.usage.total_tokens == 34


def test_one_buffer() -> None:
    check(run([BODY]))


def test_every_single_byte_split() -> None:
    for at in range(len(BODY) + 1):
        check(run([BODY[:at], BODY[at:]]))


def test_byte_by_byte() -> None:
    check(run(BODY[i : i + 1] for i in range(len(BODY))))


@given(st.lists(st.integers(min_value=0, max_value=len(BODY)), max_size=30))
def test_hypothesis_cut_points(offsets: list[int]) -> None:
    edges = [0, *sorted(set(offsets)), len(BODY)]
    check(run([BODY[a:b] for a, b in itertools.pairwise(edges)]))


def test_reasoning_is_left_out_when_excluded() -> None:
    got = summary(run([BODY], include_reasoning=False))
    assert got["reasoning"] == ""
    assert got["content"] == EXPECTED["content"]


def test_text_only_stream_ends_on_stop() -> None:
    body = line({"content": "Hi"}) + line({"content": "!"}) + DONE
    got = summary(run([body]))
    assert got["content"] == "Hi!"
    assert got["done"].finish_reason == common.FINISH_REASON_STOP


def test_length() -> None:
    body = line({"content": "Hi"}) + line({"content": ""}, done=True, done_reason="length")
    done = summary(run([body]))["done"]
    assert (done.finish_reason, done.native_finish_reason) == (
        common.FINISH_REASON_LENGTH,
        "length",
    )
    # No counts on the done line: no usage, rather than zeros that look measured.
    assert not done.HasField("usage")


def test_the_done_line_without_its_newline_still_ends_the_stream() -> None:
    body = line({"content": "Hi"}) + DONE.rstrip(b"\n")
    got = summary(run([body]))
    assert got["content"] == "Hi"
    assert got["done"].usage.completion_tokens == 9


def test_nothing_after_the_done_line_counts() -> None:
    target = assembler()
    decoder = NDJSONDecoder()
    events = [e for f in decoder.feed(DONE + line({"content": "late"})) for e in target.on_event(f)]
    assert [e.WhichOneof("event") for e in events] == ["done"]


def test_no_done_line_is_truncated_and_what_came_first_still_came() -> None:
    target = assembler()
    decoder = NDJSONDecoder()
    events = [e for f in decoder.feed(line({"content": "Hi"})) for e in target.on_event(f)]
    assert [e.content_delta.text for e in events] == ["Hi"]
    target.on_end(decoder.end())
    with pytest.raises(GatewayError) as caught:
        target.finish()
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_STREAM_TRUNCATED


def test_an_error_line_after_content_is_an_error_in_ollamas_words() -> None:
    target = assembler()
    first = target.on_event(NDJSONDecoder().feed(line({"content": "Hi"}))[0])
    assert first[0].content_delta.text == "Hi"
    error = NDJSONDecoder().feed(b'{"error":"an error was encountered while running the model"}\n')
    with pytest.raises(GatewayError) as caught:
        target.on_event(error[0])
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_UNAVAILABLE
    assert "an error was encountered while running the model" in caught.value.message


def test_an_error_as_the_only_line() -> None:
    frame = NDJSONDecoder().feed(b'{"error":"model \'x\' not found"}\n')[0]
    with pytest.raises(GatewayError) as caught:
        assembler().on_event(frame)
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND


@pytest.mark.parametrize(
    "raw",
    [b'{"message": {"content": \n', b"[1, 2]\n", b'{"message": "text", "done": false}\n'],
)
def test_a_broken_line_is_malformed(raw: bytes) -> None:
    frame = NDJSONDecoder().feed(raw)[0]
    with pytest.raises((GatewayError, TypeError)) as caught:
        assembler().on_event(frame)
    if isinstance(caught.value, GatewayError):
        assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_MALFORMED_RESPONSE


def test_the_key_is_scrubbed_from_everything_the_stream_passes_on() -> None:
    body = b"".join(
        [
            line({"content": f"key {KEY}", "thinking": f"think {KEY}"}),
            line(
                {
                    "content": "",
                    "tool_calls": [
                        {"id": KEY, "function": {"name": f"f{KEY}", "arguments": {"k": KEY}}}
                    ],
                }
            ),
            line({"content": ""}, model=KEY, done=True, done_reason=KEY, eval_count=1),
        ]
    )
    events = run([body])
    assert KEY.encode() not in b"".join(e.SerializeToString() for e in events)
    got = summary(events)
    assert REDACTED in got["content"]
    assert REDACTED in got["reasoning"]


def test_the_done_lines_timings_are_the_assemblers_span_attributes() -> None:
    target = assembler()
    # The core's stream loop asks for them once finish() returned.
    assert isinstance(target, SpanAnnotating)
    assert target.span_attributes() == {}
    run([BODY], target)
    assert target.span_attributes() == {
        "llmgateway.ollama.total_duration_ns": 246778792,
        "llmgateway.ollama.load_duration_ns": 39831125,
        "llmgateway.ollama.prompt_eval_duration_ns": 18102375,
        "llmgateway.ollama.eval_duration_ns": 104431583,
    }
    # Hosted Ollama may send only some; each stream keeps its own.
    other = assembler()
    run([line({"content": "x"}) + line({"content": ""}, done=True, total_duration=5)], other)
    assert other.span_attributes() == {"llmgateway.ollama.total_duration_ns": 5}
    assert target.span_attributes()["llmgateway.ollama.total_duration_ns"] == 246778792


def test_a_unary_answers_timings_are_its_span_attributes() -> None:
    payload = orjson.loads(DONE)
    assert PROVIDER.unary_span_attributes(payload) == {
        "llmgateway.ollama.total_duration_ns": 246778792,
        "llmgateway.ollama.load_duration_ns": 39831125,
        "llmgateway.ollama.prompt_eval_duration_ns": 18102375,
        "llmgateway.ollama.eval_duration_ns": 104431583,
    }
    # Nonsense timings are left out, not passed on.
    payload.update(total_duration=-1, load_duration=True, eval_duration="9")
    assert PROVIDER.unary_span_attributes(payload) == {
        "llmgateway.ollama.prompt_eval_duration_ns": 18102375
    }


def test_a_body_cut_in_the_middle_of_a_line_is_truncated_not_malformed() -> None:
    # The connection closed cleanly mid-line: the stream is unfinished (a
    # health failure for the breaker), not an upstream that broke its format.
    body = line({"content": "Hi"}) + DONE[: len(DONE) // 2]
    with pytest.raises(GatewayError) as caught:
        run([body])
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_STREAM_TRUNCATED
