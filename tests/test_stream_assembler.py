"""StreamAssembler: upstream chat-completion chunks -> the gateway's stream events."""

from __future__ import annotations

from typing import Any

import grpc
import orjson
import pytest

from llmgateway.server.errors import GatewayError
from llmgateway.server.providers.assembly import coalesce
from llmgateway.server.providers.openai_compatible.stream import StreamAssembler
from llmgateway.server.providers.sse import ServerSentEvent
from llmgateway.server.routing.router import Route
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

OPENROUTER_ROUTE = Route(
    common.PROVIDER_OPENROUTER, "openai/gpt-4o-mini", "openrouter/openai/gpt-4o-mini"
)
ZAI_ROUTE = Route(common.PROVIDER_ZAI, "glm-4.7", "zai/glm-4.7")
DONE = ServerSentEvent(data=b"[DONE]")


def event(payload: Any, name: str = "") -> ServerSentEvent:
    return ServerSentEvent(data=orjson.dumps(payload), event=name)


def or_chunk(delta: dict[str, Any] | None = None, **choice: Any) -> ServerSentEvent:
    """An OpenRouter chunk with one choice."""
    return event(
        {
            "id": "gen-1739458867-abc",
            "provider": "OpenAI",
            "model": "openai/gpt-4o-mini",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta or {}, **choice}],
        }
    )


def zai_chunk(delta: dict[str, Any] | None = None, **extra: Any) -> ServerSentEvent:
    """A Z.AI chunk with one choice; `usage` goes on the chunk, the rest on the choice."""
    usage = extra.pop("usage", None)
    chunk: dict[str, Any] = {
        "id": "20250926190540c29952ed24ae4570",
        "model": "glm-4.7",
        "choices": [{"index": 0, "delta": {"role": "assistant", **(delta or {})}, **extra}],
    }
    if usage is not None:
        chunk["usage"] = usage
    return event(chunk)


def feed(
    assembler: StreamAssembler, events: list[ServerSentEvent]
) -> list[pb.StreamCompleteResponse]:
    out: list[pb.StreamCompleteResponse] = []
    for item in events:
        out.extend(assembler.on_event(item))
    return out


def run(
    assembler: StreamAssembler, events: list[ServerSentEvent]
) -> list[pb.StreamCompleteResponse]:
    out = feed(assembler, events)
    out.extend(assembler.finish())
    return out


def kinds(responses: list[pb.StreamCompleteResponse]) -> list[tuple[str, str]]:
    """(event kind, text) pairs for the delta events."""
    out: list[tuple[str, str]] = []
    for response in responses:
        kind = response.WhichOneof("event")
        if kind == "content_delta":
            out.append((kind, response.content_delta.text))
        elif kind == "reasoning_delta":
            out.append((kind, response.reasoning_delta.text))
        else:
            out.append((str(kind), ""))
    return out


def final(responses: list[pb.StreamCompleteResponse]) -> pb.CompletionDone:
    assert responses[-1].WhichOneof("event") == "done"
    assert sum(r.HasField("done") for r in responses) == 1
    return responses[-1].done


def tool_calls(responses: list[pb.StreamCompleteResponse]) -> list[tuple[str, str, str]]:
    return [
        (r.tool_call.id, r.tool_call.name, r.tool_call.arguments)
        for r in responses
        if r.HasField("tool_call")
    ]


# -- deltas ---------------------------------------------------------------------------


async def test_openrouter_content_and_reasoning_in_order(openrouter):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)
    out = run(
        assembler,
        [
            or_chunk({"role": "assistant", "content": ""}),
            or_chunk({"reasoning": "Think"}),
            or_chunk({"reasoning": "ing."}),
            or_chunk({"content": "Hel"}),
            or_chunk({"content": "lo"}),
            or_chunk({"content": ""}, finish_reason="stop", native_finish_reason="stop"),
            DONE,
        ],
    )
    assert kinds(out) == [
        ("reasoning_delta", "Think"),
        ("reasoning_delta", "ing."),
        ("content_delta", "Hel"),
        ("content_delta", "lo"),
        ("done", ""),
    ]
    done = final(out)
    assert done.id == "gen-1739458867-abc"
    assert done.model == "openrouter/openai/gpt-4o-mini"
    assert done.provider == common.PROVIDER_OPENROUTER
    assert done.upstream_provider == "OpenAI"
    assert done.finish_reason == common.FINISH_REASON_STOP
    assert done.native_finish_reason == "stop"
    assert not done.HasField("usage")  # the upstream sent none


