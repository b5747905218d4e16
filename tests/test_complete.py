"""Unary Complete, end to end over gRPC against the fake upstream."""

from __future__ import annotations

import json

import pytest
from google.protobuf import struct_pb2

from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from tests.conftest import user

WEATHER_TOOL = common.Tool(name="get_weather", description="Current weather")
WEATHER_TOOL.parameters.update(
    {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
        "maxProperties": 1,
    }
)


async def test_openrouter_answer_usage_cost_and_served_model(stub, fake):
    response = await stub.Complete(
        pb.CompleteRequest(model="openrouter/openai/gpt-4o-mini", messages=[user("hi there")]),
        timeout=10,
    )
    assert response.content == "Hello from the fake upstream! You said: hi there"
    assert response.provider == common.PROVIDER_OPENROUTER
    assert response.model == "openrouter/openai/gpt-4o-mini"
    assert response.upstream_provider == "OpenAI"
    assert response.id.startswith("gen-")
    assert response.finish_reason == common.FINISH_REASON_STOP
    assert response.native_finish_reason == "stop"
    usage = response.usage
    assert usage.prompt_tokens == 7
    assert usage.completion_tokens == 9  # one token per word in the fake
    assert usage.total_tokens == 16
    assert usage.HasField("cost_usd")
    assert usage.cost_usd == round(7e-6 + 9 * 2e-6, 9)
    sent = fake.requests[-1]
    assert sent.body["model"] == "openai/gpt-4o-mini"
    assert "stream" not in sent.body
    assert sent.headers["authorization"] == f"Bearer {fake.openrouter_key}"
    assert sent.headers["http-referer"] == "https://gateway.example.test"
    assert sent.headers["x-title"] == "llmgateway-tests"


async def test_zai_answer_with_reasoning_and_a_cost_from_the_price_table(stub, fake):
    response = await stub.Complete(
        pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hello")]), timeout=10
    )
    assert response.provider == common.PROVIDER_ZAI
    assert response.model == "zai/glm-4.7"
    assert response.upstream_provider == "Z.AI"
    assert response.reasoning == "Let me think about what the user asked, then answer."
    assert response.content.endswith("You said: hello")
    assert response.usage.reasoning_tokens == 10
    # Z.AI reports no cost; glm-4.7 costs $0.60 / $2.20 per million tokens.
    assert response.usage.cost_usd == pytest.approx((6 * 0.60 + 18 * 2.20) / 1e6)
    sent = fake.requests[-1]
    assert sent.endpoint == "general"
    assert sent.headers["accept-language"] == "en-US,en"
    assert sent.headers["authorization"] == f"Bearer {fake.zai_key}"


async def test_excluded_reasoning_is_not_returned(stub):
    request = pb.CompleteRequest(
        model="zai/glm-4.7",
        messages=[user("hello")],
        reasoning=common.ReasoningOptions(exclude=True),
    )
    response = await stub.Complete(request, timeout=10)
    assert response.reasoning == ""
    assert response.content


async def test_openrouter_tool_call_round_trip(stub, fake):
    request = pb.CompleteRequest(
        model="openrouter/anthropic/claude-sonnet-4.5",
        messages=[user("weather in Boston?")],
        tools=[WEATHER_TOOL],
        tool_choice=common.ToolChoice(function_name="get_weather"),
    )
    response = await stub.Complete(request, timeout=10)
    assert response.finish_reason == common.FINISH_REASON_TOOL_CALLS
    assert response.native_finish_reason == "tool_use"
    assert [(c.id, c.name, json.loads(c.arguments)) for c in response.tool_calls] == [
        ("call_fake_0001", "get_weather", {"location": "Boston"})
    ]
    tool_spec = fake.requests[-1].body["tools"][0]["function"]
    assert tool_spec["parameters"]["maxProperties"] == 1
    assert isinstance(tool_spec["parameters"]["maxProperties"], int)
    assert fake.requests[-1].body["tool_choice"] == {
        "type": "function",
        "function": {"name": "get_weather"},
    }

    follow_up = pb.CompleteRequest(
        model="openrouter/anthropic/claude-sonnet-4.5",
        messages=[
            user("weather in Boston?"),
            common.ChatMessage(role=common.ROLE_ASSISTANT, tool_calls=response.tool_calls),
            common.ChatMessage(
                role=common.ROLE_TOOL, tool_call_id="call_fake_0001", content="22 C and sunny"
            ),
        ],
        tools=[WEATHER_TOOL],
    )
    answer = await stub.Complete(follow_up, timeout=10)
    assert answer.content == "The tool answered: 22 C and sunny"
    sent_messages = fake.requests[-1].body["messages"]
    assert sent_messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_fake_0001",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location": "Boston"}'},
            }
        ],
    }
    assert sent_messages[2]["tool_call_id"] == "call_fake_0001"


async def test_zai_forced_tool_is_sent_as_auto_with_only_that_tool(stub, fake):
    other = common.Tool(name="get_time")
    request = pb.CompleteRequest(
        model="zai/glm-4.7",
        messages=[user("weather?")],
        tools=[other, WEATHER_TOOL],
        tool_choice=common.ToolChoice(function_name="get_weather"),
    )
    response = await stub.Complete(request, timeout=10)
    assert [c.name for c in response.tool_calls] == ["get_weather"]
    sent = fake.requests[-1].body
    assert sent["tool_choice"] == "auto"
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]


