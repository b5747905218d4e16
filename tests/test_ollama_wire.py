"""Ollama's /api/chat: request bodies, unary answers, usage, finish reasons, errors."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2

from llmgateway.server.config import OllamaSettings, Secret, Timeouts
from llmgateway.server.errors import GatewayError
from llmgateway.server.providers import upstream_errors as ue
from llmgateway.server.providers.ollama import OllamaProvider
from llmgateway.server.routing.router import Route
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

ROUTE = Route(common.PROVIDER_OLLAMA, "llama3.2", "ollama/llama3.2")
IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
WEATHER = struct_pb2.Struct()
WEATHER.update({"type": "object", "properties": {"city": {"type": "string"}}})


@pytest.fixture
async def ollama() -> AsyncIterator[OllamaProvider]:
    provider = OllamaProvider(
        OllamaSettings(base_url="http://ollama.test:11434", num_ctx=16384), Timeouts()
    )
    yield provider
    await provider.aclose()


def user(text: str) -> common.ChatMessage:
    return common.ChatMessage(role=common.ROLE_USER, content=text)


def request(**fields: Any) -> pb.CompleteRequest:
    fields.setdefault("messages", [user("Hi")])
    return pb.CompleteRequest(model="ollama/llama3.2", **fields)


def tools(*names: str) -> list[common.Tool]:
    return [common.Tool(name=n, description=f"{n} tool", parameters=WEATHER) for n in names]


# -- the request ----------------------------------------------------------------


async def test_the_url_headers_and_the_minimal_body(ollama: OllamaProvider) -> None:
    assert ollama.url(request(), ROUTE, stream=True) == "http://ollama.test:11434/api/chat"
    # No key locally: no Authorization header at all.
    assert ollama.auth_headers() == {}
    assert ollama.configured
    body = ollama.body(request(), ROUTE, stream=False)
    assert body == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": False,
        "options": {"num_ctx": 16384},
    }


async def test_stream_is_always_explicit_and_num_ctx_always_sent(ollama: OllamaProvider) -> None:
    for stream in (True, False):
        body = ollama.body(request(), ROUTE, stream=stream)
        assert body["stream"] is stream
        assert body["options"]["num_ctx"] == 16384


async def test_a_hosted_key_is_a_bearer_and_configured_headers_go_along() -> None:
    provider = OllamaProvider(
        OllamaSettings(
            api_key=Secret("ollama-hosted-test-key"),
            base_url="https://ollama.test",
            headers={"X-Team": "blue"},
            keep_alive="10m",
        ),
        Timeouts(),
    )
    try:
        assert provider.auth_headers() == {"Authorization": "Bearer ollama-hosted-test-key"}
        assert provider.extra_headers() == {"X-Team": "blue"}
        assert provider.body(request(), ROUTE, stream=True)["keep_alive"] == "10m"
    finally:
        await provider.aclose()


@pytest.mark.parametrize(("configured", "sent"), [("300", 300), ("-1", -1), ("5m", "5m")])
async def test_keep_alive_in_whole_seconds_goes_as_a_number(configured: str, sent: object) -> None:
    provider = OllamaProvider(OllamaSettings(keep_alive=configured), Timeouts())
    try:
        assert provider.body(request(), ROUTE, stream=False)["keep_alive"] == sent
    finally:
        await provider.aclose()


async def test_every_sampling_field_lands_in_options(ollama: OllamaProvider) -> None:
    sampling = common.SamplingParams(
        temperature=0.2,
        top_p=0.9,
        max_tokens=50,
        stop=["\n\n", "END"],
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=0.25,
    )
    body = ollama.body(request(sampling=sampling), ROUTE, stream=False)
    assert body["options"] == {
        "num_ctx": 16384,
        "temperature": pytest.approx(0.2),
        "top_p": pytest.approx(0.9),
        "num_predict": 50,
        "stop": ["\n\n", "END"],
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
    }
    # Nothing OpenAI-shaped at the top level: Ollama would ignore it silently.
    assert set(body) == {"model", "messages", "stream", "options"}


async def test_a_conversation_with_tools_images_thinking_and_tool_results(
    ollama: OllamaProvider,
) -> None:
    messages = [
        common.ChatMessage(role=common.ROLE_SYSTEM, content="Be brief."),
        common.ChatMessage(
            role=common.ROLE_USER,
            parts=[
                common.ContentPart(text="What is in this picture, "),
                common.ContentPart(image=common.ImagePart(url=f"data:image/png;base64,{IMAGE}")),
                common.ContentPart(text="and the weather?"),
            ],
        ),
        common.ChatMessage(
            role=common.ROLE_ASSISTANT,
            reasoning="I should look the weather up.",
            tool_calls=[common.ToolCall(id="call_1", name="weather", arguments='{"city":"Oslo"}')],
        ),
        common.ChatMessage(role=common.ROLE_TOOL, tool_call_id="call_1", content="-3 C, snow"),
    ]
    body = ollama.body(request(messages=messages, tools=tools("weather")), ROUTE, stream=True)
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is in this picture, and the weather?", "images": [IMAGE]},
        {
            "role": "assistant",
            "content": "",
            "thinking": "I should look the weather up.",
            "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Oslo"}}}],
        },
        {"role": "tool", "content": "-3 C, snow", "tool_name": "weather"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "weather tool",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]


async def test_an_image_by_url_is_refused_naming_the_part(ollama: OllamaProvider) -> None:
    message = common.ChatMessage(
        role=common.ROLE_USER,
        parts=[
            common.ContentPart(text="Look"),
            common.ContentPart(image=common.ImagePart(url="https://example.test/cat.png")),
        ],
    )
    [violation] = ollama.check(request(messages=[message]))
    assert violation.field == "messages[0].parts[1].image.url"
    assert "inline" in violation.description


async def test_tool_arguments_that_are_not_an_object_are_refused(ollama: OllamaProvider) -> None:
    message = common.ChatMessage(
        role=common.ROLE_ASSISTANT,
        tool_calls=[common.ToolCall(id="c", name="weather", arguments="[1, 2]")],
    )
    [violation] = ollama.check(request(messages=[user("Hi"), message]))
    assert violation.field == "messages[1].tool_calls[0].arguments"


async def test_tool_choice_none_offers_no_tools(ollama: OllamaProvider) -> None:
    choice = common.ToolChoice(mode=common.TOOL_CHOICE_MODE_NONE)
    body = ollama.body(request(tools=tools("a", "b"), tool_choice=choice), ROUTE, stream=False)
    assert "tools" not in body


async def test_tool_choice_auto_offers_every_tool(ollama: OllamaProvider) -> None:
    choice = common.ToolChoice(mode=common.TOOL_CHOICE_MODE_AUTO)
    body = ollama.body(request(tools=tools("a", "b"), tool_choice=choice), ROUTE, stream=False)
    assert [t["function"]["name"] for t in body["tools"]] == ["a", "b"]


async def test_a_named_function_is_the_only_tool_offered(ollama: OllamaProvider) -> None:
    choice = common.ToolChoice(function_name="b")
    body = ollama.body(request(tools=tools("a", "b"), tool_choice=choice), ROUTE, stream=False)
    assert [t["function"]["name"] for t in body["tools"]] == ["b"]
    assert "tool_choice" not in body


async def test_tool_choice_required_is_refused(ollama: OllamaProvider) -> None:
    choice = common.ToolChoice(mode=common.TOOL_CHOICE_MODE_REQUIRED)
    [violation] = ollama.check(request(tools=tools("a"), tool_choice=choice))
    assert violation.field == "tool_choice.mode"


async def test_json_modes_become_format(ollama: OllamaProvider) -> None:
    json_object = common.ResponseFormat(type=common.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
    assert (
        ollama.body(request(response_format=json_object), ROUTE, stream=False)["format"] == "json"
    )
    schema = struct_pb2.Struct()
    schema.update({"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}}})
    json_schema = common.ResponseFormat(
        type=common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
        json_schema=common.JsonSchemaFormat(name="answer", schema=schema),
    )
    body = ollama.body(request(response_format=json_schema), ROUTE, stream=False)
    # Whole numbers stay integers (a Struct holds doubles).
    assert body["format"] == {
        "type": "object",
        "properties": {"n": {"type": "integer", "maximum": 3}},
    }
    text = common.ResponseFormat(type=common.RESPONSE_FORMAT_TYPE_TEXT)
    assert "format" not in ollama.body(request(response_format=text), ROUTE, stream=False)


@pytest.mark.parametrize(
    ("reasoning", "think"),
    [
        (common.ReasoningOptions(enabled=True), True),
        (common.ReasoningOptions(enabled=False), False),
        (common.ReasoningOptions(effort=common.REASONING_EFFORT_NONE), False),
        (common.ReasoningOptions(effort=common.REASONING_EFFORT_LOW), "low"),
        (common.ReasoningOptions(effort=common.REASONING_EFFORT_MEDIUM), "medium"),
        (common.ReasoningOptions(enabled=True, effort=common.REASONING_EFFORT_HIGH), "high"),
    ],
)
async def test_reasoning_becomes_think(
    ollama: OllamaProvider, reasoning: common.ReasoningOptions, think: object
) -> None:
    assert ollama.body(request(reasoning=reasoning), ROUTE, stream=False)["think"] == think


async def test_no_reasoning_options_leave_think_to_the_model(ollama: OllamaProvider) -> None:
    assert "think" not in ollama.body(request(), ROUTE, stream=False)
    excluded = common.ReasoningOptions(exclude=True)
    assert "think" not in ollama.body(request(reasoning=excluded), ROUTE, stream=False)


@pytest.mark.parametrize(
    ("reasoning", "field"),
    [
        (common.ReasoningOptions(max_tokens=1024), "reasoning.max_tokens"),
        (common.ReasoningOptions(effort=common.REASONING_EFFORT_MINIMAL), "reasoning.effort"),
        (common.ReasoningOptions(effort=common.REASONING_EFFORT_XHIGH), "reasoning.effort"),
    ],
)
async def test_reasoning_ollama_cannot_express_is_refused(
    ollama: OllamaProvider, reasoning: common.ReasoningOptions, field: str
) -> None:
    [violation] = ollama.check(request(reasoning=reasoning))
    assert violation.field == field


async def test_a_valid_request_passes_the_check(ollama: OllamaProvider) -> None:
    assert ollama.check(request(tools=tools("a"))) == []


# -- the unary answer -------------------------------------------------------------


def done_line(**fields: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "model": "llama3.2",
        "created_at": "2026-01-05T10:00:00.000000Z",
        "message": {"role": "assistant", "content": "Hello!"},
        "done_reason": "stop",
        "done": True,
        "total_duration": 246778792,
        "load_duration": 39831125,
        "prompt_eval_count": 16,
        "prompt_eval_duration": 18102375,
        "eval_count": 22,
        "eval_duration": 104431583,
    }
    line.update(fields)
    return line


async def test_a_unary_answer(ollama: OllamaProvider) -> None:
    answer = ollama.parse_unary(done_line(), ROUTE, include_reasoning=True)
    assert answer.content == "Hello!"
    assert answer.model == "ollama/llama3.2"
    assert answer.provider == common.PROVIDER_OLLAMA
    assert answer.upstream_provider == "Ollama"
    assert answer.id == ""  # Ollama gives an answer no id; none is invented
    assert answer.finish_reason == common.FINISH_REASON_STOP
    assert answer.native_finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (16, 22)
    assert answer.usage.total_tokens == 38


async def test_thinking_is_reasoning_unless_excluded(ollama: OllamaProvider) -> None:
    line = done_line(message={"role": "assistant", "content": "4", "thinking": "2+2 is 4"})
    assert ollama.parse_unary(line, ROUTE, include_reasoning=True).reasoning == "2+2 is 4"
    assert ollama.parse_unary(line, ROUTE, include_reasoning=False).reasoning == ""


async def test_tool_calls_keep_their_ids_and_get_json_arguments(ollama: OllamaProvider) -> None:
    message = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_abc",
                "function": {"index": 0, "name": "weather", "arguments": {"city": "Oslo"}},
            },
            {"id": "call_def", "function": {"index": 1, "name": "time", "arguments": {}}},
        ],
    }
    answer = ollama.parse_unary(done_line(message=message), ROUTE, include_reasoning=True)
    assert [(c.id, c.name, c.arguments) for c in answer.tool_calls] == [
        ("call_abc", "weather", '{"city":"Oslo"}'),
        ("call_def", "time", "{}"),
    ]
    # Ollama says stop after tool calls; the calls decide.
    assert answer.finish_reason == common.FINISH_REASON_TOOL_CALLS
    assert answer.native_finish_reason == "stop"


async def test_tool_calls_without_ids_get_ids_unique_across_answers(ollama: OllamaProvider) -> None:
    message = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"function": {"name": "weather", "arguments": {"city": "Oslo"}}},
            {"function": {"name": "weather", "arguments": {"city": "Rome"}}},
        ],
    }
    first = ollama.parse_unary(done_line(message=message), ROUTE, include_reasoning=True)
    second = ollama.parse_unary(done_line(message=message), ROUTE, include_reasoning=True)
    ids = [c.id for c in first.tool_calls] + [c.id for c in second.tool_calls]
    assert all(re.fullmatch(r"call_[0-9a-f]{8}_[01]", i) for i in ids), ids
    # Unique within an answer and across turns, so a result pairs with its call.
    assert len(set(ids)) == 4


@pytest.mark.parametrize(
    ("native", "finish"),
    [
        ("stop", common.FINISH_REASON_STOP),
        ("length", common.FINISH_REASON_LENGTH),
        ("load", common.FINISH_REASON_OTHER),
        ("unload", common.FINISH_REASON_OTHER),
        ("something-new", common.FINISH_REASON_OTHER),
    ],
)
async def test_finish_reasons(ollama: OllamaProvider, native: str, finish: int) -> None:
    answer = ollama.parse_unary(done_line(done_reason=native), ROUTE, include_reasoning=True)
    assert (answer.finish_reason, answer.native_finish_reason) == (finish, native)
    assert ollama.finish_reason(native, ROUTE) == finish


async def test_a_server_too_old_for_done_reason_ended_on_stop(ollama: OllamaProvider) -> None:
    line = done_line()
    del line["done_reason"]
    answer = ollama.parse_unary(line, ROUTE, include_reasoning=True)
    assert (answer.finish_reason, answer.native_finish_reason) == (
        common.FINISH_REASON_STOP,
        "stop",
    )


async def test_a_prompt_cache_hit_counts_0_prompt_tokens_never_an_invented_number(
    ollama: OllamaProvider,
) -> None:
    line = done_line()
    del line["prompt_eval_count"]
    usage = ollama.parse_unary(line, ROUTE, include_reasoning=True).usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (0, 22, 22)
    assert (usage.cached_tokens, usage.reasoning_tokens) == (0, 0)


async def test_no_counts_at_all_means_no_usage(ollama: OllamaProvider) -> None:
    line = done_line()
    del line["prompt_eval_count"], line["eval_count"]
    assert not ollama.parse_unary(line, ROUTE, include_reasoning=True).HasField("usage")


async def test_an_unfinished_or_strange_unary_answer_is_malformed(ollama: OllamaProvider) -> None:
    for payload in (done_line(done=False), [done_line()], done_line(message="text")):
        with pytest.raises((GatewayError, TypeError)):
            ollama.parse_unary(payload, ROUTE, include_reasoning=True)
    with pytest.raises(GatewayError) as caught:
        ollama.parse_unary(done_line(done=False), ROUTE, include_reasoning=True)
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_MALFORMED_RESPONSE


async def test_a_200_holding_only_an_error_is_that_error(ollama: OllamaProvider) -> None:
    with pytest.raises(GatewayError) as caught:
        ollama.parse_unary({"error": "an error was encountered"}, ROUTE, include_reasoning=True)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert "an error was encountered" in caught.value.message


async def test_ndjson_is_a_stream_under_either_content_type(ollama: OllamaProvider) -> None:
    assert ollama.stream_content_type_ok("application/x-ndjson")
    assert ollama.stream_content_type_ok("application/json; charset=utf-8")
    assert not ollama.stream_content_type_ok("text/html")
    assert not ollama.stream_content_type_ok("text/event-stream")


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message", "reason"),
    [
        (404, "model 'llama9' not found", pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND),
        (
            400,
            'model "llama9" not found, try pulling it first',
            pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND,
        ),
        (404, "404 page not found", pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND),
        (
            400,
            "the input length exceeds the context length",
            pb.ERROR_REASON_UPSTREAM_CONTEXT_LENGTH_EXCEEDED,
        ),
        (
            400,
            "registry.ollama.ai/library/gemma3:1b does not support tools",
            pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST,
        ),
        (400, '"gemma3:1b" does not support thinking', pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST),
        (400, "invalid options", pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST),
        (401, "unauthorized", pb.ERROR_REASON_UPSTREAM_AUTH_FAILED),
        (403, "forbidden", pb.ERROR_REASON_UPSTREAM_PERMISSION_DENIED),
        (429, "too many requests", pb.ERROR_REASON_UPSTREAM_RATE_LIMITED),
        (
            500,
            "an error was encountered while running the model",
            pb.ERROR_REASON_UPSTREAM_UNAVAILABLE,
        ),
        # A 5xx naming a missing file is the server's trouble, not a missing model.
        (500, "llama runner process not found", pb.ERROR_REASON_UPSTREAM_UNAVAILABLE),
        (502, "bad gateway", pb.ERROR_REASON_UPSTREAM_UNAVAILABLE),
        # In a 200: a line of the stream, or the whole unary body.
        (
            None,
            "an error was encountered while running the model",
            pb.ERROR_REASON_UPSTREAM_UNAVAILABLE,
        ),
        (None, "model 'x' not found", pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND),
        (
            None,
            "the input length exceeds the context length",
            pb.ERROR_REASON_UPSTREAM_CONTEXT_LENGTH_EXCEEDED,
        ),
    ],
)
async def test_classification(
    ollama: OllamaProvider, status: int | None, message: str, reason: int
) -> None:
    failure = ollama.failure_from_error_body(status, {"error": message}, b"")
    assert failure.message == message
    assert ollama.classify(failure) == reason


async def test_a_plain_text_error_body_keeps_its_words(ollama: OllamaProvider) -> None:
    failure = ollama.failure_from_error_body(404, None, b"404 page not found")
    assert failure.message == "404 page not found"
    hint = ollama.hint(failure)
    assert hint is not None
    assert "OLLAMA_BASE_URL" in hint


async def test_an_error_names_the_model_and_keeps_ollamas_words(ollama: OllamaProvider) -> None:
    error = ollama.in_band_error("model 'llama9' not found", ROUTE)
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert "model 'llama9' not found" in error.message
    assert "ollama pull" in error.message
    assert error.metadata["provider"] == "ollama"
    assert error.metadata["model"] == "ollama/llama3.2"


async def test_retry_after_comes_from_the_header(ollama: OllamaProvider) -> None:
    failure = ue.UpstreamFailure(429, None, "too many requests")
    assert ollama.retry_after_from(failure, httpx.Headers({"retry-after": "7"})) == 7.0
    assert ollama.retry_after_from(failure, httpx.Headers()) is None