async def test_reasoning_before_content_within_one_chunk(openrouter):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)
    out = feed(assembler, [or_chunk({"reasoning": "r", "content": "c"})])
    assert kinds(out) == [("reasoning_delta", "r"), ("content_delta", "c")]


async def test_openrouter_reads_reasoning_content_as_a_fallback(openrouter):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)
    out = feed(assembler, [or_chunk({"reasoning_content": "via litellm-style field"})])
    assert kinds(out) == [("reasoning_delta", "via litellm-style field")]


async def test_empty_and_null_deltas_produce_no_events(openrouter):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)
    out = feed(
        assembler,
        [
            or_chunk({"role": "assistant", "content": ""}),
            or_chunk({"content": None, "reasoning": None}),
            or_chunk({"content": "", "reasoning": ""}),
            or_chunk({}),
            event({"id": "x", "choices": []}),
        ],
    )
    assert out == []


async def test_fallback_model_and_provider_are_reported(openrouter):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)
    out = run(
        assembler,
        [
            event(
                {
                    "id": "gen-2",
                    "model": "anthropic/claude-sonnet-4.5",
                    "provider": "Anthropic",
                    "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}],
                }
            ),
            DONE,
        ],
    )
    done = final(out)
    assert done.model == "openrouter/anthropic/claude-sonnet-4.5"
    assert done.upstream_provider == "Anthropic"


async def test_include_reasoning_false_drops_reasoning_only(zai):
    assembler = StreamAssembler(zai, ZAI_ROUTE, include_reasoning=False)
    out = run(
        assembler,
        [
            zai_chunk({"reasoning_content": "The"}),
            zai_chunk({"reasoning_content": " person"}),
            zai_chunk({"content": "Ol", "reasoning_content": ""}),
            zai_chunk({"content": "á"}, finish_reason="stop"),
            DONE,
        ],
    )
    assert kinds(out) == [("content_delta", "Ol"), ("content_delta", "á"), ("done", "")]


# -- finish reasons and usage -----------------------------------------------------------


async def test_zai_repeated_finish_reason_last_wins_and_usage_on_the_finish_chunk(zai):
    assembler = StreamAssembler(zai, ZAI_ROUTE, include_reasoning=True)
    out = run(
        assembler,
        [
            zai_chunk({"reasoning_content": "The"}),
            zai_chunk({"content": "Ol", "reasoning_content": ""}),
            zai_chunk({"content": "á", "reasoning_content": ""}),
            zai_chunk(
                {
                    "tool_calls": [
                        {
                            "id": "call_51a97502d6444997b56fd204",
                            "index": 0,
                            "type": "function",
                            "function": {
                                "name": "weather",
                                "arguments": '{"location": "Florence,Italy"}',
                            },
                        }
                    ]
                },
                finish_reason="stop",
            ),
            zai_chunk(
                {"content": ""},
                finish_reason="tool_calls",
                usage={
                    "prompt_tokens": 179,
                    "completion_tokens": 70,
                    "total_tokens": 249,
                    "prompt_tokens_details": {"cached_tokens": 43},
                },
            ),
            DONE,
        ],
    )
    assert kinds(out) == [
        ("reasoning_delta", "The"),
        ("content_delta", "Ol"),
        ("content_delta", "á"),
        ("tool_call", ""),
        ("done", ""),
    ]
    assert tool_calls(out) == [
        ("call_51a97502d6444997b56fd204", "weather", '{"location": "Florence,Italy"}')
    ]
    done = final(out)
    assert done.finish_reason == common.FINISH_REASON_TOOL_CALLS
    assert done.native_finish_reason == "tool_calls"
    assert done.id == "20250926190540c29952ed24ae4570"
    assert done.model == "zai/glm-4.7"
    assert done.upstream_provider == "Z.AI"
    assert done.usage.prompt_tokens == 179
    assert done.usage.completion_tokens == 70
    assert done.usage.total_tokens == 249
    assert done.usage.cached_tokens == 43
    assert not done.usage.HasField("cost_usd")  # Z.AI reports no cost


