"""OpenRouter's reasoning_details on the OpenAI-compatible core: read whole, passed back verbatim, to OpenRouter only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from llmgateway.server.config import OpenAISettings, Secret, Timeouts
from llmgateway.server.providers.assembly import coalesce
from llmgateway.server.providers.openai import OpenAIProvider
from llmgateway.server.providers.sse import SSEDecoder
from llmgateway.server.routing.router import Route
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from llmgateway.server.providers.openrouter import OpenRouterProvider

ROUTE = Route(
    common.PROVIDER_OPENROUTER,
    "anthropic/claude-sonnet-4.5",
    "openrouter/anthropic/claude-sonnet-4.5",
)
DETAILS: list[dict[str, Any]] = [
    {
        "type": "reasoning.text",
        "text": "Let me work it out.",
        "signature": "EqQBCkgIARABGAIiQL2fake",
        "format": "anthropic-claude-v1",
        "index": 0,
    },
    {
        "type": "reasoning.encrypted",
        "data": "gAAAAfakeopaque==",
        "format": "anthropic-claude-v1",
        "index": 1,
    },
]


def unary_payload(details: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "gen-1",
        "provider": "Anthropic",
        "model": "anthropic/claude-sonnet-4.5",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "content": "4",
                    "reasoning": "Let me work it out.",
                    "reasoning_details": details,
                },
            }
        ],
    }


def test_unary_details_are_kept_whole_even_with_reasoning_excluded(
    openrouter: OpenRouterProvider,
) -> None:
    for include_reasoning in (True, False):
        answer = openrouter.parse_unary(unary_payload(DETAILS), ROUTE, include_reasoning)
        assert [orjson.loads(d.raw_json) for d in answer.reasoning_details] == DETAILS
        assert {(d.provider, d.kind) for d in answer.reasoning_details} == {
            (common.PROVIDER_OPENROUTER, common.REASONING_DETAIL_KIND_OPENROUTER)
        }
        assert [d.index for d in answer.reasoning_details] == [0, 1]


async def test_other_wires_read_none() -> None:
    provider = OpenAIProvider(
        OpenAISettings(api_key=Secret("sk-proj-detailstest000000000000")), Timeouts()
    )
    try:
        answer = provider.parse_unary(unary_payload(DETAILS), ROUTE, True)
    finally:
        await provider.aclose()
    assert not answer.reasoning_details


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    payload = {
        "id": "gen-2",
        "provider": "Anthropic",
        "model": "anthropic/claude-sonnet-4.5",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"


# Details stream in fragments keyed by index: text in pieces, the signature last.
STREAM = b"".join(
    [
        chunk(
            {
                "reasoning": "Let me ",
                "reasoning_details": [
                    {
                        "type": "reasoning.text",
                        "text": "Let me ",
                        "format": "anthropic-claude-v1",
                        "index": 0,
                    }
                ],
            }
        ),
        chunk(
            {
                "reasoning": "work it out.",
                "reasoning_details": [
                    {"type": "reasoning.text", "text": "work it out.", "index": 0}
                ],
            }
        ),
        chunk(
            {
                "reasoning_details": [
                    {"type": "reasoning.text", "signature": "EqQBCkgIARABGAIiQL2fake", "index": 0}
                ]
            }
        ),
        chunk(
            {
                "reasoning_details": [
                    {
                        "type": "reasoning.encrypted",
                        "data": "gAAAAfakeopaque==",
                        "format": "anthropic-claude-v1",
                        "index": 1,
                    }
                ]
            }
        ),
        chunk({"content": "4"}),
        chunk({}, "stop"),
        b"data: [DONE]\n\n",
    ]
)


def streamed(provider: OpenRouterProvider, pieces: list[bytes]) -> list[pb.StreamCompleteResponse]:
    decoder = SSEDecoder()
    assembler = provider.stream_assembler(ROUTE, True)
    out: list[pb.StreamCompleteResponse] = []
    for piece in pieces:
        for item in decoder.feed(piece):
            out.extend(assembler.on_event(item))
    assembler.on_end(decoder.end())
    out.extend(assembler.finish())
    return coalesce(out)


def test_streamed_fragments_merge_into_whole_entries(openrouter: OpenRouterProvider) -> None:
    events = streamed(openrouter, [STREAM])
    done = events[-1].done
    entries = [orjson.loads(d.raw_json) for d in done.reasoning_details]
    assert entries == [
        {
            "type": "reasoning.text",
            "text": "Let me work it out.",
            "format": "anthropic-claude-v1",
            "index": 0,
            "signature": "EqQBCkgIARABGAIiQL2fake",
        },
        DETAILS[1],
    ]
    assert events[0].reasoning_delta.text == "Let me work it out."


def test_every_split_gives_the_same_details(openrouter: OpenRouterProvider) -> None:
    whole = streamed(openrouter, [STREAM])
    for at in range(1, len(STREAM)):
        assert streamed(openrouter, [STREAM[:at], STREAM[at:]]) == whole, at


def assistant_with(details: list[common.ReasoningDetail]) -> pb.CompleteRequest:
    return pb.CompleteRequest(
        model="openrouter/anthropic/claude-sonnet-4.5",
        messages=[
            common.ChatMessage(role=common.ROLE_USER, content="2+2?"),
            common.ChatMessage(role=common.ROLE_ASSISTANT, content="4", reasoning_details=details),
            common.ChatMessage(role=common.ROLE_USER, content="and 3+3?"),
        ],
    )


def test_details_go_back_verbatim_and_only_openrouters(openrouter: OpenRouterProvider) -> None:
    answer = openrouter.parse_unary(unary_payload(DETAILS), ROUTE, True)
    foreign = common.ReasoningDetail(
        provider=common.PROVIDER_ANTHROPIC,
        kind=common.REASONING_DETAIL_KIND_THINKING,
        signature="x",
    )
    request = assistant_with([*answer.reasoning_details, foreign])
    assert openrouter.check(request) == []
    body = openrouter.body(request, ROUTE, stream=False)
    assert body["messages"][1]["reasoning_details"] == DETAILS
    assert "reasoning_details" not in body["messages"][0]


def test_a_message_with_only_foreign_details_sends_none(openrouter: OpenRouterProvider) -> None:
    foreign = common.ReasoningDetail(
        provider=common.PROVIDER_GEMINI,
        kind=common.REASONING_DETAIL_KIND_THOUGHT_SIGNATURE,
        signature="s",
    )
    body = openrouter.body(assistant_with([foreign]), ROUTE, stream=False)
    assert "reasoning_details" not in body["messages"][1]


async def test_openai_never_sends_them() -> None:
    provider = OpenAIProvider(
        OpenAISettings(api_key=Secret("sk-proj-detailstest000000000000")), Timeouts()
    )
    mine = common.ReasoningDetail(
        provider=common.PROVIDER_OPENROUTER,
        kind=common.REASONING_DETAIL_KIND_OPENROUTER,
        raw_json=orjson.dumps(DETAILS[0]).decode(),
    )
    try:
        body = provider.body(assistant_with([mine]), ROUTE, stream=False)
    finally:
        await provider.aclose()
    assert "reasoning_details" not in body["messages"][1]


def test_a_changed_detail_that_is_no_longer_json_is_refused(openrouter: OpenRouterProvider) -> None:
    broken = common.ReasoningDetail(
        provider=common.PROVIDER_OPENROUTER,
        kind=common.REASONING_DETAIL_KIND_OPENROUTER,
        raw_json='{"type": ',
    )
    violations = openrouter.check(assistant_with([broken]))
    assert [v.field for v in violations] == ["messages[1].reasoning_details[0].raw_json"]
