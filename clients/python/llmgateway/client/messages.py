"""Small helpers for the common case, without hiding the protobuf types."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.protobuf import struct_pb2

from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Mapping

# A message, a (role, text) pair such as ("user", "Hi"), or a bare string (one user message).
MessageLike = common.ChatMessage | tuple[str, str]
Messages = str | MessageLike | Iterable[MessageLike]

_ROLES = {
    "system": common.ROLE_SYSTEM,
    "user": common.ROLE_USER,
    "assistant": common.ROLE_ASSISTANT,
    "tool": common.ROLE_TOOL,
}


def message(role: str, content: str) -> common.ChatMessage:
    """A text message; `role` is system, user, assistant or tool."""
    try:
        return common.ChatMessage(role=_ROLES[role], content=content)
    except KeyError:
        raise ValueError(f"unknown role {role!r}; use one of {', '.join(_ROLES)}") from None


def to_messages(messages: Messages) -> list[common.ChatMessage]:
    """Messages from a string, one message or pair, or an iterable of them."""
    if isinstance(messages, str):
        return [message("user", messages)]
    if isinstance(messages, common.ChatMessage):
        return [messages]
    if (
        isinstance(messages, tuple)
        and len(messages) == 2
        and all(isinstance(part, str) for part in messages)
    ):
        return [message(*messages)]
    out = []
    for item in messages:
        if isinstance(item, common.ChatMessage):
            out.append(item)
        elif isinstance(item, tuple) and len(item) == 2:
            out.append(message(item[0], item[1]))
        else:
            raise TypeError(f"expected a ChatMessage or a (role, text) pair, got {item!r}")
    return out


def tool(
    name: str, parameters: Mapping[str, Any] | None = None, description: str = ""
) -> common.Tool:
    """A function tool from a JSON-schema dict."""
    result = common.Tool(name=name, description=description)
    if parameters is not None:
        schema = struct_pb2.Struct()
        schema.update(dict(parameters))
        result.parameters.CopyFrom(schema)
    return result


@dataclass
class Collected:
    """A streamed completion gathered into one value."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[common.ToolCall] = field(default_factory=list)
    done: pb.CompletionDone | None = None

    @property
    def usage(self) -> common.Usage | None:
        """Token counts and cost, once the stream has ended."""
        return self.done.usage if self.done and self.done.HasField("usage") else None

    @property
    def cost_usd(self) -> float | None:
        """Cost in USD, when the provider reported it."""
        usage = self.usage
        return usage.cost_usd if usage is not None and usage.HasField("cost_usd") else None

    def assistant_message(self) -> common.ChatMessage:
        """This answer as the assistant turn of the next request (see `assistant_turn`)."""
        return _assistant(
            self.text,
            self.reasoning,
            self.tool_calls,
            self.done.reasoning_details if self.done else (),
            self.done.refusal if self.done else "",
        )


def assistant_turn(answer: pb.CompleteResponse | Collected) -> common.ChatMessage:
    """An answer as the assistant message to send back on the next turn: its
    text, tool calls and reasoning, and the reasoning details (Anthropic
    thinking signatures, Gemini thought signatures, OpenRouter
    reasoning_details) and refusal the provider needs back unchanged, or the
    next turn is refused. Append it, then the tool results, to the messages."""
    if isinstance(answer, Collected):
        return answer.assistant_message()
    return _assistant(
        answer.content,
        answer.reasoning,
        answer.tool_calls,
        answer.reasoning_details,
        answer.refusal,
    )


def _assistant(
    text: str,
    reasoning: str,
    tool_calls: Iterable[common.ToolCall],
    details: Iterable[common.ReasoningDetail],
    refusal: str,
) -> common.ChatMessage:
    return common.ChatMessage(
        role=common.ROLE_ASSISTANT,
        content=text,
        reasoning=reasoning,
        tool_calls=list(tool_calls),
        reasoning_details=list(details),
        refusal=refusal,
    )


def _add(
    collected: Collected, event: pb.StreamCompleteResponse, parts: dict[str, list[str]]
) -> None:
    kind = event.WhichOneof("event")
    if kind == "content_delta":
        parts["text"].append(event.content_delta.text)
    elif kind == "reasoning_delta":
        parts["reasoning"].append(event.reasoning_delta.text)
    elif kind == "tool_call":
        collected.tool_calls.append(event.tool_call)
    elif kind == "done":
        collected.done = event.done


def collect(events: Iterable[pb.StreamCompleteResponse]) -> Collected:
    """Read a whole stream: its text, reasoning, tool calls, usage and cost."""
    collected = Collected()
    parts: dict[str, list[str]] = {"text": [], "reasoning": []}
    for event in events:
        _add(collected, event, parts)
    collected.text, collected.reasoning = "".join(parts["text"]), "".join(parts["reasoning"])
    return collected


async def acollect(events: AsyncIterable[pb.StreamCompleteResponse]) -> Collected:
    """`collect` for an async stream."""
    collected = Collected()
    parts: dict[str, list[str]] = {"text": [], "reasoning": []}
    async for event in events:
        _add(collected, event, parts)
    collected.text, collected.reasoning = "".join(parts["text"]), "".join(parts["reasoning"])
    return collected
