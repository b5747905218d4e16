"""OpenAI: request bodies, check() refusals, unary parsing, error classification, the catalogue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

from llmgateway.server.config import OpenAISettings, Secret, Timeouts
from llmgateway.server.providers import upstream_errors as ue
from llmgateway.server.providers.openai import OpenAIProvider, table_row
from llmgateway.server.routing.price_tables import openai as openai_prices
from llmgateway.server.routing.router import Route
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from llmgateway.server.errors import GatewayError

KEY = "sk-proj-testkeyfortheopenaiunit0000"
ROUTE = Route(common.PROVIDER_OPENAI, "gpt-5", "openai/gpt-5")


@pytest.fixture
async def openai() -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(
        OpenAISettings(
            api_key=Secret(KEY),
            base_url="https://api.openai.test/v1",
            organization="org-fake",
            project="proj_fake",
            headers={"X-Team": "search"},
        ),
        Timeouts(),
    )
    yield provider
    await provider.aclose()


def request(**fields: Any) -> pb.CompleteRequest:
    fields.setdefault("messages", [common.ChatMessage(role=common.ROLE_USER, content="Hi")])
    return pb.CompleteRequest(model="openai/gpt-5", **fields)


# -- the request -------------------------------------------------------------------


def test_the_output_limit_is_max_completion_tokens(openai: OpenAIProvider) -> None:
    # Reasoning models answer max_tokens with 400 unsupported_parameter.
    body = openai.body(request(sampling=common.SamplingParams(max_tokens=50)), ROUTE, stream=False)
    assert body["max_completion_tokens"] == 50
    assert "max_tokens" not in body


def test_stream_options_go_only_with_stream(openai: OpenAIProvider) -> None:
    assert "stream_options" not in openai.body(request(), ROUTE, stream=False)
    streamed = openai.body(request(), ROUTE, stream=True)
    assert streamed["stream"] is True
    assert streamed["stream_options"] == {"include_usage": True}


def test_system_messages_stay_system(openai: OpenAIProvider) -> None:
    # Not rewritten to `developer`: a model that refuses system messages says so itself.
    body = openai.body(
        request(
            messages=[
                common.ChatMessage(role=common.ROLE_SYSTEM, content="Be brief."),
                common.ChatMessage(role=common.ROLE_USER, content="Hi"),
            ]
        ),
        ROUTE,
        stream=False,
    )
    assert [m["role"] for m in body["messages"]] == ["system", "user"]


def test_an_assistant_refusal_goes_back_and_reasoning_does_not(openai: OpenAIProvider) -> None:
    body = openai.body(
        request(
            messages=[
                common.ChatMessage(role=common.ROLE_USER, content="Do the bad thing"),
                common.ChatMessage(
                    role=common.ROLE_ASSISTANT, refusal="I can't help with that.", reasoning="r"
                ),
                common.ChatMessage(role=common.ROLE_USER, content="Why not?"),
            ]
        ),
        ROUTE,
        stream=False,
    )
    assistant = body["messages"][1]
    assert assistant["refusal"] == "I can't help with that."
    assert "reasoning" not in assistant
    assert "reasoning_content" not in assistant


@pytest.mark.parametrize(
    ("reasoning", "effort"),
    [
        (common.ReasoningOptions(), None),
        (common.ReasoningOptions(enabled=True), None),
        (common.ReasoningOptions(enabled=False), "none"),
        (common.ReasoningOptions(effort=common.REASONING_EFFORT_NONE), "none"),
        (common.ReasoningOptions(effort=common.REASONING_EFFORT_MINIMAL), "minimal"),
        (common.ReasoningOptions(effort=common.REASONING_EFFORT_LOW), "low"),
        (common.ReasoningOptions(effort=common.REASONING_EFFORT_MEDIUM), "medium"),
        (common.ReasoningOptions(effort=common.REASONING_EFFORT_HIGH), "high"),
        (common.ReasoningOptions(effort=common.REASONING_EFFORT_XHIGH), "xhigh"),
        # Nothing to send for exclude: Chat Completions returns no reasoning text.
        (common.ReasoningOptions(exclude=True), None),
    ],
)
def test_reasoning_becomes_reasoning_effort(
    openai: OpenAIProvider, reasoning: common.ReasoningOptions, effort: str | None
) -> None:
    body = openai.body(request(reasoning=reasoning), ROUTE, stream=False)
    assert body.get("reasoning_effort") == effort
    assert "reasoning" not in body


def test_a_reasoning_budget_is_refused_naming_the_field(openai: OpenAIProvider) -> None:
    violations = openai.check(request(reasoning=common.ReasoningOptions(max_tokens=1024)))
    assert [v.field for v in violations] == ["reasoning.max_tokens"]
    assert (
        openai.check(request(reasoning=common.ReasoningOptions(effort=common.REASONING_EFFORT_LOW)))
        == []
    )


def test_user_and_headers(openai: OpenAIProvider) -> None:
    assert openai.body(request(user="u-42"), ROUTE, stream=False)["user"] == "u-42"
    headers = openai._headers()
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["OpenAI-Organization"] == "org-fake"
    assert headers["OpenAI-Project"] == "proj_fake"
    assert headers["X-Team"] == "search"
    assert (
        openai.url(request(), ROUTE, stream=True) == "https://api.openai.test/v1/chat/completions"
    )


# -- the answer --------------------------------------------------------------------


def completion(message: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "model": "gpt-5-2025-08-07",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 4020,
            "completion_tokens": 139,
            "total_tokens": 4159,
            "prompt_tokens_details": {"cached_tokens": 4012, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 128, "audio_tokens": 0},
        },
        **extra,
    }


def test_a_refusal_is_an_answer_with_its_text(openai: OpenAIProvider) -> None:
    answer = openai.parse_unary(
        completion({"role": "assistant", "content": None, "refusal": "I can't help with that."}),
        ROUTE,
        True,
    )
    assert answer.refusal == "I can't help with that."
    assert answer.content == ""
    assert answer.finish_reason == common.FINISH_REASON_STOP
    assert answer.native_finish_reason == "stop"


def test_a_refusal_quoting_the_key_is_scrubbed(openai: OpenAIProvider) -> None:
    answer = openai.parse_unary(
        completion({"role": "assistant", "content": None, "refusal": f"no {KEY}"}), ROUTE, True
    )
    assert KEY not in answer.refusal


def test_cached_and_reasoning_tokens_stay_inside_their_totals(openai: OpenAIProvider) -> None:
    answer = openai.parse_unary(
        completion({"role": "assistant", "content": "OK", "refusal": None}), ROUTE, True
    )
    assert answer.model == "openai/gpt-5-2025-08-07"
    assert (answer.usage.prompt_tokens, answer.usage.cached_tokens) == (4020, 4012)
    assert (answer.usage.completion_tokens, answer.usage.reasoning_tokens) == (139, 128)
    assert answer.usage.cache_write_tokens == 0
    assert answer.refusal == ""


def test_tool_calls_keep_their_ids(openai: OpenAIProvider) -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_A", "type": "function", "function": {"name": "add", "arguments": "{}"}},
            {"id": "call_B", "type": "function", "function": {"name": "mul", "arguments": "{}"}},
        ],
    }
    payload = completion(message)
    payload["choices"][0]["finish_reason"] = "tool_calls"
    answer = openai.parse_unary(payload, ROUTE, True)
    assert [(c.id, c.name) for c in answer.tool_calls] == [("call_A", "add"), ("call_B", "mul")]
    assert answer.finish_reason == common.FINISH_REASON_TOOL_CALLS


# -- errors ------------------------------------------------------------------------


def error_of(
    provider: OpenAIProvider,
    status: int,
    error: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> GatewayError:
    return provider._http_error(
        status, orjson.dumps({"error": error}), httpx.Headers(headers or {}), ROUTE
    )


@pytest.mark.parametrize(
    ("status", "kind", "code", "reason"),
    [
        (429, "insufficient_quota", "insufficient_quota", "UPSTREAM_INSUFFICIENT_CREDITS"),
        (429, "requests", "rate_limit_exceeded", "UPSTREAM_RATE_LIMITED"),
        (
            400,
            "invalid_request_error",
            "context_length_exceeded",
            "UPSTREAM_CONTEXT_LENGTH_EXCEEDED",
        ),
        (
            400,
            "invalid_request_error",
            "string_above_max_length",
            "UPSTREAM_CONTEXT_LENGTH_EXCEEDED",
        ),
        (401, "invalid_request_error", "invalid_api_key", "UPSTREAM_AUTH_FAILED"),
        (404, "invalid_request_error", "model_not_found", "UPSTREAM_MODEL_NOT_FOUND"),
        (400, "invalid_request_error", "unsupported_parameter", "UPSTREAM_REJECTED_REQUEST"),
        (400, "invalid_request_error", "unsupported_value", "UPSTREAM_REJECTED_REQUEST"),
        (400, "invalid_request_error", "invalid_value", "UPSTREAM_REJECTED_REQUEST"),
        (500, "server_error", None, "UPSTREAM_UNAVAILABLE"),
        # A code unknown to the table: the HTTP status decides.
        (
            403,
            "invalid_request_error",
            "unsupported_country_region_territory",
            "UPSTREAM_PERMISSION_DENIED",
        ),
        (503, "service_unavailable", None, "UPSTREAM_UNAVAILABLE"),
    ],
)
def test_errors_are_classified_by_code_first(
    openai: OpenAIProvider, status: int, kind: str, code: str | None, reason: str
) -> None:
    error = error_of(openai, status, {"message": "m", "type": kind, "param": None, "code": code})
    assert pb.ErrorReason.Name(error.reason) == f"ERROR_REASON_{reason}"
    assert error.metadata["upstreamErrorType"] == kind


def test_the_upstreams_words_reach_the_caller(openai: OpenAIProvider) -> None:
    error = error_of(
        openai,
        400,
        {
            "message": "Unsupported value: 'messages[0].role' does not support 'system' with this model.",
            "type": "invalid_request_error",
            "param": "messages[0].role",
            "code": "unsupported_value",
        },
    )
    assert "does not support 'system'" in error.message
    assert error.metadata["upstreamCode"] == "unsupported_value"


def test_a_server_error_mid_stream_is_unavailable(openai: OpenAIProvider) -> None:
    error = openai.in_band_error(
        {"message": "The server had an error", "type": "server_error", "code": None}, ROUTE
    )
    assert error.reason == pb.ERROR_REASON_UPSTREAM_UNAVAILABLE


def test_insufficient_quota_is_not_retryable() -> None:
    from llmgateway.server.resilience.retry import RETRYABLE

    assert pb.ERROR_REASON_UPSTREAM_INSUFFICIENT_CREDITS not in RETRYABLE
    assert (
        ue.REASON_CODES[pb.ERROR_REASON_UPSTREAM_INSUFFICIENT_CREDITS].name == "FAILED_PRECONDITION"
    )


# -- the catalogue -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "row"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("gpt-4.1-mini", "gpt-4.1-mini"),
        # Another word is another model, not a snapshot.
        ("gpt-4o-audio-preview", None),
        ("gpt-5-codex", None),
    ],
)
def test_a_snapshot_takes_its_base_models_row(model_id: str, row: str | None) -> None:
    found = table_row(openai_prices.MODELS, model_id)
    assert (found.name if found else None) == row


async def test_the_catalogue_lists_chat_models_with_table_prices() -> None:
    listed = {
        "object": "list",
        "data": [
            {"id": i, "object": "model"}
            for i in (
                "gpt-4o-mini",
                "gpt-4o-2024-08-06",
                "text-embedding-3-small",
                "whisper-1",
                "tts-1-hd",
                "dall-e-3",
                "omni-moderation-latest",
                "gpt-realtime",
                "some-new-model",
            )
        ],
    }
    seen: list[httpx.Request] = []

    def answer(http_request: httpx.Request) -> httpx.Response:
        seen.append(http_request)
        return httpx.Response(200, json=listed)

    provider = OpenAIProvider(
        OpenAISettings(api_key=Secret(KEY), base_url="https://api.openai.test/v1"),
        Timeouts(),
        transport=httpx.MockTransport(answer),
    )
    try:
        models = await provider.catalogue(5.0)
    finally:
        await provider.aclose()
    assert str(seen[0].url) == "https://api.openai.test/v1/models"
    assert KEY not in str(seen[0].url)
    by_name = {m.name: m for m in models}
    assert set(by_name) == {
        "openai/gpt-4o-mini",
        "openai/gpt-4o-2024-08-06",
        "openai/some-new-model",
    }
    snapshot = by_name["openai/gpt-4o-2024-08-06"]
    assert snapshot.context_length == 128_000
    assert snapshot.pricing.prompt_per_million == 2.50
    assert snapshot.pricing.cached_prompt_per_million == 1.25
    assert snapshot.available
    assert not by_name["openai/some-new-model"].HasField("pricing")
