"""Request bodies: the shared OpenAI wire, OpenRouter's additions and Z.AI's adaptations."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from google.protobuf import struct_pb2

from llmgateway.server.providers.openai_compatible.wire import (
    chat_body,
    message_json,
    response_format_json,
    tool_choice_json,
    tool_json,
    usage_from_json,
)
from llmgateway.server.routing.router import Route
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

OPENROUTER_ROUTE = Route(
    common.PROVIDER_OPENROUTER, "openai/gpt-4o-mini", "openrouter/openai/gpt-4o-mini"
)
ZAI_ROUTE = Route(common.PROVIDER_ZAI, "glm-4.7", "zai/glm-4.7")
NO_FLATTEN: frozenset[str] = frozenset()


def user(text: str) -> common.ChatMessage:
    return common.ChatMessage(role=common.ROLE_USER, content=text)


def system(text: str) -> common.ChatMessage:
    return common.ChatMessage(role=common.ROLE_SYSTEM, content=text)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def weather_tool(name: str = "weather") -> common.Tool:
    return common.Tool(
        name=name,
        description="Current weather",
        parameters=struct(
            {
                "type": "object",
                "properties": {"location": {"type": "string"}},
                "required": ["location"],
            }
        ),
    )


def request(**fields: object) -> pb.CompleteRequest:
    fields.setdefault("messages", [user("hi")])
    return pb.CompleteRequest(model="x", **fields)  # type: ignore[arg-type]


# -- the shared OpenAI wire ---------------------------------------------------


def test_minimal_body():
    body = chat_body(request(), "m", stream=False, reasoning_field="reasoning")
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_stream_body_asks_for_usage():
    body = chat_body(request(), "m", stream=True, reasoning_field="reasoning")
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_struct_whole_numbers_become_json_integers_and_floats_stay_floats():
    tool = common.Tool(
        name="pick",
        parameters=struct(
            {
                "type": "object",
                "properties": {
                    "count": {"type": "integer", "minimum": 1, "maximum": 10},
                    "ratio": {"type": "number", "multipleOf": 0.5},
                    "tags": {"type": "array", "maxItems": 3, "items": {"type": "string"}},
                    "mode": {"enum": [1, 2.5, "x", True, None]},
                },
                "huge": 2.0**60,
                "negative": -4,
            }
        ),
    )
    function = tool_json(tool)["function"]
    params = function["parameters"]
    count = params["properties"]["count"]
    assert count["maximum"] == 10
    assert type(count["maximum"]) is int
    assert type(count["minimum"]) is int
    assert type(params["properties"]["tags"]["maxItems"]) is int
    assert params["properties"]["ratio"]["multipleOf"] == 0.5
    assert type(params["properties"]["ratio"]["multipleOf"]) is float
    assert params["properties"]["mode"]["enum"] == [1, 2.5, "x", True, None]
    assert [type(v) for v in params["properties"]["mode"]["enum"]] == [
        int,
        float,
        str,
        bool,
        type(None),
    ]
    assert params["negative"] == -4
    assert type(params["negative"]) is int
    # Beyond 2**53 a double is no longer an exact integer: it stays a float.
    assert type(params["huge"]) is float
    # What the provider finally reads: no "10.0" that strict validators reject.
    wire = orjson.dumps(params).decode()
    assert '"maximum":10,' in wire or '"maximum":10}' in wire
    assert "10.0" not in wire
    assert '"multipleOf":0.5' in wire


def test_tool_json_shape():
    assert tool_json(weather_tool()) == {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Current weather",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string"}},
                "required": ["location"],
            },
        },
    }


def test_tool_without_parameters_gets_an_empty_object_schema_and_no_description():
    assert tool_json(common.Tool(name="now")) == {
        "type": "function",
        "function": {"name": "now", "parameters": {"type": "object", "properties": {}}},
    }


@pytest.mark.parametrize("strict", [True, False])
def test_tool_strict_sent_only_when_set(strict):
    assert tool_json(common.Tool(name="t", strict=strict))["function"]["strict"] is strict
    assert "strict" not in tool_json(common.Tool(name="t"))["function"]


def test_message_json_text_name_and_reasoning():
    message = common.ChatMessage(
        role=common.ROLE_ASSISTANT, content="sure", name="bot", reasoning="thought"
    )
    assert message_json(message, "reasoning_content", NO_FLATTEN) == {
        "role": "assistant",
        "content": "sure",
        "name": "bot",
        "reasoning_content": "thought",
    }


def test_assistant_tool_call_only_message_has_null_content():
    message = common.ChatMessage(
        role=common.ROLE_ASSISTANT,
        tool_calls=[
            common.ToolCall(id="call_1", name="weather", arguments='{"location":"Boston"}'),
            common.ToolCall(id="call_2", name="now"),
        ],
    )
    out = message_json(message, "reasoning", NO_FLATTEN)
    assert "content" in out
    assert out["content"] is None
    assert out["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"location":"Boston"}'},
        },
        # Empty arguments are sent as an empty JSON object, not an empty string.
        {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
    ]


def test_assistant_text_with_tool_calls_keeps_its_text():
    message = common.ChatMessage(
        role=common.ROLE_ASSISTANT,
        content="Let me check.",
        tool_calls=[common.ToolCall(id="c", name="weather", arguments="{}")],
    )
    assert message_json(message, "reasoning", NO_FLATTEN)["content"] == "Let me check."


def test_empty_user_message_keeps_empty_string_content():
    assert message_json(user(""), "reasoning", NO_FLATTEN)["content"] == ""


def test_tool_result_message():
    message = common.ChatMessage(role=common.ROLE_TOOL, tool_call_id="call_1", content="40 C")
    assert message_json(message, "reasoning", NO_FLATTEN) == {
        "role": "tool",
        "content": "40 C",
        "tool_call_id": "call_1",
    }


def test_multi_part_user_message_is_a_list_of_parts():
    message = common.ChatMessage(
        role=common.ROLE_USER,
        parts=[
            common.ContentPart(text="What is this?"),
            common.ContentPart(
                image=common.ImagePart(
                    url="https://example.test/cat.png", detail=common.IMAGE_DETAIL_LOW
                )
            ),
            common.ContentPart(image=common.ImagePart(url="data:image/png;base64,AAAA")),
        ],
    )
    assert message_json(message, "reasoning", NO_FLATTEN)["content"] == [
        {"type": "text", "text": "What is this?"},
        {
            "type": "image_url",
            "image_url": {"url": "https://example.test/cat.png", "detail": "low"},
        },
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (common.ToolChoice(mode=common.TOOL_CHOICE_MODE_AUTO), "auto"),
        (common.ToolChoice(mode=common.TOOL_CHOICE_MODE_NONE), "none"),
        (common.ToolChoice(mode=common.TOOL_CHOICE_MODE_REQUIRED), "required"),
        (common.ToolChoice(mode=common.TOOL_CHOICE_MODE_UNSPECIFIED), None),
        (
            common.ToolChoice(function_name="weather"),
            {"type": "function", "function": {"name": "weather"}},
        ),
    ],
)
def test_tool_choice_mapping(choice, expected):
    assert tool_choice_json(choice) == expected


def test_tool_choice_is_sent_with_tools():
    body = chat_body(
        request(
            tools=[weather_tool()],
            tool_choice=common.ToolChoice(mode=common.TOOL_CHOICE_MODE_REQUIRED),
        ),
        "m",
        stream=False,
        reasoning_field="reasoning",
    )
    assert body["tool_choice"] == "required"
    assert [t["function"]["name"] for t in body["tools"]] == ["weather"]


def test_tool_choice_without_tools_is_not_sent():
    body = chat_body(
        request(tool_choice=common.ToolChoice(mode=common.TOOL_CHOICE_MODE_REQUIRED)),
        "m",
        stream=False,
        reasoning_field="reasoning",
    )
    assert "tool_choice" not in body
    assert "tools" not in body


def test_response_format_mapping():
    fmt = common.ResponseFormat
    assert response_format_json(fmt(type=common.RESPONSE_FORMAT_TYPE_TEXT)) is None
    assert response_format_json(fmt()) is None
    assert response_format_json(fmt(type=common.RESPONSE_FORMAT_TYPE_JSON_OBJECT)) == {
        "type": "json_object"
    }
    schema = fmt(
        type=common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
        json_schema=common.JsonSchemaFormat(
            name="answer",
            description="The answer",
            schema=struct({"type": "object", "properties": {"n": {"maximum": 3}}}),
            strict=True,
        ),
    )
    assert response_format_json(schema) == {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "schema": {"type": "object", "properties": {"n": {"maximum": 3}}},
            "description": "The answer",
            "strict": True,
        },
    }


def test_text_response_format_is_not_sent_but_json_is():
    text = request(response_format=common.ResponseFormat(type=common.RESPONSE_FORMAT_TYPE_TEXT))
    json_object = request(
        response_format=common.ResponseFormat(type=common.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
    )
    assert "response_format" not in chat_body(text, "m", stream=False, reasoning_field="r")
    assert chat_body(json_object, "m", stream=False, reasoning_field="r")["response_format"] == {
        "type": "json_object"
    }


def test_unset_sampling_fields_are_not_sent():
    body = chat_body(
        request(sampling=common.SamplingParams()), "m", stream=False, reasoning_field="r"
    )
    for name in (
        "temperature",
        "top_p",
        "max_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
    ):
        assert name not in body


def test_explicit_zero_sampling_values_are_sent():
    # proto3 `optional`: an explicit 0 is not "unset" and must reach the provider.
    sampling = common.SamplingParams(
        temperature=0.0, seed=0, presence_penalty=0.0, frequency_penalty=0.0
    )
    body = chat_body(request(sampling=sampling), "m", stream=False, reasoning_field="r")
    assert body["temperature"] == 0.0
    assert body["seed"] == 0
    assert body["presence_penalty"] == 0.0
    assert body["frequency_penalty"] == 0.0
    assert "top_p" not in body
    assert "max_tokens" not in body


def test_all_sampling_fields():
    sampling = common.SamplingParams(
        temperature=0.7,
        top_p=0.9,
        max_tokens=256,
        stop=["END", "STOP"],
        seed=42,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
    )
    body = chat_body(request(sampling=sampling), "m", stream=False, reasoning_field="r")
    assert body["temperature"] == pytest.approx(0.7)
    assert body["top_p"] == pytest.approx(0.9)
    assert body["max_tokens"] == 256
    assert body["stop"] == ["END", "STOP"]
    assert body["seed"] == 42
    assert body["presence_penalty"] == 0.5
    assert body["frequency_penalty"] == -0.5


# -- OpenRouter -----------------------------------------------------------------


async def test_openrouter_minimal_body(openrouter):
    body = openrouter.body(request(), OPENROUTER_ROUTE, stream=False)
    assert body == {
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "usage": {"include": True},
    }
    assert openrouter.url(request(), OPENROUTER_ROUTE, stream=False) == (
        "https://openrouter.ai/api/v1/chat/completions"
    )


async def test_openrouter_fallback_models_lose_the_gateway_prefix(openrouter):
    options = common.OpenRouterOptions(
        models=["openrouter/anthropic/claude-sonnet-4.5", "google/gemini-3-flash-preview"]
    )
    body = openrouter.body(request(openrouter=options), OPENROUTER_ROUTE, stream=True)
    assert body["models"] == ["anthropic/claude-sonnet-4.5", "google/gemini-3-flash-preview"]


async def test_openrouter_provider_preferences(openrouter):
    prefs = common.ProviderPreferences(
        order=["anthropic", "amazon-bedrock"],
        allow_fallbacks=False,
        require_parameters=True,
        data_collection=common.DATA_COLLECTION_DENY,
        sort=common.PROVIDER_SORT_THROUGHPUT,
        max_price=common.MaxPrice(prompt=5.0, completion=20.0),
    )
    body = openrouter.body(
        request(openrouter=common.OpenRouterOptions(provider=prefs)),
        OPENROUTER_ROUTE,
        stream=False,
    )
    assert body["provider"] == {
        "order": ["anthropic", "amazon-bedrock"],
        "allow_fallbacks": False,
        "require_parameters": True,
        "data_collection": "deny",
        "sort": "throughput",
        "max_price": {"prompt": 5.0, "completion": 20.0},
    }


async def test_openrouter_empty_provider_preferences_send_nothing_unset(openrouter):
    body = openrouter.body(
        request(openrouter=common.OpenRouterOptions(provider=common.ProviderPreferences())),
        OPENROUTER_ROUTE,
        stream=False,
    )
    assert body["provider"] == {}
    assert "models" not in body


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            common.ReasoningOptions(effort=common.REASONING_EFFORT_HIGH, exclude=True),
            {"effort": "high", "exclude": True},
        ),
        (common.ReasoningOptions(enabled=False), {"enabled": False}),
        (
            common.ReasoningOptions(enabled=True, max_tokens=2048),
            {"enabled": True, "max_tokens": 2048},
        ),
        (common.ReasoningOptions(effort=common.REASONING_EFFORT_XHIGH), {"effort": "xhigh"}),
        (common.ReasoningOptions(effort=common.REASONING_EFFORT_NONE), {"effort": "none"}),
        # Never `reasoning: {}`: OpenRouter reads it as "on, default effort".
        (common.ReasoningOptions(), None),
    ],
)
async def test_openrouter_reasoning_object(openrouter, options, expected):
    body = openrouter.body(request(reasoning=options), OPENROUTER_ROUTE, stream=False)
    assert body.get("reasoning") == expected


async def test_openrouter_no_reasoning_object_unless_asked(openrouter):
    assert "reasoning" not in openrouter.body(request(), OPENROUTER_ROUTE, stream=False)


async def test_openrouter_user_and_assistant_reasoning(openrouter):
    messages = [
        user("hi"),
        common.ChatMessage(role=common.ROLE_ASSISTANT, content="hello", reasoning="greet back"),
        user("again"),
    ]
    body = openrouter.body(
        request(messages=messages, user="tenant-42/user-17"), OPENROUTER_ROUTE, stream=False
    )
    assert body["user"] == "tenant-42/user-17"
    assert body["messages"][1] == {
        "role": "assistant",
        "content": "hello",
        "reasoning": "greet back",
    }


async def test_openrouter_keeps_penalties_multiple_stops_and_json_schema(openrouter):
    req = request(
        sampling=common.SamplingParams(stop=["a", "b"], presence_penalty=1.0),
        response_format=common.ResponseFormat(
            type=common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            json_schema=common.JsonSchemaFormat(name="s", schema=struct({"type": "object"})),
        ),
        tools=[weather_tool()],
        tool_choice=common.ToolChoice(function_name="weather"),
    )
    assert openrouter.check(req) == []
    body = openrouter.body(req, OPENROUTER_ROUTE, stream=False)
    assert body["stop"] == ["a", "b"]
    assert body["presence_penalty"] == 1.0
    assert body["response_format"]["type"] == "json_schema"
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}


# -- Z.AI -------------------------------------------------------------------------


async def test_zai_minimal_body(zai):
    assert zai.body(request(), ZAI_ROUTE, stream=False) == {
        "model": "glm-4.7",
        "messages": [{"role": "user", "content": "hi"}],
    }


async def test_zai_ignores_openrouter_only_options(zai):
    req = request(
        openrouter=common.OpenRouterOptions(
            models=["openai/gpt-4o"], provider=common.ProviderPreferences(order=["x"])
        ),
        reasoning=common.ReasoningOptions(effort=common.REASONING_EFFORT_HIGH),
    )
    body = zai.body(req, ZAI_ROUTE, stream=False)
    for key in ("models", "provider", "usage", "reasoning", "user", "thinking"):
        assert key not in body


@pytest.mark.parametrize("temperature", [0.0, -0.0])
async def test_zai_temperature_zero_is_greedy_decoding(zai, temperature):
    req = request(sampling=common.SamplingParams(temperature=temperature))
    body = zai.body(req, ZAI_ROUTE, stream=False)
    assert body["do_sample"] is False
    assert body["temperature"] == 0.01


@pytest.mark.parametrize(("temperature", "sent"), [(1.0, 0.99), (1.5, 0.99), (2.0, 0.99)])
async def test_zai_temperature_one_or_more_is_capped(zai, temperature, sent):
    req = request(sampling=common.SamplingParams(temperature=temperature))
    body = zai.body(req, ZAI_ROUTE, stream=False)
    assert body["temperature"] == sent
    assert "do_sample" not in body


async def test_zai_temperature_in_range_is_unchanged(zai):
    body = zai.body(
        request(sampling=common.SamplingParams(temperature=0.6)), ZAI_ROUTE, stream=False
    )
    assert body["temperature"] == pytest.approx(0.6)
    assert "do_sample" not in body


async def test_zai_no_temperature_no_do_sample(zai):
    body = zai.body(request(sampling=common.SamplingParams(top_p=0.5)), ZAI_ROUTE, stream=False)
    assert "temperature" not in body
    assert "do_sample" not in body


@pytest.mark.parametrize(
    ("top_p", "sent"), [(0.0001, 0.01), (0.01, 0.01), (0.5, 0.5), (0.99, 0.99), (1.0, 0.99)]
)
async def test_zai_top_p_is_clamped(zai, top_p, sent):
    body = zai.body(request(sampling=common.SamplingParams(top_p=top_p)), ZAI_ROUTE, stream=False)
    assert body["top_p"] == pytest.approx(sent)


@pytest.mark.parametrize(
    "choice",
    [
        common.ToolChoice(mode=common.TOOL_CHOICE_MODE_REQUIRED),
        common.ToolChoice(mode=common.TOOL_CHOICE_MODE_AUTO),
        common.ToolChoice(),
        None,
    ],
)
async def test_zai_tool_choice_is_always_auto_with_all_tools(zai, choice):
    fields: dict[str, object] = {"tools": [weather_tool("weather"), weather_tool("clock")]}
    if choice is not None:
        fields["tool_choice"] = choice
    body = zai.body(request(**fields), ZAI_ROUTE, stream=False)
    assert body["tool_choice"] == "auto"
    assert [t["function"]["name"] for t in body["tools"]] == ["weather", "clock"]


async def test_zai_named_tool_choice_keeps_only_that_tool(zai):
    req = request(
        tools=[weather_tool("weather"), weather_tool("clock"), weather_tool("news")],
        tool_choice=common.ToolChoice(function_name="clock"),
    )
    body = zai.body(req, ZAI_ROUTE, stream=False)
    assert body["tool_choice"] == "auto"
    assert [t["function"]["name"] for t in body["tools"]] == ["clock"]


async def test_zai_tool_choice_none_removes_the_tools(zai):
    req = request(
        tools=[weather_tool()], tool_choice=common.ToolChoice(mode=common.TOOL_CHOICE_MODE_NONE)
    )
    body = zai.body(req, ZAI_ROUTE, stream=False)
    assert "tools" not in body
    assert "tool_choice" not in body


async def test_zai_no_tools_no_tool_choice(zai):
    req = request(tool_choice=common.ToolChoice(mode=common.TOOL_CHOICE_MODE_REQUIRED))
    body = zai.body(req, ZAI_ROUTE, stream=False)
    assert "tools" not in body
    assert "tool_choice" not in body


async def test_zai_flattens_system_assistant_and_tool_parts_but_not_user_parts(zai):
    def parts(*texts: str) -> list[common.ContentPart]:
        return [common.ContentPart(text=t) for t in texts]

    image = common.ContentPart(image=common.ImagePart(url="https://example.test/a.png"))
    messages = [
        common.ChatMessage(role=common.ROLE_SYSTEM, parts=parts("You are ", "terse.")),
        common.ChatMessage(role=common.ROLE_USER, parts=[common.ContentPart(text="Look:"), image]),
        common.ChatMessage(role=common.ROLE_ASSISTANT, parts=parts("A ", "cat."), reasoning="r"),
        common.ChatMessage(role=common.ROLE_TOOL, tool_call_id="c1", parts=parts("40", " C")),
    ]
    body = zai.body(request(messages=messages), ZAI_ROUTE, stream=False)
    sent = body["messages"]
    assert sent[0] == {"role": "system", "content": "You are terse."}
    assert sent[1]["content"] == [
        {"type": "text", "text": "Look:"},
        {"type": "image_url", "image_url": {"url": "https://example.test/a.png"}},
    ]
    assert sent[2] == {"role": "assistant", "content": "A cat.", "reasoning_content": "r"}
    assert sent[3] == {"role": "tool", "content": "40 C", "tool_call_id": "c1"}


@pytest.mark.parametrize(("enabled", "kind"), [(True, "enabled"), (False, "disabled")])
async def test_zai_thinking_type(zai, enabled, kind):
    req = request(reasoning=common.ReasoningOptions(enabled=enabled))
    assert zai.body(req, ZAI_ROUTE, stream=False)["thinking"] == {"type": kind}


@pytest.mark.parametrize("clear", [True, False])
async def test_zai_clear_thinking_enables_thinking_by_default(zai, clear):
    req = request(zai=common.ZaiOptions(clear_thinking=clear))
    assert zai.body(req, ZAI_ROUTE, stream=False)["thinking"] == {
        "type": "enabled",
        "clear_thinking": clear,
    }


async def test_zai_clear_thinking_keeps_an_explicit_thinking_type(zai):
    req = request(
        reasoning=common.ReasoningOptions(enabled=False),
        zai=common.ZaiOptions(clear_thinking=False),
    )
    assert zai.body(req, ZAI_ROUTE, stream=False)["thinking"] == {
        "type": "disabled",
        "clear_thinking": False,
    }


async def test_zai_user_is_sent_as_user_id(zai):
    body = zai.body(request(user="tenant-42-user-9"), ZAI_ROUTE, stream=False)
    assert body["user_id"] == "tenant-42-user-9"
    assert "user" not in body


async def test_zai_stream_body(zai):
    body = zai.body(request(), ZAI_ROUTE, stream=True)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


# -- Z.AI: what it cannot accept ------------------------------------------------


async def test_zai_check_accepts_a_plain_request(zai):
    req = request(
        messages=[system("be terse"), user("hi")],
        sampling=common.SamplingParams(stop=["END"], temperature=0.0),
        user="tenant-42-user-9",
        response_format=common.ResponseFormat(type=common.RESPONSE_FORMAT_TYPE_JSON_OBJECT),
    )
    assert zai.check(req) == []


@pytest.mark.parametrize(
    ("fields", "field_name", "words"),
    [
        ({"sampling": common.SamplingParams(stop=["a", "b"])}, "sampling.stop", "one stop"),
        (
            {"sampling": common.SamplingParams(presence_penalty=0.0)},
            "sampling.presence_penalty",
            "not support",
        ),
        (
            {"sampling": common.SamplingParams(frequency_penalty=0.5)},
            "sampling.frequency_penalty",
            "not support",
        ),
        (
            {
                "response_format": common.ResponseFormat(
                    type=common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
                    json_schema=common.JsonSchemaFormat(name="s"),
                )
            },
            "response_format.type",
            "json_schema",
        ),
        ({"user": "u1234"}, "user", "6"),
        ({"messages": [system("only instructions")]}, "messages", "user"),
        (
            {
                "messages": [
                    system("s"),
                    common.ChatMessage(role=common.ROLE_ASSISTANT, content="a"),
                ]
            },
            "messages",
            "user",
        ),
    ],
)
async def test_zai_check_violations(zai, fields, field_name, words):
    violations = zai.check(request(**fields))
    assert [v.field for v in violations] == [field_name]
    assert words in violations[0].description


async def test_zai_check_reports_every_violation(zai):
    req = request(
        messages=[system("s")],
        sampling=common.SamplingParams(
            stop=["a", "b"], presence_penalty=1.0, frequency_penalty=1.0
        ),
        user="abc",
    )
    assert {v.field for v in zai.check(req)} == {
        "sampling.stop",
        "sampling.presence_penalty",
        "sampling.frequency_penalty",
        "user",
        "messages",
    }


async def test_zai_check_accepts_a_six_character_user_id(zai):
    assert zai.check(request(user="abcdef")) == []


# -- Z.AI: which endpoint -------------------------------------------------------


async def test_zai_default_endpoint_is_general(zai):
    req = request()
    assert zai.endpoint(req, ZAI_ROUTE) == common.ZAI_ENDPOINT_GENERAL
    assert (
        zai.url(req, ZAI_ROUTE, stream=False)
        == "https://general.zai.test/api/paas/v4/chat/completions"
    )


async def test_zai_configured_coding_model_uses_the_coding_endpoint(zai):
    route = Route(common.PROVIDER_ZAI, "glm-4.6", "zai/glm-4.6")
    req = request()
    assert zai.endpoint(req, route) == common.ZAI_ENDPOINT_CODING
    assert (
        zai.url(req, route, stream=False)
        == "https://coding.zai.test/api/coding/paas/v4/chat/completions"
    )


async def test_zai_requested_endpoint_wins_over_configuration(zai):
    coding_model = Route(common.PROVIDER_ZAI, "glm-4.6", "zai/glm-4.6")
    general = request(zai=common.ZaiOptions(endpoint=common.ZAI_ENDPOINT_GENERAL))
    coding = request(zai=common.ZaiOptions(endpoint=common.ZAI_ENDPOINT_CODING))
    assert zai.url(general, coding_model, stream=False) == (
        "https://general.zai.test/api/paas/v4/chat/completions"
    )
    assert zai.url(coding, ZAI_ROUTE, stream=False) == (
        "https://coding.zai.test/api/coding/paas/v4/chat/completions"
    )


async def test_zai_effort_none_turns_thinking_off(zai):
    req = request(reasoning=common.ReasoningOptions(effort=common.REASONING_EFFORT_NONE))
    assert zai.body(req, ZAI_ROUTE, stream=False)["thinking"] == {"type": "disabled"}


@pytest.mark.parametrize(
    ("reported", "expected"),
    [(10**30, 2**63 - 1), (1e20, 0), (-5, 0), (12.0, 12), ("12", 0), (True, 0), (None, 0)],
)
def test_token_counts_stay_within_the_proto_range(reported, expected):
    usage = usage_from_json({"prompt_tokens": reported})
    assert usage.prompt_tokens == expected
