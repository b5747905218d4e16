"""The Python client carries reasoning signatures across turns: `assistant_turn`
turns an answer (unary, or a collected stream) into the assistant message the
provider needs back, byte for byte, against the fake's signature checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from llmgateway.client import (
    AsyncCompletionClient,
    InvalidRequestError,
    acollect,
    assistant_turn,
    tool,
)
from llmgateway.v1 import completion_pb2 as common

if TYPE_CHECKING:
    from llmgateway.server.process.server import Gateway

WEATHER = tool("get_weather", {"type": "object", "properties": {"city": {"type": "string"}}})
THINKING = common.ReasoningOptions(enabled=True)


def tool_result(call: common.ToolCall) -> common.ChatMessage:
    return common.ChatMessage(role=common.ROLE_TOOL, tool_call_id=call.id, content='{"temp": 21}')


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        # The fake signs each thinking block and refuses a changed or missing signature.
        ("anthropic/claude-sonnet-4-5", common.REASONING_DETAIL_KIND_THINKING),
        # Gemini 3 refuses a function-call turn without the signature it issued.
        ("gemini/gemini-3-pro-preview", common.REASONING_DETAIL_KIND_THOUGHT_SIGNATURE),
    ],
)
@pytest.mark.parametrize("streamed", [False, True])
async def test_a_tool_turn_with_its_signatures_goes_back_through_the_client(
    gateway: Gateway, model: str, kind: common.ReasoningDetailKind.ValueType, streamed: bool
) -> None:
    async with AsyncCompletionClient(f"127.0.0.1:{gateway.port}", timeout=20) as client:
        first: list[common.ChatMessage] = [
            common.ChatMessage(role=common.ROLE_USER, content="Weather in Oslo?")
        ]
        if streamed:
            collected = await acollect(
                client.stream(model, first, tools=[WEATHER], reasoning=THINKING)
            )
            calls, turn = collected.tool_calls, assistant_turn(collected)
        else:
            answer = await client.complete(model, first, tools=[WEATHER], reasoning=THINKING)
            calls, turn = list(answer.tool_calls), assistant_turn(answer)
        assert calls
        assert kind in {d.kind for d in turn.reasoning_details}
        assert list(turn.tool_calls) == calls
        second = [*first, turn, *(tool_result(call) for call in calls)]
        answer = await client.complete(model, second, tools=[WEATHER], reasoning=THINKING)
        assert "The tool answered" in answer.content
        # A signature changed by one byte: the provider (here the fake, as the real
        # API does) refuses the turn, and the caller gets INVALID_ARGUMENT.
        signed = next(d for d in turn.reasoning_details if d.kind == kind)
        signed.signature = ("A" if signed.signature[0] != "A" else "B") + signed.signature[1:]
        tampered = [*first, turn, *(tool_result(call) for call in calls)]
        with pytest.raises(InvalidRequestError):
            await client.complete(model, tampered, tools=[WEATHER], reasoning=THINKING)
