"""OpenAI's and Groq's streams through the shared assembler: refusals, usage placement, splits."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmgateway.server.config import GroqSettings, OpenAISettings, Secret, Timeouts
from llmgateway.server.errors import GatewayError
from llmgateway.server.providers.assembly import coalesce
from llmgateway.server.providers.groq import GroqProvider
from llmgateway.server.providers.openai import OpenAIProvider
from llmgateway.server.providers.sse import SSEDecoder
from llmgateway.server.routing.router import Route
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmgateway.server.providers.openai_compatible.core import OpenAICompatibleProvider

OPENAI_KEY = "sk-proj-streamtestkey0000000000000"
GROQ_KEY = "gsk_streamtestkey000000000000000000"
OPENAI_ROUTE = Route(common.PROVIDER_OPENAI, "gpt-5", "openai/gpt-5")
GROQ_ROUTE = Route(common.PROVIDER_GROQ, "openai/gpt-oss-120b", "groq/openai/gpt-oss-120b")


# One of each for the module (hypothesis runs many examples per test). They
# never send a request, so no connection is ever opened for closing to release.
_OPENAI = OpenAIProvider(OpenAISettings(api_key=Secret(OPENAI_KEY)), Timeouts())
_GROQ = GroqProvider(GroqSettings(api_key=Secret(GROQ_KEY)), Timeouts())


@pytest.fixture
def openai() -> OpenAIProvider:
    return _OPENAI


@pytest.fixture
def groq() -> GroqProvider:
    return _GROQ


def sse(payload: Any, name: str = "") -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


def oai_chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return sse(
        {
            "id": "chatcmpl-X1",
            "object": "chat.completion.chunk",
            "model": "gpt-5-2025-08-07",
            "choices": choices,
            **extra,
        }
    )


USAGE = {
    "prompt_tokens": 13,
    "completion_tokens": 11,
    "total_tokens": 24,
    "prompt_tokens_details": {"cached_tokens": 3},
    "completion_tokens_details": {"reasoning_tokens": 6},
}
# As OpenAI sends it with include_usage and moderation on: `usage: null` on every
# chunk, the usage chunk with empty choices, then another empty chunk with usage null.
OPENAI_STREAM = b"".join(
    [
        oai_chunk({"role": "assistant", "content": "", "refusal": None}, usage=None),
        oai_chunk({"content": "Pa"}, usage=None),
        oai_chunk({"content": "ris — ok."}, usage=None),
        oai_chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_A",
                        "type": "function",
                        "function": {"name": "add", "arguments": ""},
                    }
                ]
            },
            usage=None,
        ),
        oai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a": '}}]}, usage=None),
        oai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "2}"}}]}, usage=None),
        oai_chunk({}, "tool_calls", usage=None),
        oai_chunk(None, usage=USAGE),
        oai_chunk(None, usage=None),
        b"data: [DONE]\n\n",
    ]
)
REFUSAL_STREAM = b"".join(
    [
        oai_chunk({"role": "assistant", "content": None, "refusal": ""}),
        oai_chunk({"refusal": "I can't "}),
        oai_chunk({"refusal": "help with that."}),
        oai_chunk({}, "stop"),
        oai_chunk(None, usage=USAGE),
        b"data: [DONE]\n\n",
    ]
)


def groq_chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return sse(
        {
            "id": "chatcmpl-g1",
            "object": "chat.completion.chunk",
            "model": "openai/gpt-oss-120b",
            "choices": choices,
            **extra,
        }
    )


def groq_usage(prompt: int, completion: int, reasoning: int = 0) -> dict[str, Any]:
    return {
        "queue_time": 0.1,
        "prompt_tokens": prompt,
        "prompt_time": 0.01,
        "completion_tokens": completion,
        "completion_time": 0.02,
        "total_tokens": prompt + completion,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


# As Groq sends it: usage in x_groq.usage and top-level usage on the finish chunk,
# and again in the include_usage chunk (the same counts three times).
GROQ_STREAM = b"".join(
    [
        groq_chunk({"role": "assistant", "content": ""}, x_groq={"id": "req_01"}),
        groq_chunk({"reasoning": "We need ", "channel": "analysis"}),
        groq_chunk({"reasoning": "a tool.", "channel": "analysis"}),
        groq_chunk(
            {
                "tool_calls": [
                    {
                        "id": "functions.add:0",
                        "type": "function",
                        "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'},
                        "index": 0,
                    }
                ]
            }
        ),
        groq_chunk(
            {},
            "tool_calls",
            x_groq={"id": "req_01", "usage": groq_usage(304, 49, 23)},
            usage=groq_usage(304, 49, 23),
        ),
        groq_chunk(None, usage=groq_usage(304, 49, 23), service_tier="on_demand"),
        b"data: [DONE]\n\n",
    ]
)


def assemble(
    provider: OpenAICompatibleProvider,
    route: Route,
    pieces: list[bytes],
    include_reasoning: bool = True,
) -> list[pb.StreamCompleteResponse]:
    """The events a stream arriving in `pieces` produces, as the core's loop makes them."""
    decoder = SSEDecoder()
    assembler = provider.stream_assembler(route, include_reasoning)
    out: list[pb.StreamCompleteResponse] = []
    for piece in pieces:
        batch: list[pb.StreamCompleteResponse] = []
        for item in decoder.feed(piece):
            batch.extend(assembler.on_event(item))
        out.extend(coalesce(batch))
        if assembler.done:
            break
    else:
        assembler.on_end(decoder.end())
    out.extend(assembler.finish())
    return out


