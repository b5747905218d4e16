"""Gemini translation: request bodies, unary answers, usage, finish, errors, retry delays, URLs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import httpx
import orjson
import pytest
from google.protobuf import struct_pb2
from hypothesis import given
from hypothesis import strategies as st

from llmgateway.server.config import GeminiSettings, Secret, Timeouts
from llmgateway.server.errors import GatewayError
from llmgateway.server.providers import upstream_errors as ue
from llmgateway.server.providers.gemini import GeminiProvider, parse_duration, request_body
from llmgateway.server.routing.router import Route
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

KEY = "AIzaTestGeminiKey00000000000000000000000"
ROUTE = Route(common.PROVIDER_GEMINI, "gemini-2.5-flash", "gemini/gemini-2.5-flash")
ROUTE_3 = Route(common.PROVIDER_GEMINI, "gemini-3-pro-preview", "gemini/gemini-3-pro-preview")
PNG = "iVBORw0KGgo="


@pytest.fixture
async def gemini() -> AsyncIterator[GeminiProvider]:
    provider = GeminiProvider(
        GeminiSettings(api_key=Secret(KEY), base_url="https://gemini.test"), Timeouts()
    )
    yield provider
    await provider.aclose()


def msg(role: common.Role.ValueType, content: str = "", **fields: object) -> common.ChatMessage:
    return common.ChatMessage(role=role, content=content, **fields)  # type: ignore[arg-type]


def call(call_id: str, name: str, arguments: str = "{}") -> common.ToolCall:
    return common.ToolCall(id=call_id, name=name, arguments=arguments)


def signature(sig: str, tool_call_id: str = "", index: int = 0) -> common.ReasoningDetail:
    return common.ReasoningDetail(
        provider=common.PROVIDER_GEMINI,
        kind=common.REASONING_DETAIL_KIND_THOUGHT_SIGNATURE,
        signature=sig,
        tool_call_id=tool_call_id,
        index=index,
    )


# -- request bodies --------------------------------------------------------------


def test_system_messages_are_hoisted_and_roles_become_user_and_model() -> None:
    request = pb.CompleteRequest(
        messages=[
            msg(common.ROLE_SYSTEM, "Be brief."),
            msg(common.ROLE_SYSTEM, "Answer in English."),
            msg(common.ROLE_USER, "hi"),
            msg(common.ROLE_ASSISTANT, "hello"),
            msg(common.ROLE_USER, "bye"),
        ]
    )
    body = request_body(request, "gemini-2.5-flash")
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief.\n\nAnswer in English."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "model", "parts": [{"text": "hello"}]},
        {"role": "user", "parts": [{"text": "bye"}]},
    ]
    assert "model" not in body  # the model is in the URL


async def test_a_system_message_after_the_conversation_started_is_refused(
    gemini: GeminiProvider,
) -> None:
    request = pb.CompleteRequest(
        messages=[msg(common.ROLE_USER, "hi"), msg(common.ROLE_SYSTEM, "late")]
    )
    assert [v.field for v in gemini.check(request)] == ["messages[1].role"]


def test_tool_results_are_named_by_call_id_and_grouped_into_one_user_turn() -> None:
    request = pb.CompleteRequest(
        messages=[
            msg(common.ROLE_USER, "weather in two places"),
            msg(
                common.ROLE_ASSISTANT,
                tool_calls=[
                    call("call_r1_0", "weather", '{"city": "Rome"}'),
                    call("v3yybtcf", "clock", "{}"),
                ],
            ),
            msg(common.ROLE_TOOL, '{"temp": 21}', tool_call_id="call_r1_0"),
            msg(common.ROLE_TOOL, "noon", tool_call_id="v3yybtcf"),
        ]
    )
    contents = request_body(request, "gemini-2.5-flash")["contents"]
    assert contents[1] == {
        "role": "model",
        "parts": [
            # A generated id is the gateway's, never sent; Gemini's own is.
            {"functionCall": {"name": "weather", "args": {"city": "Rome"}}},
            {"functionCall": {"name": "clock", "args": {}, "id": "v3yybtcf"}},
        ],
    }
    assert contents[2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "weather", "response": {"temp": 21}}},
            {
                "functionResponse": {
                    "name": "clock",
                    "response": {"result": "noon"},
                    "id": "v3yybtcf",
                }
            },
        ],
    }
    assert len(contents) == 3


async def test_a_tool_result_for_an_unknown_call_is_refused(gemini: GeminiProvider) -> None:
    request = pb.CompleteRequest(
        messages=[msg(common.ROLE_USER, "hi"), msg(common.ROLE_TOOL, "x", tool_call_id="nope")]
    )
    assert [v.field for v in gemini.check(request)] == ["messages[1].tool_call_id"]


async def test_images_go_inline_and_https_urls_are_refused(gemini: GeminiProvider) -> None:
    image = common.ContentPart(image=common.ImagePart(url=f"data:image/png;base64,{PNG}"))
    request = pb.CompleteRequest(
        messages=[msg(common.ROLE_USER, parts=[common.ContentPart(text="what?"), image])]
    )
    parts = request_body(request, "gemini-2.5-flash")["contents"][0]["parts"]
    assert parts == [{"text": "what?"}, {"inlineData": {"mimeType": "image/png", "data": PNG}}]
    remote = common.ContentPart(image=common.ImagePart(url="https://example.test/cat.png"))
    request = pb.CompleteRequest(messages=[msg(common.ROLE_USER, parts=[remote])])
    assert [v.field for v in gemini.check(request)] == ["messages[0].parts[0].image.url"]


@pytest.mark.parametrize("role", [common.ROLE_SYSTEM, common.ROLE_ASSISTANT, common.ROLE_TOOL])
async def test_an_image_outside_a_user_message_is_refused_not_dropped(
    gemini: GeminiProvider, role: common.Role.ValueType
) -> None:
    image = common.ContentPart(image=common.ImagePart(url=f"data:image/png;base64,{PNG}"))
    text = common.ContentPart(text="see")
    call = common.ToolCall(id="c1", name="look", arguments="{}")
    messages = [msg(common.ROLE_USER, "hi")]
    if role == common.ROLE_TOOL:
        messages.append(common.ChatMessage(role=common.ROLE_ASSISTANT, tool_calls=[call]))
    extra = {"tool_call_id": "c1"} if role == common.ROLE_TOOL else {}
    messages.append(common.ChatMessage(role=role, parts=[text, image], **extra))  # type: ignore[arg-type]
    if role == common.ROLE_SYSTEM:
        messages.reverse()
    request = pb.CompleteRequest(messages=messages)
    index = next(i for i, m in enumerate(messages) if m.role == role)
    assert [v.field for v in gemini.check(request)] == [f"messages[{index}].parts[1]"]


def test_tools_send_full_json_schema_and_tool_choice_maps() -> None:
    schema = struct_pb2.Struct()
    schema.update({"type": "object", "properties": {"n": {"type": "integer", "maxItems": 3}}})
    tool = common.Tool(name="count", description="Counts.", parameters=schema)
    expected = {"type": "object", "properties": {"n": {"type": "integer", "maxItems": 3}}}
    cases = [
        (common.ToolChoice(mode=common.TOOL_CHOICE_MODE_AUTO), {"mode": "AUTO"}),
        (common.ToolChoice(mode=common.TOOL_CHOICE_MODE_NONE), {"mode": "NONE"}),
        (common.ToolChoice(mode=common.TOOL_CHOICE_MODE_REQUIRED), {"mode": "ANY"}),
        (
            common.ToolChoice(function_name="count"),
            {"mode": "ANY", "allowedFunctionNames": ["count"]},
        ),
    ]
    for choice, config in cases:
        request = pb.CompleteRequest(
            messages=[msg(common.ROLE_USER, "hi")], tools=[tool], tool_choice=choice
        )
        body = request_body(request, "gemini-2.5-flash")
        assert body["tools"] == [
            {
                "functionDeclarations": [
                    {"name": "count", "description": "Counts.", "parametersJsonSchema": expected}
                ]
            }
        ]
        assert body["toolConfig"] == {"functionCallingConfig": config}


def test_sampling_and_json_modes_go_in_generation_config() -> None:
    schema = struct_pb2.Struct()
    schema.update({"type": "object"})
    request = pb.CompleteRequest(
        messages=[msg(common.ROLE_USER, "hi")],
        sampling=common.SamplingParams(
            max_tokens=50, temperature=0.5, top_p=0.9, stop=["END"], seed=7, presence_penalty=0.1
        ),
        response_format=common.ResponseFormat(
            type=common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            json_schema=common.JsonSchemaFormat(name="x", schema=schema),
        ),
    )
    assert request_body(request, "gemini-2.5-flash")["generationConfig"] == {
        "maxOutputTokens": 50,
        "temperature": 0.5,
        "topP": 0.9,
        "stopSequences": ["END"],
        "seed": 7,
        "presencePenalty": pytest.approx(0.1),
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object"},
    }
    request = pb.CompleteRequest(
        messages=[msg(common.ROLE_USER, "hi")],
        response_format=common.ResponseFormat(type=common.RESPONSE_FORMAT_TYPE_JSON_OBJECT),
    )
    assert request_body(request, "gemini-2.5-flash")["generationConfig"] == {
        "responseMimeType": "application/json"
    }


async def test_more_than_five_stop_sequences_are_refused(gemini: GeminiProvider) -> None:
    request = pb.CompleteRequest(
        messages=[msg(common.ROLE_USER, "hi")],
        sampling=common.SamplingParams(stop=[str(i) for i in range(6)]),
    )
    assert [v.field for v in gemini.check(request)] == ["sampling.stop"]


@pytest.mark.parametrize(
    ("options", "model", "expected"),
    [
        (common.ReasoningOptions(enabled=False), "gemini-2.5-flash", {"thinkingBudget": 0}),
        (
            common.ReasoningOptions(effort=common.REASONING_EFFORT_NONE),
            "gemini-2.5-flash",
            {"thinkingBudget": 0},
        ),
        (
            common.ReasoningOptions(max_tokens=1000),
            "gemini-2.5-flash",
            {"thinkingBudget": 1000, "includeThoughts": True},
        ),
        (
            common.ReasoningOptions(effort=common.REASONING_EFFORT_LOW),
            "gemini-2.5-pro",
            {"thinkingBudget": 2048, "includeThoughts": True},
        ),
        (
            common.ReasoningOptions(effort=common.REASONING_EFFORT_HIGH, exclude=True),
            "gemini-3-pro-preview",
            {"thinkingLevel": "high"},
        ),
        (
            common.ReasoningOptions(enabled=True),
            "gemini-2.5-flash-lite",
            {"thinkingBudget": -1, "includeThoughts": True},
        ),
    ],
)
def test_reasoning_options_become_thinking_config(
    options: common.ReasoningOptions, model: str, expected: dict[str, object]
) -> None:
    request = pb.CompleteRequest(messages=[msg(common.ROLE_USER, "hi")], reasoning=options)
    assert request_body(request, model)["generationConfig"]["thinkingConfig"] == expected


def test_no_reasoning_options_send_no_thinking_config() -> None:
    request = pb.CompleteRequest(messages=[msg(common.ROLE_USER, "hi")])
    assert "generationConfig" not in request_body(request, "gemini-2.5-flash")


def test_thought_signatures_go_back_on_their_calls_and_text_only_gemini_s() -> None:
    assistant = msg(
        common.ROLE_ASSISTANT,
        "Checking.",
        tool_calls=[call("call_r_0", "weather"), call("call_r_1", "clock")],
        reasoning_details=[
            signature("SIG-TEXT", "", 0),
            signature("SIG-CALL", "call_r_0", 1),
            # Another provider's detail is never sent to Gemini.
            common.ReasoningDetail(
                provider=common.PROVIDER_ANTHROPIC,
                kind=common.REASONING_DETAIL_KIND_THINKING,
                signature="ANTHROPIC",
            ),
        ],
    )
    request = pb.CompleteRequest(
        messages=[
            msg(common.ROLE_USER, "hi"),
            assistant,
            msg(common.ROLE_TOOL, "sunny", tool_call_id="call_r_0"),
            msg(common.ROLE_TOOL, "noon", tool_call_id="call_r_1"),
        ]
    )
    model_turn = request_body(request, "gemini-3-pro-preview")["contents"][1]
    assert model_turn["parts"] == [
        {"text": "Checking.", "thoughtSignature": "SIG-TEXT"},
        {"functionCall": {"name": "weather", "args": {}}, "thoughtSignature": "SIG-CALL"},
        {"functionCall": {"name": "clock", "args": {}}},
    ]


async def test_tool_arguments_that_are_not_an_object_are_refused(gemini: GeminiProvider) -> None:
    request = pb.CompleteRequest(
        messages=[
            msg(common.ROLE_USER, "hi"),
            msg(common.ROLE_ASSISTANT, tool_calls=[call("c1", "f", "[1]")]),
        ]
    )
    assert [v.field for v in gemini.check(request)] == ["messages[1].tool_calls[0].arguments"]


# -- URLs and the key --------------------------------------------------------------------


async def test_the_key_is_only_in_a_header_never_in_a_url(gemini: GeminiProvider) -> None:
    request = pb.CompleteRequest(model="gemini/gemini-2.5-flash")
    unary = gemini.url(request, ROUTE, stream=False)
    stream = gemini.url(request, ROUTE, stream=True)
    assert unary == "https://gemini.test/v1beta/models/gemini-2.5-flash:generateContent"
    assert (
        stream == "https://gemini.test/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    assert KEY not in unary + stream
    assert gemini.auth_headers() == {"x-goog-api-key": KEY}
    assert "Authorization" not in gemini._headers()


async def test_the_catalogue_pages_with_the_key_in_the_header_only() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if "pageToken" not in request.url.params:
            return httpx.Response(
                200,
                json={
                    "models": [
                        {
                            "name": "models/gemini-2.5-flash",
                            "displayName": "Gemini 2.5 Flash",
                            "inputTokenLimit": 1048576,
                            "supportedGenerationMethods": ["generateContent"],
                        },
                        {"name": "models/embed", "supportedGenerationMethods": ["embedContent"]},
                    ],
                    "nextPageToken": "two",
                },
            )
        return httpx.Response(
            200,
            json={
                "models": [
                    {"name": "models/gemini-x", "supportedGenerationMethods": ["generateContent"]}
                ]
            },
        )

    provider = GeminiProvider(
        GeminiSettings(api_key=Secret(KEY), base_url="https://gemini.test"),
        Timeouts(),
        transport=httpx.MockTransport(answer),
    )
    try:
        models = await provider.catalogue(5.0)
    finally:
        await provider.aclose()
    assert [m.name for m in models] == ["gemini/gemini-2.5-flash", "gemini/gemini-x"]
    assert models[0].display_name == "Gemini 2.5 Flash"
    assert models[0].context_length == 1048576
    assert models[0].pricing.prompt_per_million == pytest.approx(0.30)
    assert [r.url.params.get("pageToken") for r in seen] == [None, "two"]
    assert all(r.url.params["pageSize"] == "1000" for r in seen)
    assert all(KEY not in str(r.url) and r.headers["x-goog-api-key"] == KEY for r in seen)


# -- unary answers -----------------------------------------------------------------------


def answer_body(
    parts: list[dict[str, object]], finish: str = "STOP", **extra: object
) -> dict[str, object]:
    return {
        "candidates": [
            {"content": {"parts": parts, "role": "model"}, "finishReason": finish, "index": 0}
        ],
        "usageMetadata": {
            "promptTokenCount": 11,
            "candidatesTokenCount": 2,
            "thoughtsTokenCount": 24,
            "totalTokenCount": 37,
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "resp1",
        **extra,
    }


async def test_unary_text_thoughts_and_usage(gemini: GeminiProvider) -> None:
    body = answer_body([{"text": "Let me see.", "thought": True}, {"text": "Ol"}, {"text": "á!"}])
    response = gemini.parse_unary(body, ROUTE, include_reasoning=True)
    assert (response.id, response.model, response.content) == (
        "resp1",
        "gemini/gemini-2.5-flash",
        "Olá!",
    )
    assert response.reasoning == "Let me see."
    assert response.finish_reason == common.FINISH_REASON_STOP
    assert response.native_finish_reason == "STOP"
    # Thoughts are outside candidatesTokenCount and billed as output.
    assert (
        response.usage.prompt_tokens,
        response.usage.completion_tokens,
        response.usage.reasoning_tokens,
        response.usage.total_tokens,
    ) == (11, 26, 24, 37)
    assert gemini.parse_unary(body, ROUTE, include_reasoning=False).reasoning == ""


async def test_unary_calls_get_ids_and_signatures_and_stop_becomes_tool_calls(
    gemini: GeminiProvider,
) -> None:
    body = answer_body(
        [
            {
                "functionCall": {"name": "weather", "args": {"location": "Rome"}},
                "thoughtSignature": "S1",
            },
            {"functionCall": {"name": "clock"}},
            {"functionCall": {"name": "own", "args": {}, "id": "v3yybtcf"}},
        ]
    )
    response = gemini.parse_unary(body, ROUTE_3, include_reasoning=True)
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        ("call_resp1_0", "weather", '{"location":"Rome"}'),
        ("call_resp1_1", "clock", "{}"),
        ("v3yybtcf", "own", "{}"),
    ]
    assert response.finish_reason == common.FINISH_REASON_TOOL_CALLS
    assert response.native_finish_reason == "STOP"
    assert list(response.reasoning_details) == [signature("S1", "call_resp1_0", 0)]


@given(
    response_id=st.text(st.characters(codec="ascii", categories=["L", "N"]), max_size=20),
    calls=st.integers(1, 8),
)
def test_generated_ids_are_stable_and_unique(response_id: str, calls: int) -> None:
    provider = GeminiProvider(GeminiSettings(api_key=Secret(KEY)), Timeouts())
    body = answer_body(
        [{"functionCall": {"name": f"f{i}"}} for i in range(calls)], responseId=response_id
    )
    first = [c.id for c in provider.parse_unary(body, ROUTE, include_reasoning=True).tool_calls]
    again = [c.id for c in provider.parse_unary(body, ROUTE, include_reasoning=True).tool_calls]
    assert first == again
    assert len(set(first)) == calls


@pytest.mark.parametrize(
    ("native", "reason"),
    [
        ("STOP", common.FINISH_REASON_STOP),
        ("MAX_TOKENS", common.FINISH_REASON_LENGTH),
        ("SAFETY", common.FINISH_REASON_CONTENT_FILTER),
        ("RECITATION", common.FINISH_REASON_CONTENT_FILTER),
        ("PROHIBITED_CONTENT", common.FINISH_REASON_CONTENT_FILTER),
        ("SPII", common.FINISH_REASON_CONTENT_FILTER),
        ("LANGUAGE", common.FINISH_REASON_OTHER),
        ("OTHER", common.FINISH_REASON_OTHER),
        ("SOMETHING_NEW", common.FINISH_REASON_OTHER),
    ],
)
async def test_finish_reasons(gemini: GeminiProvider, native: str, reason: int) -> None:
    response = gemini.parse_unary(answer_body([], native), ROUTE, include_reasoning=True)
    assert (response.finish_reason, response.native_finish_reason) == (reason, native)


async def test_a_safety_stop_with_no_content_is_an_answer(gemini: GeminiProvider) -> None:
    body = {
        "candidates": [{"finishReason": "SAFETY", "index": 0}],
        "usageMetadata": {"promptTokenCount": 14, "totalTokenCount": 14},
    }
    response = gemini.parse_unary(body, ROUTE, include_reasoning=True)
    assert response.content == ""
    assert response.finish_reason == common.FINISH_REASON_CONTENT_FILTER
    assert response.usage.total_tokens == 14


async def test_a_malformed_function_call_is_a_retryable_error(gemini: GeminiProvider) -> None:
    body = {
        "candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL", "finishMessage": "bad call"}]
    }
    with pytest.raises(GatewayError) as caught:
        gemini.parse_unary(body, ROUTE, include_reasoning=True)
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_INVALID_TOOL_CALL
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.metadata["upstreamCode"] == "MALFORMED_FUNCTION_CALL"


async def test_a_blocked_prompt_is_permission_denied_with_the_block_reason(
    gemini: GeminiProvider,
) -> None:
    body = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}
    with pytest.raises(GatewayError) as caught:
        gemini.parse_unary(body, ROUTE, include_reasoning=True)
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_CONTENT_FLAGGED
    assert caught.value.metadata["upstreamCode"] == "SAFETY"


async def test_no_candidates_and_no_feedback_is_malformed(gemini: GeminiProvider) -> None:
    with pytest.raises(GatewayError) as caught:
        gemini.parse_unary({"usageMetadata": {}}, ROUTE, include_reasoning=True)
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_MALFORMED_RESPONSE


async def test_a_json_array_on_a_stream_is_malformed_with_the_alt_sse_hint(
    gemini: GeminiProvider,
) -> None:
    error = gemini.non_stream_body(b'[{"candidates": []}]', ROUTE)
    assert error.reason == pb.ERROR_REASON_UPSTREAM_MALFORMED_RESPONSE
    assert "alt=sse" in error.message
    wrapped = gemini.non_stream_body(
        b'[{"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}]', ROUTE
    )
    assert wrapped.reason == pb.ERROR_REASON_UPSTREAM_UNAVAILABLE
    assert "overloaded" in wrapped.message


# -- errors ----------------------------------------------------------------------------


def envelope(
    code: int, status: str, message: str, *details: dict[str, object]
) -> dict[str, object]:
    error: dict[str, object] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return {"error": error}


ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


@pytest.mark.parametrize(
    ("http", "body", "reason"),
    [
        (
            400,
            envelope(
                400,
                "INVALID_ARGUMENT",
                "API key not valid.",
                {"@type": ERROR_INFO, "reason": "API_KEY_INVALID"},
            ),
            pb.ERROR_REASON_UPSTREAM_AUTH_FAILED,
        ),
        (
            400,
            envelope(400, "INVALID_ARGUMENT", "Bad field."),
            pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST,
        ),
        (
            400,
            envelope(
                400,
                "INVALID_ARGUMENT",
                "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576).",
            ),
            pb.ERROR_REASON_UPSTREAM_CONTEXT_LENGTH_EXCEEDED,
        ),
        (
            403,
            envelope(403, "PERMISSION_DENIED", "unregistered callers"),
            pb.ERROR_REASON_UPSTREAM_PERMISSION_DENIED,
        ),
        (401, envelope(401, "UNAUTHENTICATED", "no"), pb.ERROR_REASON_UPSTREAM_AUTH_FAILED),
        (429, envelope(429, "RESOURCE_EXHAUSTED", "quota"), pb.ERROR_REASON_UPSTREAM_RATE_LIMITED),
        (
            400,
            envelope(400, "FAILED_PRECONDITION", "User location is not supported"),
            pb.ERROR_REASON_UPSTREAM_PERMISSION_DENIED,
        ),
        (
            404,
            envelope(404, "NOT_FOUND", "models/x is not found"),
            pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND,
        ),
        (503, envelope(503, "UNAVAILABLE", "overloaded"), pb.ERROR_REASON_UPSTREAM_UNAVAILABLE),
        (500, envelope(500, "INTERNAL", "oops"), pb.ERROR_REASON_UPSTREAM_UNAVAILABLE),
        (504, envelope(504, "DEADLINE_EXCEEDED", "slow"), pb.ERROR_REASON_UPSTREAM_TIMEOUT),
        # The array form, and a body of no known shape, by HTTP status.
        (
            429,
            [envelope(429, "RESOURCE_EXHAUSTED", "quota")],
            pb.ERROR_REASON_UPSTREAM_RATE_LIMITED,
        ),
        (502, None, pb.ERROR_REASON_UPSTREAM_UNAVAILABLE),
    ],
)
async def test_error_classification(
    gemini: GeminiProvider, http: int, body: object, reason: int
) -> None:

    content = b"<html>bad gateway</html>" if body is None else orjson.dumps(body)
    error = gemini._http_error(http, content, httpx.Headers(), ROUTE)
    assert error.reason == reason
    if isinstance(body, dict):
        assert body["error"]["message"] in error.message


async def test_retry_delay_comes_from_retry_info_then_the_message_then_the_header(
    gemini: GeminiProvider,
) -> None:

    retry_info = envelope(
        429, "RESOURCE_EXHAUSTED", "quota", {"@type": RETRY_INFO, "retryDelay": "26s"}
    )
    error = gemini._http_error(
        429, orjson.dumps(retry_info), httpx.Headers({"retry-after": "3"}), ROUTE
    )
    assert error.retry_after == 26.0
    in_message = envelope(429, "RESOURCE_EXHAUSTED", "Please retry in 26.107s.")
    error = gemini._http_error(429, orjson.dumps(in_message), httpx.Headers(), ROUTE)
    assert error.retry_after == pytest.approx(26.107)
    plain = envelope(429, "RESOURCE_EXHAUSTED", "quota")
    error = gemini._http_error(429, orjson.dumps(plain), httpx.Headers({"retry-after": "3"}), ROUTE)
    assert error.retry_after == 3.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("26s", 26.0),
        ("1.5s", 1.5),
        ("2m59.56s", 179.56),
        ("120ms", 0.12),
        ("1h", 3600.0),
        ("", None),
        ("soon", None),
        ("5", None),
        ("3s later", None),
        ("99999999h", ue.MAX_RETRY_AFTER),
    ],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    parsed = parse_duration(text)
    assert parsed == (pytest.approx(seconds) if seconds is not None else None)
