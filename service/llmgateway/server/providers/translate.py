"""What the translating providers (Anthropic, Gemini, Ollama) share when they
rebuild a conversation in their own shapes: the system prompt apart, tool
results grouped, images as data, tool arguments as objects, call ids.

Pure functions over the contract's messages; each raises Untranslatable
(INVALID_ARGUMENT naming the field, once the provider's `check` turns it into
a FieldViolation) for what its wire cannot carry, rather than dropping
something that would change the answer.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from llmgateway.server.errors import FieldViolation
from llmgateway.v1 import completion_pb2 as common

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)


class Untranslatable(Exception):  # noqa: N818  # a refusal, not a failure
    """A request field this provider's wire cannot carry faithfully. Raised
    while translating; a provider's `check` catches it (translating the
    request once as a dry run) so the caller gets INVALID_ARGUMENT naming the
    field before any upstream request."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.violation = FieldViolation(field, description)


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of the conversation with its index in the request (for field paths)."""

    index: int
    message: common.ChatMessage


def split_system(messages: Sequence[common.ChatMessage]) -> tuple[str, list[Turn]]:
    """The leading system messages' text joined by blank lines, and the rest.

    Anthropic and Gemini take the system prompt apart from the conversation;
    a system message after the conversation started has no place there, so
    it is refused naming its role rather than moved (moving changes what the
    model was told when)."""
    system: list[str] = []
    rest: list[Turn] = []
    for i, message in enumerate(messages):
        if message.role == common.ROLE_SYSTEM:
            if rest:
                raise Untranslatable(
                    f"messages[{i}].role",
                    "this provider takes system messages only at the start of the "
                    "conversation; move it to the start or make it a user message",
                )
            system.append(message_text(message))
        else:
            rest.append(Turn(i, message))
    return "\n\n".join(s for s in system if s), rest


def message_text(message: common.ChatMessage) -> str:
    """A message's text: `content`, or its text parts joined."""
    if message.parts:
        return "".join(p.text for p in message.parts if p.WhichOneof("part") == "text")
    return message.content


def data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:<mime>;base64,<data>` URL, else None."""
    match = _DATA_URL.fullmatch(url)
    if match is None:
        return None
    return match["mime"], match["data"]


def image_data(url: str, path: str, provider: str) -> tuple[str, str]:
    """(media type, base64 data) of an image the provider takes only inline, or a
    Untranslatable at `path` for an https URL (the gateway does not fetch URLs)
    or data that is not base64."""
    parsed = data_url(url)
    if parsed is None:
        raise Untranslatable(
            path,
            f"{provider} takes images inline only: send a data:<mime>;base64,... URL "
            "(the gateway does not fetch image URLs)",
        )
    try:
        base64.b64decode(parsed[1], validate=True)
    except (binascii.Error, ValueError):
        raise Untranslatable(path, "the data URL's payload is not valid base64") from None
    return parsed


def tool_arguments_object(call: common.ToolCall, path: str) -> dict[str, Any]:
    """A tool call's arguments as the JSON object Anthropic, Gemini and Ollama
    want back (the contract carries them as JSON text); "" means {}."""
    try:
        value = orjson.loads(call.arguments or "{}")
    except orjson.JSONDecodeError:
        raise Untranslatable(f"{path}.arguments", "must be a JSON object, as text") from None
    if not isinstance(value, dict):
        raise Untranslatable(f"{path}.arguments", "must be a JSON object, not another value")
    return value


def tool_names_by_call_id(messages: Iterable[common.ChatMessage]) -> dict[str, str]:
    """Tool call id -> function name, from the assistant turns' tool calls
    (Gemini and Ollama name the function on a tool result; the contract
    carries only the call's id)."""
    return {
        call.id: call.name
        for message in messages
        if message.role == common.ROLE_ASSISTANT
        for call in message.tool_calls
        if call.id
    }


def generated_call_id(response_id: str, index: int) -> str:
    """An id for a tool call the provider sent without one (Gemini before 3,
    Ollama): stable for the response, unique within it, so the caller can
    pair the result with the call."""
    return f"call_{response_id or 'gw'}_{index}"


def own_details(
    message: common.ChatMessage, provider: common.Provider.ValueType
) -> list[common.ReasoningDetail]:
    """The reasoning details on an assistant message that `provider` issued,
    in their original order: details from another provider (a conversation
    that moved along a fallback chain) are never sent to this one."""
    mine = [d for d in message.reasoning_details if d.provider == provider]
    return sorted(mine, key=lambda d: d.index)