async def test_openrouter_usage_after_the_finish_chunk_reaches_done(openrouter):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)
    before_done = feed(
        assembler,
        [
            or_chunk({"content": "Hello"}),
            or_chunk({"content": ""}, finish_reason="stop", native_finish_reason="stop"),
            event(
                {
                    "id": "gen-1739458867-abc",
                    "provider": "OpenAI",
                    "model": "openai/gpt-4o-mini",
                    "choices": [],
                    "usage": {
                        "prompt_tokens": 13,
                        "completion_tokens": 2,
                        "total_tokens": 15,
                        "cost": 0.0000027,
                        "is_byok": False,
                        "prompt_tokens_details": {"cached_tokens": 4},
                        "completion_tokens_details": {"reasoning_tokens": 1},
                    },
                }
            ),
        ],
    )
    assert kinds(before_done) == [("content_delta", "Hello")]
    assert not assembler.done  # the finish chunk is not the end: usage may follow
    out = run(assembler, [DONE])
    done = final(out)
    assert done.finish_reason == common.FINISH_REASON_STOP
    assert done.usage.prompt_tokens == 13
    assert done.usage.completion_tokens == 2
    assert done.usage.total_tokens == 15
    assert done.usage.cached_tokens == 4
    assert done.usage.reasoning_tokens == 1
    assert done.usage.HasField("cost_usd")
    assert done.usage.cost_usd == pytest.approx(0.0000027)


async def test_openrouter_native_finish_reason_is_kept(openrouter):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)
    out = run(
        assembler,
        [or_chunk({}, finish_reason="tool_calls", native_finish_reason="tool_use"), DONE],
    )
    done = final(out)
    assert done.finish_reason == common.FINISH_REASON_TOOL_CALLS
    assert done.native_finish_reason == "tool_use"


@pytest.mark.parametrize(
    ("native", "reason"),
    [
        ("stop", common.FINISH_REASON_STOP),
        ("length", common.FINISH_REASON_LENGTH),
        ("tool_calls", common.FINISH_REASON_TOOL_CALLS),
        ("content_filter", common.FINISH_REASON_CONTENT_FILTER),
        ("something_new", common.FINISH_REASON_OTHER),
    ],
)
async def test_common_finish_reasons(openrouter, native, reason):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)
    done = final(run(assembler, [or_chunk({}, finish_reason=native), DONE]))
    assert done.finish_reason == reason
    assert done.native_finish_reason == native


async def test_zai_sensitive_is_content_filter(zai):
    assembler = StreamAssembler(zai, ZAI_ROUTE, include_reasoning=True)
    done = final(run(assembler, [zai_chunk({"content": "x"}, finish_reason="sensitive"), DONE]))
    assert done.finish_reason == common.FINISH_REASON_CONTENT_FILTER
    assert done.native_finish_reason == "sensitive"


async def test_zai_context_window_exceeded_is_length_with_native_reason_kept(zai):
    assembler = StreamAssembler(zai, ZAI_ROUTE, include_reasoning=True)
    done = final(
        run(
            assembler,
            [zai_chunk({"content": "x"}, finish_reason="model_context_window_exceeded"), DONE],
        )
    )
    assert done.finish_reason == common.FINISH_REASON_LENGTH
    assert done.native_finish_reason == "model_context_window_exceeded"


async def test_zai_network_error_is_unavailable(zai):
    assembler = StreamAssembler(zai, ZAI_ROUTE, include_reasoning=True)
    feed(assembler, [zai_chunk({"content": "partial"}, finish_reason="network_error"), DONE])
    with pytest.raises(GatewayError) as caught:
        assembler.finish()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_UNAVAILABLE
    assert "network_error" in caught.value.message
    assert caught.value.metadata["provider"] == "zai"
    assert caught.value.metadata["model"] == "zai/glm-4.7"


# -- tool calls -----------------------------------------------------------------------------


async def test_tool_call_fragments_by_index_are_assembled_before_done(openrouter):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)

    def fragment(index: int, **fields: Any) -> ServerSentEvent:
        return or_chunk({"tool_calls": [{"index": index, **fields}]})

    deltas = feed(
        assembler,
        [
            fragment(
                0,
                id="toolu_01A",
                type="function",
                function={"name": "get_weather", "arguments": ""},
            ),
            fragment(1, id="toolu_01B", type="function", function={"name": "get_time"}),
            fragment(0, function={"arguments": '{"location":'}),
            fragment(1, function={"arguments": '{"tz":"UTC"}'}),
            fragment(0, function={"arguments": '"Boston"}'}),
            or_chunk({"content": ""}, finish_reason="tool_calls", native_finish_reason="tool_use"),
            DONE,
        ],
    )
    assert deltas == []  # nothing half-assembled is ever sent
    out = assembler.finish()
    assert [r.WhichOneof("event") for r in out] == ["tool_call", "tool_call", "done"]
    assert tool_calls(out) == [
        ("toolu_01A", "get_weather", '{"location":"Boston"}'),
        ("toolu_01B", "get_time", '{"tz":"UTC"}'),
    ]
    assert final(out).finish_reason == common.FINISH_REASON_TOOL_CALLS


