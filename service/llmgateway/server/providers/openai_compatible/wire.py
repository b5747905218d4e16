"""The OpenAI-compatible wire format its providers share: request bodies and usage.

Providers start from `chat_body()` and change only what their wire does
differently (see openrouter.py, zai.py, openai.py and groq.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import orjson

from llmgateway.server.providers.translate import own_details
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Mapping

    from google.protobuf import struct_pb2

AnyCompletionRequest = pb.CompleteRequest | pb.StreamCompleteRequest
JSONObject = dict[str, Any]

ROLE_NAMES: dict[int, str] = {
    common.ROLE_SYSTEM: "system",
    common.ROLE_USER: "user",
    common.ROLE_ASSISTANT: "assistant",
    common.ROLE_TOOL: "tool",
}
_IMAGE_DETAIL = {
    common.IMAGE_DETAIL_AUTO: "auto",
    common.IMAGE_DETAIL_LOW: "low",
    common.IMAGE_DETAIL_HIGH: "high",
}
_TOOL_CHOICE_MODES = {
    common.TOOL_CHOICE_MODE_AUTO: "auto",
    common.TOOL_CHOICE_MODE_NONE: "none",
    common.TOOL_CHOICE_MODE_REQUIRED: "required",
}
# Beyond this a double no longer holds every integer exactly.
_MAX_EXACT_INT = 2**53


def chat_body(
    request: AnyCompletionRequest,
    upstream_model: str,
    *,
    stream: bool,
    reasoning_field: str | None,
    flatten_content_roles: frozenset[str] = frozenset(),
    max_tokens_field: str = "max_tokens",
    sends_refusal: bool = False,
    details_of: common.Provider.ValueType | None = None,
) -> JSONObject:
    """The body of POST /chat/completions for `request`.

    `reasoning_field` names the assistant-message field that carries reasoning
    back upstream (None: the wire has none, and reasoning text is not sent
    back); `flatten_content_roles` lists roles whose multi-part content must
    be sent as one string; `max_tokens_field` is the name the output limit
    goes by (OpenAI's reasoning models refuse `max_tokens` and take only
    `max_completion_tokens`); `sends_refusal` sends an assistant message's
    refusal back as `refusal` (OpenAI's field; other wires have none);
    `details_of` sends back, as `reasoning_details`, the details that provider
    issued (OpenRouter's, verbatim), and never another provider's.
    """
    body: JSONObject = {
        "model": upstream_model,
        "messages": [
            message_json(
                m,
                reasoning_field,
                flatten_content_roles,
                sends_refusal=sends_refusal,
                details_of=details_of,
            )
            for m in request.messages
        ],
    }
    if stream:
        body["stream"] = True
        # Without it some upstreams send no usage at all on streams.
        body["stream_options"] = {"include_usage": True}
    if request.HasField("sampling"):
        body.update(
            sampling_fields(
                request.sampling, {**OPENAI_SAMPLING_NAMES, "max_tokens": max_tokens_field}
            )
        )
    if request.tools:
        body["tools"] = [tool_json(t) for t in request.tools]
        if request.HasField("tool_choice"):
            choice = tool_choice_json(request.tool_choice)
            if choice is not None:
                body["tool_choice"] = choice
    if request.HasField("response_format"):
        response_format = response_format_json(request.response_format)
        if response_format is not None:
            body["response_format"] = response_format
    return body


def message_json(
    message: common.ChatMessage,
    reasoning_field: str | None,
    flatten_content_roles: frozenset[str],
    *,
    sends_refusal: bool = False,
    details_of: common.Provider.ValueType | None = None,
) -> JSONObject:
    """One message in the OpenAI shape."""
    role = ROLE_NAMES[message.role]
    out: JSONObject = {"role": role}
    if message.parts:
        if role in flatten_content_roles:
            out["content"] = "".join(
                p.text for p in message.parts if p.WhichOneof("part") == "text"
            )
        else:
            out["content"] = [part_json(p) for p in message.parts]
    elif message.content or not message.tool_calls:
        out["content"] = message.content
    else:
        # An assistant turn that only called tools: OpenAI-compatible APIs want null.
        out["content"] = None
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments or "{}"},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.reasoning and reasoning_field is not None:
        out[reasoning_field] = message.reasoning
    if message.refusal and sends_refusal:
        out["refusal"] = message.refusal
    if details_of is not None and message.reasoning_details:
        details = [orjson.loads(d.raw_json) for d in own_details(message, details_of)]
        if details:
            out["reasoning_details"] = details
    return out


def part_json(part: common.ContentPart) -> JSONObject:
    """One content part in the OpenAI shape."""
    if part.WhichOneof("part") == "image":
        image: JSONObject = {"url": part.image.url}
        if part.image.detail in _IMAGE_DETAIL:
            image["detail"] = _IMAGE_DETAIL[part.image.detail]
        return {"type": "image_url", "image_url": image}
    return {"type": "text", "text": part.text}


def tool_json(tool: common.Tool) -> JSONObject:
    """One function tool in the OpenAI shape."""
    function: JSONObject = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = (
        struct_to_json(tool.parameters)
        if tool.HasField("parameters")
        else {"type": "object", "properties": {}}
    )
    if tool.HasField("strict"):
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def tool_choice_json(choice: common.ToolChoice) -> str | JSONObject | None:
    """The OpenAI `tool_choice` value, or None for "leave the default"."""
    if choice.WhichOneof("choice") == "function_name":
        return {"type": "function", "function": {"name": choice.function_name}}
    return _TOOL_CHOICE_MODES.get(choice.mode)


def response_format_json(response_format: common.ResponseFormat) -> JSONObject | None:
    """The OpenAI `response_format` value, or None for plain text."""
    kind = response_format.type
    if kind == common.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        return {"type": "json_object"}
    if kind == common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        schema = response_format.json_schema
        spec: JSONObject = {"name": schema.name, "schema": struct_to_json(schema.schema)}
        if schema.description:
            spec["description"] = schema.description
        if schema.HasField("strict"):
            spec["strict"] = schema.strict
        return {"type": "json_schema", "json_schema": spec}
    return None


SamplingField = Literal[
    "temperature", "top_p", "max_tokens", "stop", "seed", "presence_penalty", "frequency_penalty"
]
# SamplingParams fields under the OpenAI wire's names, in the order sent.
OPENAI_SAMPLING_NAMES: dict[SamplingField, str] = {
    "temperature": "temperature",
    "top_p": "top_p",
    "max_tokens": "max_tokens",
    "stop": "stop",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}


def sampling_fields(
    sampling: common.SamplingParams, names: Mapping[SamplingField, str]
) -> JSONObject:
    """The sampling parameters the caller set, under a wire's names (`names`
    maps a SamplingParams field to its name on the wire, in the order sent);
    a field not in `names` is not sent."""
    out: JSONObject = {}
    for field_name, wire_name in names.items():
        if field_name == "stop":
            if sampling.stop:
                out[wire_name] = list(sampling.stop)
        elif sampling.HasField(field_name):
            out[wire_name] = getattr(sampling, field_name)
    return out


def struct_to_json(struct: struct_pb2.Struct) -> JSONObject:
    """A Struct as plain JSON; whole numbers become integers.

    Struct stores every number as a double, so a schema's `"maxItems": 3`
    would otherwise reach the provider as `3.0`, which strict validators reject.
    """
    return {key: _value_to_json(value) for key, value in struct.fields.items()}


def _value_to_json(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and abs(number) <= _MAX_EXACT_INT:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_json(value.struct_value)
    if kind == "list_value":
        return [_value_to_json(v) for v in value.list_value.values]
    return None


def usage_from_json(usage: JSONObject) -> common.Usage:
    """Our Usage from an OpenAI-style `usage` object, tolerant of missing parts."""
    prompt = token_count(usage.get("prompt_tokens"))
    completion = token_count(usage.get("completion_tokens"))
    total = token_count(usage.get("total_tokens")) or prompt + completion
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    result = common.Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        cached_tokens=token_count(prompt_details.get("cached_tokens"))
        if isinstance(prompt_details, dict)
        else 0,
        reasoning_tokens=token_count(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, dict)
        else 0,
    )
    cost = usage.get("cost")
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        result.cost_usd = float(cost)
    return result


# int64, the proto fields' range.
MAX_TOKEN_COUNT = 2**63 - 1


def token_count(value: object) -> int:
    """A token count from any provider's usage: non-negative, within int64, 0
    when absent or nonsense (a string, a bool, a fraction)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        value = int(value)
    if isinstance(value, int):
        return min(max(0, value), MAX_TOKEN_COUNT)
    return 0