async def test_zai_sampling_edges_are_adapted(stub, fake):
    request = pb.CompleteRequest(
        model="zai/glm-4.5",
        messages=[user("hi")],
        sampling=common.SamplingParams(temperature=0.0, top_p=1.0, max_tokens=500, stop=["END"]),
    )
    await stub.Complete(request, timeout=10)
    sent = fake.requests[-1].body
    assert sent["do_sample"] is False
    assert sent["temperature"] == 0.01
    assert sent["top_p"] == 0.99
    assert sent["stop"] == ["END"]
    assert sent["max_tokens"] == 500


async def test_zai_thinking_off_and_coding_endpoint(stub, fake):
    request = pb.CompleteRequest(
        model="zai/glm-4.7",
        messages=[user("hi")],
        reasoning=common.ReasoningOptions(enabled=False),
        zai=common.ZaiOptions(endpoint=common.ZAI_ENDPOINT_CODING),
    )
    response = await stub.Complete(request, timeout=10)
    assert response.reasoning == ""
    assert fake.requests[-1].endpoint == "coding"
    assert fake.requests[-1].body["thinking"] == {"type": "disabled"}


async def test_configured_coding_model_and_alias(stub, fake):
    await stub.Complete(pb.CompleteRequest(model="zai/glm-4.6", messages=[user("a")]), timeout=10)
    assert fake.requests[-1].endpoint == "coding"
    response = await stub.Complete(
        pb.CompleteRequest(model="fast", messages=[user("b")]), timeout=10
    )
    assert response.model == "zai/glm-4.5-flash"
    assert fake.requests[-1].body["model"] == "glm-4.5-flash"
    assert fake.requests[-1].endpoint == "general"


async def test_openrouter_fallback_model_is_reported(stub, fake):
    request = pb.CompleteRequest(
        model="openrouter/test/fault-fallback",
        messages=[user("hi")],
        openrouter=common.OpenRouterOptions(
            models=["openrouter/openai/gpt-4o-mini"],
            provider=common.ProviderPreferences(
                order=["openai"],
                allow_fallbacks=False,
                require_parameters=True,
                data_collection=common.DATA_COLLECTION_DENY,
                sort=common.PROVIDER_SORT_PRICE,
                max_price=common.MaxPrice(prompt=5, completion=20),
            ),
        ),
        reasoning=common.ReasoningOptions(effort=common.REASONING_EFFORT_HIGH),
        user="tenant-42/user-17",
    )
    response = await stub.Complete(request, timeout=10)
    assert response.model == "openrouter/openai/gpt-4o-mini"
    sent = fake.requests[-1].body
    assert sent["models"] == ["openai/gpt-4o-mini"]
    assert sent["provider"] == {
        "order": ["openai"],
        "allow_fallbacks": False,
        "require_parameters": True,
        "data_collection": "deny",
        "sort": "price",
        "max_price": {"prompt": 5, "completion": 20},
    }
    assert sent["reasoning"] == {"effort": "high"}
    assert sent["user"] == "tenant-42/user-17"
    assert response.reasoning  # reasoning was asked for and returned


async def test_image_parts_and_json_schema_reach_openrouter(stub, fake):
    schema = struct_pb2.Struct()
    schema.update({"type": "object", "properties": {"answer": {"type": "string"}}})
    message = common.ChatMessage(
        role=common.ROLE_USER,
        parts=[
            common.ContentPart(text="What is in this picture?"),
            common.ContentPart(
                image=common.ImagePart(
                    url="data:image/png;base64,iVBORw0KGgo=", detail=common.IMAGE_DETAIL_LOW
                )
            ),
        ],
    )
    request = pb.CompleteRequest(
        model="openrouter/openai/gpt-4o",
        messages=[message],
        response_format=common.ResponseFormat(
            type=common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            json_schema=common.JsonSchemaFormat(name="answer", schema=schema, strict=True),
        ),
    )
    response = await stub.Complete(request, timeout=10)
    assert json.loads(response.content) == {"answer": "hello"}
    sent = fake.requests[-1].body
    assert sent["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
    }
    assert sent["response_format"]["json_schema"]["strict"] is True


async def test_zai_content_filter_withdraws_content(stub):
    response = await stub.Complete(
        pb.CompleteRequest(model="zai/fault-sensitive", messages=[user("hi")]), timeout=10
    )
    assert response.finish_reason == common.FINISH_REASON_CONTENT_FILTER
    assert response.native_finish_reason == "sensitive"
    assert response.content == ""


async def test_zai_context_window_finish_is_length(stub):
    response = await stub.Complete(
        pb.CompleteRequest(model="zai/fault-context-window", messages=[user("hi")]), timeout=10
    )
    assert response.finish_reason == common.FINISH_REASON_LENGTH
    assert response.native_finish_reason == "model_context_window_exceeded"


async def test_max_tokens_truncation_reports_length(stub):
    response = await stub.Complete(
        pb.CompleteRequest(
            model="openrouter/openai/gpt-4o-mini",
            messages=[user("hi")],
            sampling=common.SamplingParams(max_tokens=3),
        ),
        timeout=10,
    )
    assert response.finish_reason == common.FINISH_REASON_LENGTH
    assert response.content == "Hello from the "


async def test_missing_usage_leaves_usage_unset(stub):
    response = await stub.Complete(
        pb.CompleteRequest(model="openrouter/test/fault-no-usage", messages=[user("hi")]),
        timeout=10,
    )
    assert response.content
    assert not response.HasField("usage")