async def test_tool_call_fragments_without_index_continue_the_current_call(openrouter):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)

    def fragment(**fields: Any) -> ServerSentEvent:
        return or_chunk({"tool_calls": [fields]})

    out = run(
        assembler,
        [
            fragment(id="call_a", function={"name": "search", "arguments": '{"q":'}),
            fragment(function={"arguments": '"cats"'}),
            fragment(function={"arguments": "}"}),
            fragment(id="call_b", function={"name": "open", "arguments": '{"n":'}),
            fragment(function={"arguments": "1}"}),
            or_chunk({}, finish_reason="tool_calls"),
            DONE,
        ],
    )
    assert tool_calls(out) == [
        ("call_a", "search", '{"q":"cats"}'),
        ("call_b", "open", '{"n":1}'),
    ]


async def test_reused_index_with_a_new_id_starts_a_new_call(openrouter):
    # Gemini-style upstreams number every call 0: a new id starts a new call,
    # and fragments without an id belong to the call being streamed now.
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)

    def fragment(**fields: Any) -> ServerSentEvent:
        return or_chunk({"tool_calls": [{"index": 0, **fields}]})

    out = run(
        assembler,
        [
            fragment(id="call_a", function={"name": "search", "arguments": ""}),
            fragment(function={"arguments": '{"q":"cats"}'}),
            fragment(id="call_b", function={"name": "open", "arguments": ""}),
            fragment(function={"arguments": '{"n":1}'}),
            or_chunk({}, finish_reason="tool_calls"),
            DONE,
        ],
    )
    assert tool_calls(out) == [
        ("call_a", "search", '{"q":"cats"}'),
        ("call_b", "open", '{"n":1}'),
    ]


async def test_zai_object_arguments_become_json_text(zai):
    assembler = StreamAssembler(zai, ZAI_ROUTE, include_reasoning=True)
    out = run(
        assembler,
        [
            zai_chunk(
                {
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "index": 0,
                            "type": "function",
                            "function": {"name": "weather", "arguments": {"location": "Florence"}},
                        }
                    ]
                },
                finish_reason="tool_calls",
            ),
            DONE,
        ],
    )
    ((_, _, arguments),) = tool_calls(out)
    assert orjson.loads(arguments) == {"location": "Florence"}


# -- errors ------------------------------------------------------------------------------


async def test_openrouter_mid_stream_rate_limit_error(openrouter):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)
    assert kinds(feed(assembler, [or_chunk({"content": "Partial"})])) == [
        ("content_delta", "Partial")
    ]
    error_chunk = event(
        {
            "id": "gen-abc123",
            "object": "chat.completion.chunk",
            "model": "openai/gpt-4o",
            "provider": "OpenAI",
            "error": {
                "code": 429,
                "message": "Rate limit exceeded",
                "metadata": {"error_type": "rate_limit_exceeded", "provider_code": "rate_limited"},
            },
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        }
    )
    with pytest.raises(GatewayError) as caught:
        assembler.on_event(error_chunk)
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_RATE_LIMITED
    assert "Rate limit exceeded" in caught.value.message


async def test_openrouter_error_chunk_without_choices(openrouter):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)
    chunk = event(
        {
            "error": {
                "message": "Rate limit exceeded: free-models-per-day",
                "code": 429,
                "metadata": {"provider_name": "Google AI Studio"},
            },
            "user_id": "user_123",
        }
    )
    with pytest.raises(GatewayError) as caught:
        assembler.on_event(chunk)
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_openrouter_server_error_string_code_is_unavailable(openrouter):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)
    chunk = event({"error": {"code": "server_error", "message": "Internal error"}, "choices": []})
    with pytest.raises(GatewayError) as caught:
        assembler.on_event(chunk)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_UNAVAILABLE