def merged(events: list[pb.StreamCompleteResponse]) -> list[pb.StreamCompleteResponse]:
    """Deltas joined, so splits that batch differently compare equal."""
    return coalesce(events)


def cut(data: bytes, offsets: list[int]) -> list[bytes]:
    points = sorted({o % (len(data) + 1) for o in offsets})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def done_of(events: list[pb.StreamCompleteResponse]) -> pb.CompletionDone:
    assert events[-1].WhichOneof("event") == "done"
    return events[-1].done


def test_openai_usage_survives_a_later_usage_null_chunk(openai: OpenAIProvider) -> None:
    done = done_of(assemble(openai, OPENAI_ROUTE, [OPENAI_STREAM]))
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (13, 11)
    assert (done.usage.cached_tokens, done.usage.reasoning_tokens) == (3, 6)
    assert done.finish_reason == common.FINISH_REASON_TOOL_CALLS
    assert done.model == "openai/gpt-5-2025-08-07"
    assert done.refusal == ""


def test_openai_tool_call_fragments_join_by_index(openai: OpenAIProvider) -> None:
    events = assemble(openai, OPENAI_ROUTE, [OPENAI_STREAM])
    calls = [e.tool_call for e in events if e.WhichOneof("event") == "tool_call"]
    assert [(c.id, c.name, c.arguments) for c in calls] == [("call_A", "add", '{"a": 2}')]
    text = "".join(e.content_delta.text for e in events if e.WhichOneof("event") == "content_delta")
    assert text == "Paris — ok."


def test_a_streamed_refusal_arrives_whole_in_done(openai: OpenAIProvider) -> None:
    events = assemble(openai, OPENAI_ROUTE, [REFUSAL_STREAM])
    assert [e.WhichOneof("event") for e in events] == ["done"]
    assert done_of(events).refusal == "I can't help with that."
    assert done_of(events).finish_reason == common.FINISH_REASON_STOP


def test_a_refusal_quoting_the_key_is_scrubbed(openai: OpenAIProvider) -> None:
    stream = (
        oai_chunk({"refusal": f"no {OPENAI_KEY}"}) + oai_chunk({}, "stop") + b"data: [DONE]\n\n"
    )
    assert OPENAI_KEY not in done_of(assemble(openai, OPENAI_ROUTE, [stream])).refusal


def test_groq_usage_is_taken_once_never_summed(groq: GroqProvider) -> None:
    events = assemble(groq, GROQ_ROUTE, [GROQ_STREAM])
    done = done_of(events)
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (304, 49)
    assert done.usage.total_tokens == 353
    assert done.usage.reasoning_tokens == 23
    calls = [e.tool_call for e in events if e.WhichOneof("event") == "tool_call"]
    assert [(c.id, c.name) for c in calls] == [("functions.add:0", "add")]
    reasoning = "".join(
        e.reasoning_delta.text for e in events if e.WhichOneof("event") == "reasoning_delta"
    )
    assert reasoning == "We need a tool."
    # x_groq.id is the request's id, not the completion's.
    assert done.id == "chatcmpl-g1"


