"""AnthropicProvider: request bodies, refusals naming the field, unary answers, usage,
finish reasons, error classification and the paginated catalogue (no network)."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import orjson
import pytest
from google.protobuf import struct_pb2

from llmgateway.server.config import AnthropicSettings, Secret, Timeouts
from llmgateway.server.errors import GatewayError
from llmgateway.server.providers import upstream_errors as ue
from llmgateway.server.providers.anthropic import (
    DEFAULT_THINKING_BUDGET,
    AnthropicProvider,
    builtin_model,
    usage_from_json,
)
from llmgateway.server.providers.redaction import REDACTED
from llmgateway.server.routing.router import Route
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

ROUTE = Route(common.PROVIDER_ANTHROPIC, "claude-sonnet-4-5", "anthropic/claude-sonnet-4-5")
KEY = "sk-ant-api03-unittestkey000000000000000000"
SETTINGS = AnthropicSettings(
    api_key=Secret(KEY),
    base_url="https://anthropic.example.test",
    beta=("interleaved-thinking-2025-05-14", "context-1m-2025-08-07"),
    headers={"X-Team": "search", "anthropic-version": "overridden"},
)
PROVIDER = AnthropicProvider(SETTINGS, Timeouts())


def msg(role: common.Role.ValueType, content: str = "", **fields: Any) -> common.ChatMessage:
    return common.ChatMessage(role=role, content=content, **fields)


def user(text: str) -> common.ChatMessage:
    return msg(common.ROLE_USER, text)


def request(*messages: common.ChatMessage, **fields: Any) -> pb.CompleteRequest:
    return pb.CompleteRequest(
        model="anthropic/claude-sonnet-4-5", messages=list(messages) or [user("hi")], **fields
    )


def body(req: pb.CompleteRequest, *, stream: bool = False) -> dict[str, Any]:
    assert PROVIDER.check(req) == []
    return PROVIDER.body(req, ROUTE, stream=stream)


def refused(req: pb.CompleteRequest) -> dict[str, str]:
    return {v.field: v.description for v in PROVIDER.check(req)}


def thinking(text: str, signature: str, index: int, **fields: Any) -> common.ReasoningDetail:
    return common.ReasoningDetail(
        provider=fields.pop("provider", common.PROVIDER_ANTHROPIC),
        kind=fields.pop("kind", common.REASONING_DETAIL_KIND_THINKING),
        text=text,
        signature=signature,
        index=index,
    )


# -- URL and headers ------------------------------------------------------------------


def test_url_and_headers():
    assert (
        PROVIDER.url(request(), ROUTE, stream=True) == "https://anthropic.example.test/v1/messages"
    )
    headers = PROVIDER._headers()
    assert headers["x-api-key"] == KEY
    assert "Authorization" not in headers
    # The configured version wins over an extra header of the same name.
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "interleaved-thinking-2025-05-14,context-1m-2025-08-07"
    assert headers["X-Team"] == "search"


def test_no_beta_header_without_betas_and_no_key_header_without_a_key():
    provider = AnthropicProvider(AnthropicSettings(), Timeouts())
    assert "anthropic-beta" not in provider._headers()
    assert "x-api-key" not in provider._headers()


# -- the body ----------------------------------------------------------------------------


def test_a_minimal_body():
    assert body(request(user("hello"))) == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
    }
    assert body(request(), stream=True)["stream"] is True


def test_leading_system_messages_become_the_system_field():
    sent = body(
        request(
            msg(common.ROLE_SYSTEM, "Be terse."), msg(common.ROLE_SYSTEM, "No emoji."), user("hi")
        )
    )
    assert sent["system"] == "Be terse.\n\nNo emoji."
    assert [m["role"] for m in sent["messages"]] == ["user"]


def test_a_late_system_message_is_refused_naming_it():
    req = request(user("hi"), msg(common.ROLE_ASSISTANT, "hello"), msg(common.ROLE_SYSTEM, "x"))
    assert "messages[2].role" in refused(req)


def test_sampling_is_passed_on():
    sampling = common.SamplingParams(temperature=0.3, top_p=0.9, max_tokens=77, stop=["END", "##"])
    sent = body(request(sampling=sampling))
    assert sent["temperature"] == 0.3
    assert sent["top_p"] == 0.9
    assert sent["max_tokens"] == 77
    assert sent["stop_sequences"] == ["END", "##"]


def test_parameters_anthropic_lacks_are_refused_each_by_name():
    sampling = common.SamplingParams(
        temperature=1.5, seed=4, presence_penalty=0.1, frequency_penalty=0.2
    )
    fields = refused(request(sampling=sampling))
    assert set(fields) == {
        "sampling.temperature",
        "sampling.seed",
        "sampling.presence_penalty",
        "sampling.frequency_penalty",
    }


@pytest.mark.parametrize(
    "kind", [common.RESPONSE_FORMAT_TYPE_JSON_OBJECT, common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA]
)
def test_json_output_is_refused(kind):
    req = request(response_format=common.ResponseFormat(type=kind))
    assert "response_format.type" in refused(req)


def test_user_goes_in_metadata():
    assert body(request(user="user-1234"))["metadata"] == {"user_id": "user-1234"}


def test_tools_and_tool_choice():
    schema = struct_pb2.Struct()
    schema.update({"type": "object", "properties": {"city": {"type": "string"}}, "maxItems": 3})
    tools = [
        common.Tool(name="weather", description="Weather by city", parameters=schema, strict=True),
        common.Tool(name="now"),
    ]
    sent = body(request(tools=tools))
    assert sent["tools"] == [
        {
            "name": "weather",
            "description": "Weather by city",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "maxItems": 3,
            },
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in sent
    choices = {
        common.TOOL_CHOICE_MODE_AUTO: {"type": "auto"},
        common.TOOL_CHOICE_MODE_NONE: {"type": "none"},
        common.TOOL_CHOICE_MODE_REQUIRED: {"type": "any"},
    }
    for mode, expected in choices.items():
        assert (
            body(request(tools=tools, tool_choice=common.ToolChoice(mode=mode)))["tool_choice"]
            == expected
        )
    forced = common.ToolChoice(function_name="now")
    assert body(request(tools=tools, tool_choice=forced))["tool_choice"] == {
        "type": "tool",
        "name": "now",
    }


def test_images_by_data_url_and_by_https_url():
    parts = [
        common.ContentPart(text="What is this?"),
        common.ContentPart(image=common.ImagePart(url="data:image/png;base64,iVBORw0KGgo=")),
        common.ContentPart(
            image=common.ImagePart(
                url="https://img.example.test/a.jpg", detail=common.IMAGE_DETAIL_HIGH
            )
        ),
    ]
    sent = body(request(common.ChatMessage(role=common.ROLE_USER, parts=parts)))
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://img.example.test/a.jpg"}},
    ]


def test_images_anthropic_cannot_take_are_refused_naming_the_part():
    plain_http = common.ContentPart(image=common.ImagePart(url="http://img.example.test/a.jpg"))
    assert "messages[0].parts[0].image.url" in refused(
        request(common.ChatMessage(role=common.ROLE_USER, parts=[plain_http]))
    )
    image = common.ContentPart(image=common.ImagePart(url="https://img.example.test/a.jpg"))
    in_system = common.ChatMessage(role=common.ROLE_SYSTEM, parts=[image])
    assert "messages[0].parts" in refused(request(in_system, user("hi")))
    in_assistant = common.ChatMessage(role=common.ROLE_ASSISTANT, parts=[image])
    assert "messages[1].parts[0]" in refused(request(user("hi"), in_assistant, user("and?")))


def tool_turns() -> list[common.ChatMessage]:
    calls = [
        common.ToolCall(id="toolu_a", name="weather", arguments='{"city": "Oslo"}'),
        common.ToolCall(id="toolu_b", name="now", arguments=""),
    ]
    return [
        user("Weather and time?"),
        msg(common.ROLE_ASSISTANT, "Checking.", tool_calls=calls),
        msg(common.ROLE_TOOL, "12C", tool_call_id="toolu_a"),
        msg(common.ROLE_TOOL, "10:00", tool_call_id="toolu_b"),
        user("Thanks, and tomorrow?"),
    ]


def test_tool_calls_and_results_become_blocks_and_consecutive_results_share_a_user_turn():
    sent = body(request(*tool_turns()))
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather and time?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "toolu_b", "name": "now", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "12C"},
                {"type": "tool_result", "tool_use_id": "toolu_b", "content": "10:00"},
                {"type": "text", "text": "Thanks, and tomorrow?"},
            ],
        },
    ]


def test_tool_arguments_that_are_no_object_are_refused_naming_them():
    call = common.ToolCall(id="toolu_a", name="weather", arguments="[1]")
    req = request(user("hi"), msg(common.ROLE_ASSISTANT, tool_calls=[call]))
    assert "messages[1].tool_calls[0].arguments" in refused(req)


def test_thinking_goes_back_byte_for_byte_first_and_in_order_and_only_anthropics_own():
    details = [
        thinking("", "REDACTED==", 2, kind=common.REASONING_DETAIL_KIND_REDACTED_THINKING),
        thinking(
            "Gemini's",
            "gem-sig",
            0,
            provider=common.PROVIDER_GEMINI,
            kind=common.REASONING_DETAIL_KIND_THOUGHT_SIGNATURE,
        ),
        thinking("First, \u00e9 think.\n", "sig/+A==", 0),
    ]
    assistant = msg(
        common.ROLE_ASSISTANT,
        "Answer.",
        reasoning="a bare reasoning string is never sent",
        reasoning_details=details,
    )
    sent = body(request(user("hi"), assistant, user("more")))
    assert sent["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "First, \u00e9 think.\n", "signature": "sig/+A=="},
        {"type": "redacted_thinking", "data": "REDACTED=="},
        {"type": "text", "text": "Answer."},
    ]
    assert b"a bare reasoning string" not in orjson.dumps(sent)


def test_a_thinking_detail_without_its_signature_is_refused_naming_it():
    foreign = thinking(
        "",
        "gem-sig",
        0,
        provider=common.PROVIDER_GEMINI,
        kind=common.REASONING_DETAIL_KIND_THOUGHT_SIGNATURE,
    )
    details = [foreign, thinking("t", "", 0)]
    assistant = msg(common.ROLE_ASSISTANT, "A.", reasoning_details=details)
    assert "messages[1].reasoning_details[1].signature" in refused(request(user("hi"), assistant))


def test_an_anthropic_detail_of_another_kind_is_refused():
    detail = thinking("", "x", 0, kind=common.REASONING_DETAIL_KIND_OPENROUTER)
    assistant = msg(common.ROLE_ASSISTANT, "A.", reasoning_details=[detail])
    assert "messages[1].reasoning_details[0].kind" in refused(request(user("hi"), assistant))


# -- reasoning ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("effort", "budget"),
    [
        (common.REASONING_EFFORT_MINIMAL, 1024),
        (common.REASONING_EFFORT_LOW, 2048),
        (common.REASONING_EFFORT_MEDIUM, 8192),
        (common.REASONING_EFFORT_HIGH, 16384),
        (common.REASONING_EFFORT_XHIGH, 32768),
    ],
)
def test_effort_is_a_thinking_budget_on_top_of_the_default_max_tokens(effort, budget):
    sent = body(request(reasoning=common.ReasoningOptions(effort=effort)))
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert sent["max_tokens"] == budget + 4096


def test_enabled_alone_thinks_at_the_default_budget_and_max_tokens_sets_it_exactly():
    sent = body(request(reasoning=common.ReasoningOptions(enabled=True)))
    assert sent["thinking"]["budget_tokens"] == DEFAULT_THINKING_BUDGET
    sent = body(
        request(
            reasoning=common.ReasoningOptions(max_tokens=3000),
            sampling=common.SamplingParams(max_tokens=5000),
        )
    )
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 3000}
    assert sent["max_tokens"] == 5000


@pytest.mark.parametrize(
    "reasoning",
    [
        common.ReasoningOptions(),
        common.ReasoningOptions(enabled=False),
        common.ReasoningOptions(effort=common.REASONING_EFFORT_NONE),
        common.ReasoningOptions(exclude=True),
    ],
)
def test_no_thinking_unless_asked(reasoning):
    assert "thinking" not in body(request(reasoning=reasoning))


def test_exclude_still_thinks():
    req = request(
        reasoning=common.ReasoningOptions(effort=common.REASONING_EFFORT_LOW, exclude=True)
    )
    assert body(req)["thinking"]["budget_tokens"] == 2048
    assert PROVIDER.include_reasoning(req) is False


def test_thinking_budgets_anthropic_refuses_are_refused_naming_the_field():
    small = request(reasoning=common.ReasoningOptions(max_tokens=512))
    assert "reasoning.max_tokens" in refused(small)
    tight = request(
        reasoning=common.ReasoningOptions(max_tokens=2000),
        sampling=common.SamplingParams(max_tokens=2000),
    )
    assert "sampling.max_tokens" in refused(tight)
    forced = request(
        tools=[common.Tool(name="now")],
        tool_choice=common.ToolChoice(mode=common.TOOL_CHOICE_MODE_REQUIRED),
        reasoning=common.ReasoningOptions(enabled=True),
    )
    assert "tool_choice" in refused(forced)


# -- unary answers ------------------------------------------------------------------------------


ANSWER = {
    "id": "msg_01unary",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "Weather, so the tool.", "signature": "c2lnLTE="},
        {"type": "redacted_thinking", "data": "cmVkYWN0ZWQ="},
        {"type": "text", "text": "Let me "},
        {"type": "text", "text": "check."},
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
        {
            "type": "tool_use",
            "id": "toolu_1",
            "name": "weather",
            "input": {"city": "Oslo"},
            "caller": {"type": "direct"},
        },
        {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 3,
        "cache_creation_input_tokens": 418,
        "cache_read_input_tokens": 1111,
        "output_tokens": 33,
        "output_tokens_details": {"thinking_tokens": 12},
    },
}


def test_a_unary_answer():
    answer = PROVIDER.parse_unary(ANSWER, ROUTE, include_reasoning=True)
    assert answer.id == "msg_01unary"
    assert answer.model == "anthropic/claude-sonnet-4-5-20250929"
    assert answer.provider == common.PROVIDER_ANTHROPIC
    assert answer.content == "Let me check."
    assert answer.reasoning == "Weather, so the tool."
    assert [(c.id, c.name, orjson.loads(c.arguments)) for c in answer.tool_calls] == [
        ("toolu_1", "weather", {"city": "Oslo"}),
        ("toolu_2", "now", {}),
    ]
    assert answer.finish_reason == common.FINISH_REASON_TOOL_CALLS
    assert answer.native_finish_reason == "tool_use"
    think, redacted = answer.reasoning_details
    assert (think.kind, think.text, think.signature, think.index) == (
        common.REASONING_DETAIL_KIND_THINKING,
        "Weather, so the tool.",
        "c2lnLTE=",
        0,
    )
    assert (redacted.kind, redacted.signature, redacted.index) == (
        common.REASONING_DETAIL_KIND_REDACTED_THINKING,
        "cmVkYWN0ZWQ=",
        1,
    )
    assert answer.usage == common.Usage(
        prompt_tokens=1532,
        completion_tokens=33,
        total_tokens=1565,
        cached_tokens=1111,
        cache_write_tokens=418,
        reasoning_tokens=12,
    )


def test_excluded_reasoning_keeps_the_details():
    answer = PROVIDER.parse_unary(ANSWER, ROUTE, include_reasoning=False)
    assert answer.reasoning == ""
    assert len(answer.reasoning_details) == 2


def test_an_error_in_a_200_is_raised_as_that_error():
    payload = {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": "req_1",
    }
    with pytest.raises(GatewayError) as caught:
        PROVIDER.parse_unary(payload, ROUTE, include_reasoning=True)
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_OVERLOADED
    assert caught.value.metadata["upstreamRequestId"] == "req_1"


@pytest.mark.parametrize(
    "payload", [[], {"content": []}, {"stop_reason": "end_turn", "content": 3}]
)
def test_answers_of_the_wrong_shape_are_malformed(payload):
    with pytest.raises(GatewayError) as caught:
        PROVIDER.parse_unary(payload, ROUTE, include_reasoning=True)
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_MALFORMED_RESPONSE


def test_usage_without_cache_or_thinking_counts():
    assert usage_from_json({"input_tokens": 16, "output_tokens": 34}) == common.Usage(
        prompt_tokens=16, completion_tokens=34, total_tokens=50
    )
    # Nonsense counts are 0, never negative; reasoning never exceeds completion.
    assert usage_from_json(
        {"input_tokens": -3, "output_tokens": 2, "output_tokens_details": {"thinking_tokens": 9}}
    ) == common.Usage(completion_tokens=2, total_tokens=2, reasoning_tokens=2)


@pytest.mark.parametrize(
    ("native", "reason"),
    [
        ("end_turn", common.FINISH_REASON_STOP),
        ("stop_sequence", common.FINISH_REASON_STOP),
        ("max_tokens", common.FINISH_REASON_LENGTH),
        ("model_context_window_exceeded", common.FINISH_REASON_LENGTH),
        ("tool_use", common.FINISH_REASON_TOOL_CALLS),
        ("refusal", common.FINISH_REASON_CONTENT_FILTER),
        ("pause_turn", common.FINISH_REASON_OTHER),
        ("something_new", common.FINISH_REASON_OTHER),
    ],
)
def test_finish_reasons(native, reason):
    assert PROVIDER.finish_reason(native, ROUTE) == reason


# -- errors ----------------------------------------------------------------------------------------


def envelope(kind: str, message: str) -> bytes:
    return orjson.dumps(
        {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011Ca"}
    )


@pytest.mark.parametrize(
    ("status", "kind", "message", "code", "reason"),
    [
        (
            400,
            "invalid_request_error",
            "max_tokens: Field required",
            "INVALID_ARGUMENT",
            "UPSTREAM_REJECTED_REQUEST",
        ),
        (
            400,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API.",
            "FAILED_PRECONDITION",
            "UPSTREAM_INSUFFICIENT_CREDITS",
        ),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 250000 tokens > 200000 maximum",
            "INVALID_ARGUMENT",
            "UPSTREAM_CONTEXT_LENGTH_EXCEEDED",
        ),
        (
            401,
            "authentication_error",
            "invalid x-api-key",
            "FAILED_PRECONDITION",
            "UPSTREAM_AUTH_FAILED",
        ),
        (402, "billing_error", "billing", "FAILED_PRECONDITION", "UPSTREAM_INSUFFICIENT_CREDITS"),
        (403, "permission_error", "no", "PERMISSION_DENIED", "UPSTREAM_PERMISSION_DENIED"),
        (404, "not_found_error", "model: claude-x", "NOT_FOUND", "UPSTREAM_MODEL_NOT_FOUND"),
        (413, "request_too_large", "too big", "INVALID_ARGUMENT", "UPSTREAM_REJECTED_REQUEST"),
        (429, "rate_limit_error", "slow down", "RESOURCE_EXHAUSTED", "UPSTREAM_RATE_LIMITED"),
        (500, "api_error", "Internal server error", "UNAVAILABLE", "UPSTREAM_UNAVAILABLE"),
        (504, "timeout_error", "timed out", "DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT"),
        (529, "overloaded_error", "Overloaded", "UNAVAILABLE", "UPSTREAM_OVERLOADED"),
    ],
)
def test_error_classification(status, kind, message, code, reason):
    error = PROVIDER._http_error(status, envelope(kind, message), httpx.Headers(), ROUTE)
    assert error.code == getattr(grpc.StatusCode, code)
    assert pb.ErrorReason.Name(error.reason) == f"ERROR_REASON_{reason}"
    assert message in error.message
    assert error.metadata["upstreamCode"] == kind
    assert error.metadata["upstreamRequestId"] == "req_011Ca"


def test_the_request_id_header_is_kept_when_the_body_has_none():
    headers = httpx.Headers({"request-id": "req_from_header", "retry-after": "12"})
    error = PROVIDER._http_error(502, b"<html>bad gateway</html>", headers, ROUTE)
    assert error.reason == pb.ERROR_REASON_UPSTREAM_UNAVAILABLE
    assert error.metadata["upstreamRequestId"] == "req_from_header"
    assert error.retry_after == 12


def test_the_request_id_header_is_redacted_and_bounded():
    headers = httpx.Headers({"request-id": f"req_{KEY}_" + "x" * 200})
    error = PROVIDER._http_error(502, b"<html>bad gateway</html>", headers, ROUTE)
    quoted = error.metadata["upstreamRequestId"]
    assert quoted.startswith(f"req_{REDACTED}_x")
    assert len(quoted) <= 64
    assert KEY[:12] not in str(error.metadata)


def test_the_bodys_request_id_wins_over_the_header():
    headers = httpx.Headers({"request-id": "req_from_header"})
    error = PROVIDER._http_error(529, envelope("overloaded_error", "Overloaded"), headers, ROUTE)
    assert error.metadata["upstreamRequestId"] == "req_011Ca"
    assert PROVIDER.request_id_from(headers) == "req_from_header"
    assert PROVIDER.request_id_from(httpx.Headers()) is None


def test_an_in_band_error_of_no_known_type_is_unavailable():
    error = PROVIDER.in_band_error({"type": "error", "error": {"message": "?"}}, ROUTE)
    assert error.reason == pb.ERROR_REASON_UPSTREAM_UNAVAILABLE


def test_the_key_never_reaches_an_error():
    error = PROVIDER._http_error(
        401, envelope("authentication_error", f"bad key {KEY}"), httpx.Headers(), ROUTE
    )
    assert KEY not in error.message
    assert KEY not in str(error.metadata)


def test_classification_reads_words_only_for_invalid_request_errors():
    failure = ue.UpstreamFailure(
        429, "rate_limit_error", "prompt is too long", error_type="rate_limit_error"
    )
    assert PROVIDER.classify(failure) == pb.ERROR_REASON_UPSTREAM_RATE_LIMITED


# -- the catalogue -------------------------------------------------------------------------------------


async def test_the_catalogue_follows_pages_with_the_key_in_a_header():
    seen: list[httpx.Request] = []
    pages = {
        None: {
            "data": [
                {
                    "type": "model",
                    "id": "claude-sonnet-4-5-20250929",
                    "display_name": "Claude Sonnet 4.5",
                },
                {
                    "type": "model",
                    "id": "claude-opus-4-6",
                    "display_name": "Claude Opus 4.6",
                    "max_input_tokens": 1000000,
                },
            ],
            "has_more": True,
            "last_id": "claude-opus-4-6",
        },
        "claude-opus-4-6": {
            "data": [{"type": "model", "id": "claude-unlisted-9", "display_name": ""}],
            "has_more": False,
            "last_id": "claude-unlisted-9",
        },
    }

    def answer(http_request: httpx.Request) -> httpx.Response:
        seen.append(http_request)
        return httpx.Response(200, json=pages[http_request.url.params.get("after_id")])

    provider = AnthropicProvider(SETTINGS, Timeouts(), transport=httpx.MockTransport(answer))
    try:
        models = await provider.catalogue(5.0)
    finally:
        await provider.aclose()
    assert [str(r.url) for r in seen] == [
        "https://anthropic.example.test/v1/models?limit=1000",
        "https://anthropic.example.test/v1/models?limit=1000&after_id=claude-opus-4-6",
    ]
    assert all(r.headers["x-api-key"] == KEY and KEY not in str(r.url) for r in seen)
    sonnet, opus, unlisted = models
    assert sonnet.name == "anthropic/claude-sonnet-4-5-20250929"
    assert sonnet.display_name == "Claude Sonnet 4.5"
    assert sonnet.context_length == 200_000  # from the table (snapshot of claude-sonnet-4-5)
    assert (sonnet.pricing.prompt_per_million, sonnet.pricing.completion_per_million) == (3.0, 15.0)
    assert sonnet.pricing.cached_prompt_per_million == 0.3
    assert opus.context_length == 1_000_000  # as listed
    assert sonnet.available
    # A model the table does not know: listed, without a context or prices.
    assert unlisted.display_name == "claude-unlisted-9"
    assert not unlisted.HasField("context_length")
    assert not unlisted.pricing.HasField("prompt_per_million")


def test_table_rows_match_snapshots_by_the_longest_name():
    def name(model_id: str) -> str | None:
        row = builtin_model(model_id)
        return row.name if row else None

    assert name("claude-opus-4-1-20250805") == "claude-opus-4-1"
    assert name("claude-opus-4-20250514") == "claude-opus-4"
    assert name("claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
    assert name("claude-opus-4-6") == "claude-opus-4-6"
    assert name("gpt-4o") is None