@pytest.mark.parametrize(
    ("code", "grpc_code"),
    [
        ("1302", grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("1234", grpc.StatusCode.UNAVAILABLE),
        ("1113", grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
async def test_zai_in_stream_error_is_classified_by_business_code(zai, code, grpc_code):
    assembler = StreamAssembler(zai, ZAI_ROUTE, include_reasoning=True)
    with pytest.raises(GatewayError) as caught:
        assembler.on_event(event({"error": {"code": code, "message": "z.ai said no"}}))
    assert caught.value.code == grpc_code
    assert caught.value.metadata["upstreamCode"] == code


async def test_event_error_raises_even_without_an_error_key(zai):
    assembler = StreamAssembler(zai, ZAI_ROUTE, include_reasoning=True)
    with pytest.raises(GatewayError) as caught:
        assembler.on_event(event({"message": "the model crashed"}, name="error"))
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert "the model crashed" in caught.value.message


async def test_event_error_with_an_error_object(zai):
    assembler = StreamAssembler(zai, ZAI_ROUTE, include_reasoning=True)
    payload = {"error": {"code": "1302", "message": "High concurrency"}}
    with pytest.raises(GatewayError) as caught:
        assembler.on_event(event(payload, name="error"))
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_finish_reason_error_raises(openrouter):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)
    with pytest.raises(GatewayError) as caught:
        assembler.on_event(or_chunk({"content": ""}, finish_reason="error"))
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


async def test_error_inside_a_choice_raises(openrouter):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)
    chunk = or_chunk(
        {"content": ""},
        finish_reason="error",
        error={"code": 502, "message": "Provider returned error"},
    )
    with pytest.raises(GatewayError) as caught:
        assembler.on_event(chunk)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.metadata["upstreamCode"] == "502"


async def test_finish_without_done_is_truncated(openrouter):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)
    feed(assembler, [or_chunk({"content": "Hello"}), or_chunk({}, finish_reason="stop")])
    with pytest.raises(GatewayError) as caught:
        assembler.finish()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_STREAM_TRUNCATED
    assert "[DONE]" in caught.value.message


async def test_done_without_finish_reason_is_truncated(openrouter):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)
    feed(assembler, [or_chunk({"content": "Hello"}), DONE])
    with pytest.raises(GatewayError) as caught:
        assembler.finish()
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_STREAM_TRUNCATED
    assert "finish_reason" in caught.value.message


async def test_empty_stream_is_truncated(zai):
    assembler = StreamAssembler(zai, ZAI_ROUTE, include_reasoning=True)
    with pytest.raises(GatewayError) as caught:
        assembler.finish()
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_STREAM_TRUNCATED


@pytest.mark.parametrize("data", [b"{not json", b": OPENROUTER PROCESSING", b"[1, 2]", b'"text"'])
async def test_malformed_event_raises(openrouter, data):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)
    with pytest.raises(GatewayError) as caught:
        assembler.on_event(ServerSentEvent(data=data))
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_MALFORMED_RESPONSE


async def test_a_last_done_without_its_blank_line_ends_the_stream(openrouter):
    # The body ended with "data: [DONE]" but no blank line: the decoder hands it
    # over as leftover, and it counts.
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)
    feed(assembler, [or_chunk({"content": "a"}, finish_reason="stop")])
    assembler.on_end([DONE])
    assert final(assembler.finish()).finish_reason == common.FINISH_REASON_STOP


async def test_a_leftover_chunk_that_is_not_done_is_truncation(openrouter):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)
    feed(assembler, [or_chunk({"content": "a"})])
    assembler.on_end([or_chunk({}, finish_reason="stop")])
    with pytest.raises(GatewayError) as caught:
        assembler.finish()
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_STREAM_TRUNCATED


async def test_nothing_after_done_counts(openrouter):
    assembler = StreamAssembler(openrouter, OPENROUTER_ROUTE, include_reasoning=True)
    feed(assembler, [or_chunk({"content": "a"}, finish_reason="stop"), DONE])
    assert assembler.done
    assert assembler.on_event(or_chunk({"content": "late"}, finish_reason="length")) == []
    assert assembler.on_event(ServerSentEvent(data=b"{garbage")) == []
    done = final(assembler.finish())
    assert done.finish_reason == common.FINISH_REASON_STOP


def _content(text):
    return pb.StreamCompleteResponse(content_delta=pb.ContentDelta(text=text))


def _reasoning(text):
    return pb.StreamCompleteResponse(reasoning_delta=pb.ReasoningDelta(text=text))


def test_coalesce_merges_runs_of_the_same_delta_kind_in_order():
    call = pb.StreamCompleteResponse(tool_call=common.ToolCall(id="c", name="f", arguments="{}"))
    events = [_reasoning("a"), _reasoning("b"), _content("c"), _content("d"), call, _content("e")]
    assert coalesce(events) == [_reasoning("ab"), _content("cd"), call, _content("e")]


def test_coalesce_leaves_single_events_alone():
    event = _content("x")
    assert coalesce([event]) == [event]
    assert coalesce([]) == []