def test_groq_usage_only_in_x_groq_is_used(groq: GroqProvider) -> None:
    stream = (
        groq_chunk({"content": "hi"})
        + groq_chunk({}, "stop", x_groq={"id": "req_1", "usage": groq_usage(20, 4)})
        + b"data: [DONE]\n\n"
    )
    done = done_of(assemble(groq, GROQ_ROUTE, [stream]))
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (20, 4)


def test_groq_usage_last_one_wins(groq: GroqProvider) -> None:
    stream = (
        groq_chunk({"content": "hi"})
        + groq_chunk({}, "stop", x_groq={"id": "req_1", "usage": groq_usage(20, 4)})
        + groq_chunk(None, usage=groq_usage(21, 5))
        + b"data: [DONE]\n\n"
    )
    done = done_of(assemble(groq, GROQ_ROUTE, [stream]))
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (21, 5)


def test_groq_excluded_reasoning_is_not_passed_on(groq: GroqProvider) -> None:
    events = assemble(groq, GROQ_ROUTE, [GROQ_STREAM], include_reasoning=False)
    assert not [e for e in events if e.WhichOneof("event") == "reasoning_delta"]


def test_groq_tool_use_failed_mid_stream_fails_after_the_reasoning(groq: GroqProvider) -> None:
    stream = groq_chunk({"reasoning": "Let me call it.", "channel": "analysis"}) + sse(
        {
            "error": {
                "message": "Tool call validation failed: parameters did not match schema",
                "type": "invalid_request_error",
                "code": "tool_use_failed",
                "failed_generation": '{"name": "f", "arguments": {}}',
                "status_code": 400,
            }
        },
        "error",
    )
    decoder = SSEDecoder()
    assembler = groq.stream_assembler(GROQ_ROUTE, True)
    items = decoder.feed(stream)
    first = assembler.on_event(items[0])
    assert first[0].reasoning_delta.text == "Let me call it."
    with pytest.raises(GatewayError) as caught:
        assembler.on_event(items[1])
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_INVALID_TOOL_CALL
    assert "Tool call validation failed" in caught.value.message


@pytest.mark.parametrize(
    ("form", "payload"),
    [
        ("event: error", {"error": {"message": "The server had an error", "type": "server_error"}}),
        (
            "data: {error}",
            {"error": {"message": "The server had an error", "type": "server_error"}},
        ),
    ],
)
def test_openai_in_band_errors_fail_the_stream(
    openai: OpenAIProvider, form: str, payload: dict[str, Any]
) -> None:
    stream = oai_chunk({"content": "Hi"}) + sse(payload, "error" if form == "event: error" else "")
    with pytest.raises(GatewayError) as caught:
        assemble(openai, OPENAI_ROUTE, [stream])
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_UNAVAILABLE


def test_a_stream_without_done_is_truncated(openai: OpenAIProvider) -> None:
    with pytest.raises(GatewayError) as caught:
        assemble(openai, OPENAI_ROUTE, [OPENAI_STREAM.removesuffix(b"data: [DONE]\n\n")])
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_STREAM_TRUNCATED


STREAMS: list[tuple[str, Callable[[OpenAIProvider, GroqProvider], tuple[Any, Route]], bytes]] = [
    ("openai", lambda o, g: (o, OPENAI_ROUTE), OPENAI_STREAM),
    ("refusal", lambda o, g: (o, OPENAI_ROUTE), REFUSAL_STREAM),
    ("groq", lambda o, g: (g, GROQ_ROUTE), GROQ_STREAM),
]


@pytest.mark.parametrize(("name", "pick", "data"), STREAMS, ids=[s[0] for s in STREAMS])
def test_every_single_byte_split_gives_the_same_events(
    openai: OpenAIProvider, groq: GroqProvider, name: str, pick: Any, data: bytes
) -> None:
    provider, route = pick(openai, groq)
    whole = merged(assemble(provider, route, [data]))
    for at in range(1, len(data)):
        assert merged(assemble(provider, route, [data[:at], data[at:]])) == whole, at
    assert merged(assemble(provider, route, [data[i : i + 1] for i in range(len(data))])) == whole


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(range(len(STREAMS))), st.lists(st.integers(min_value=0), max_size=40))
def test_any_cut_points_give_the_same_events(index: int, offsets: list[int]) -> None:
    _, pick, data = STREAMS[index]
    provider, route = pick(_OPENAI, _GROQ)
    assert merged(assemble(provider, route, cut(data, offsets))) == merged(
        assemble(provider, route, [data])
    )
