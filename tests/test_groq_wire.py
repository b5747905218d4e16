"""Groq: request bodies, error classification, retry hints from its rate-limit headers, the catalogue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmgateway.server.config import GroqSettings, Secret, Timeouts
from llmgateway.server.providers.groq import GroqProvider, parse_duration, rate_limit_reset
from llmgateway.server.routing.router import Route, parse_model_name
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from llmgateway.server.errors import GatewayError

KEY = "gsk_testkeyforthegroqunittests00000"
ROUTE = Route(common.PROVIDER_GROQ, "openai/gpt-oss-120b", "groq/openai/gpt-oss-120b")


@pytest.fixture
async def groq() -> AsyncIterator[GroqProvider]:
    provider = GroqProvider(
        GroqSettings(api_key=Secret(KEY), base_url="https://api.groq.test/openai/v1"), Timeouts()
    )
    yield provider
    await provider.aclose()


def request(**fields: Any) -> pb.CompleteRequest:
    fields.setdefault("messages", [common.ChatMessage(role=common.ROLE_USER, content="Hi")])
    return pb.CompleteRequest(model="groq/openai/gpt-oss-120b", **fields)


def test_the_model_keeps_its_slashes(groq: GroqProvider) -> None:
    assert parse_model_name("groq/openai/gpt-oss-120b") == (
        common.PROVIDER_GROQ,
        "openai/gpt-oss-120b",
    )
    body = groq.body(request(), ROUTE, stream=False)
    assert body["model"] == "openai/gpt-oss-120b"
    assert (
        groq.url(request(), ROUTE, stream=False)
        == "https://api.groq.test/openai/v1/chat/completions"
    )
    assert groq._headers()["Authorization"] == f"Bearer {KEY}"


def test_max_tokens_keeps_its_name_and_usage_is_asked_for_on_streams(groq: GroqProvider) -> None:
    body = groq.body(request(sampling=common.SamplingParams(max_tokens=9)), ROUTE, stream=True)
    assert body["max_tokens"] == 9
    assert body["stream_options"] == {"include_usage": True}


def test_reasoning_text_is_never_sent_back(groq: GroqProvider) -> None:
    # Groq answers 400 "property 'reasoning' is unsupported" to any reasoning field.
    body = groq.body(
        request(
            messages=[
                common.ChatMessage(role=common.ROLE_USER, content="Hi"),
                common.ChatMessage(
                    role=common.ROLE_ASSISTANT, content="Hello", reasoning="thought", refusal="r"
                ),
                common.ChatMessage(role=common.ROLE_USER, content="Again"),
            ]
        ),
        ROUTE,
        stream=False,
    )
    assert body["messages"][1] == {"role": "assistant", "content": "Hello"}


@pytest.mark.parametrize(
    ("reasoning", "expected"),
    [
        (common.ReasoningOptions(), {}),
        (
            common.ReasoningOptions(effort=common.REASONING_EFFORT_HIGH),
            {"reasoning_effort": "high"},
        ),
        (
            common.ReasoningOptions(effort=common.REASONING_EFFORT_NONE),
            {"reasoning_effort": "none"},
        ),
        (common.ReasoningOptions(enabled=False), {"reasoning_effort": "none"}),
        (common.ReasoningOptions(exclude=True), {"include_reasoning": False}),
    ],
)
def test_reasoning_options(
    groq: GroqProvider, reasoning: common.ReasoningOptions, expected: dict[str, Any]
) -> None:
    body = groq.body(request(reasoning=reasoning), ROUTE, stream=False)
    sent = {
        k: body[k]
        for k in ("reasoning_effort", "include_reasoning", "reasoning_format")
        if k in body
    }
    assert sent == expected


def test_excluded_reasoning_is_stripped_locally_too(groq: GroqProvider) -> None:
    payload = {
        "id": "chatcmpl-1",
        "model": "openai/gpt-oss-120b",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "{}", "reasoning": "thinking"},
            }
        ],
    }
    assert groq.parse_unary(payload, ROUTE, True).reasoning == "thinking"
    assert groq.parse_unary(payload, ROUTE, False).reasoning == ""


def test_a_reasoning_budget_is_refused_naming_the_field(groq: GroqProvider) -> None:
    violations = groq.check(request(reasoning=common.ReasoningOptions(max_tokens=100)))
    assert [v.field for v in violations] == ["reasoning.max_tokens"]


def test_user_goes_through(groq: GroqProvider) -> None:
    assert groq.body(request(user="u-1"), ROUTE, stream=False)["user"] == "u-1"


# -- errors ------------------------------------------------------------------------


def error_of(
    provider: GroqProvider,
    status: int,
    error: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> GatewayError:
    return provider._http_error(
        status, orjson.dumps({"error": error}), httpx.Headers(headers or {}), ROUTE
    )


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (400, "tool_use_failed", "UPSTREAM_INVALID_TOOL_CALL"),
        (498, "capacity_exceeded", "UPSTREAM_OVERLOADED"),
        (498, None, "UPSTREAM_OVERLOADED"),
        # One request over the tokens-per-minute limit: it never fits, so not retried.
        (413, "rate_limit_exceeded", "UPSTREAM_QUOTA_EXCEEDED"),
        (429, "rate_limit_exceeded", "UPSTREAM_RATE_LIMITED"),
        (404, "model_not_found", "UPSTREAM_MODEL_NOT_FOUND"),
        (401, "invalid_api_key", "UPSTREAM_AUTH_FAILED"),
        (400, "context_length_exceeded", "UPSTREAM_CONTEXT_LENGTH_EXCEEDED"),
        # 413 without Groq's code is a request too large: the caller's to fix.
        (413, None, "UPSTREAM_REJECTED_REQUEST"),
        (400, None, "UPSTREAM_REJECTED_REQUEST"),
        (500, None, "UPSTREAM_UNAVAILABLE"),
    ],
)
def test_errors_are_classified(
    groq: GroqProvider, status: int, code: str | None, reason: str
) -> None:
    error = error_of(groq, status, {"message": "m", "type": "invalid_request_error", "code": code})
    assert pb.ErrorReason.Name(error.reason) == f"ERROR_REASON_{reason}"


def test_failed_generation_reaches_the_caller(groq: GroqProvider) -> None:
    error = error_of(
        groq,
        400,
        {
            "message": "Tool call validation failed: parameters did not match schema",
            "type": "invalid_request_error",
            "code": "tool_use_failed",
            "failed_generation": '{"name": "get_weather", "arguments": {"town": "Boston"}}',
        },
    )
    assert "Tool call validation failed" in error.message
    assert '"town": "Boston"' in error.message
    assert '"town": "Boston"' in error.metadata["upstreamRaw"]


def test_a_mid_stream_error_is_classified_by_its_status_code(groq: GroqProvider) -> None:
    tool = groq.in_band_error(
        {"message": "Tool call validation failed", "code": "tool_use_failed", "status_code": 400},
        ROUTE,
    )
    assert tool.reason == pb.ERROR_REASON_UPSTREAM_INVALID_TOOL_CALL
    server = groq.in_band_error({"message": "Internal Server Error", "status_code": 500}, ROUTE)
    assert server.reason == pb.ERROR_REASON_UPSTREAM_UNAVAILABLE
    busy = groq.in_band_error({"message": "over capacity", "status_code": 498}, ROUTE)
    assert busy.reason == pb.ERROR_REASON_UPSTREAM_OVERLOADED
    # It arrived inside a 200 stream: reported as an in-band error, not an HTTP status.
    assert "in-band error" in tool.message


# -- retry hints -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2m59.56s", 179.56),
        ("7.66s", 7.66),
        ("120ms", 0.12),
        ("1h2m3s", 3723.0),
        ("2.5s", 2.5),
        ("0s", 0.0),
        ("", None),
        ("soon", None),
        ("7.66", None),
        ("5s extra", None),
        ("-1s", None),
    ],
)
def test_durations(text: str, seconds: float | None) -> None:
    parsed = parse_duration(text)
    assert parsed == pytest.approx(seconds) if seconds is not None else parsed is None


@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
def test_any_go_duration_parses_to_its_seconds(
    hours: int, minutes: int, seconds: int, millis: int
) -> None:
    text = f"{hours}h{minutes}m{seconds}s" if millis == 0 else f"{minutes}m{seconds}.{millis:03d}s"
    expected = (hours * 3600 if millis == 0 else 0) + minutes * 60 + seconds + millis / 1000
    assert parse_duration(text) == pytest.approx(expected)


def test_a_429_without_retry_after_waits_for_the_exhausted_limit(groq: GroqProvider) -> None:
    headers = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2.5s",
        "x-ratelimit-remaining-tokens": "5000",
        "x-ratelimit-reset-tokens": "7.66s",
    }
    error = error_of(groq, 429, {"message": "m", "code": "rate_limit_exceeded"}, headers)
    assert error.retry_after == pytest.approx(2.5)


def test_retry_after_wins_over_the_reset_headers(groq: GroqProvider) -> None:
    headers = {"retry-after": "3", "x-ratelimit-reset-requests": "2m59.56s"}
    error = error_of(groq, 429, {"message": "m", "code": "rate_limit_exceeded"}, headers)
    assert error.retry_after == 3.0


def test_reset_headers_count_only_on_a_429(groq: GroqProvider) -> None:
    # Groq sends x-ratelimit-* on every response; a 500 is not waiting for a limit.
    error = error_of(groq, 500, {"message": "m"}, {"x-ratelimit-reset-tokens": "7.66s"})
    assert error.retry_after is None


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"x-ratelimit-reset-tokens": "7.66s"}, 7.66),
        # Neither limit says it is spent: the later reset, never too early.
        ({"x-ratelimit-reset-requests": "120ms", "x-ratelimit-reset-tokens": "7.66s"}, 7.66),
        (
            {
                "x-ratelimit-reset-requests": "2m59.56s",
                "x-ratelimit-reset-tokens": "1s",
                "x-ratelimit-remaining-tokens": "0",
            },
            1.0,
        ),
        ({"x-ratelimit-reset-requests": "garbage"}, None),
        ({}, None),
    ],
)
def test_rate_limit_reset(headers: dict[str, str], seconds: float | None) -> None:
    found = rate_limit_reset(httpx.Headers(headers))
    assert found == pytest.approx(seconds) if seconds is not None else found is None


# -- the catalogue -----------------------------------------------------------------


async def test_the_catalogue_lists_active_chat_models_with_groqs_context_windows() -> None:
    listed = {
        "object": "list",
        "data": [
            {"id": "llama-3.3-70b-versatile", "active": True, "context_window": 131072},
            {"id": "openai/gpt-oss-120b", "active": True, "context_window": 131072},
            {"id": "whisper-large-v3", "active": True, "context_window": 448},
            {"id": "gemma2-9b-it", "active": False, "context_window": 8192},
            {"id": "new/model", "active": True, "context_window": 65536},
        ],
    }
    seen: list[httpx.Request] = []

    def answer(http_request: httpx.Request) -> httpx.Response:
        seen.append(http_request)
        return httpx.Response(200, json=listed)

    provider = GroqProvider(
        GroqSettings(api_key=Secret(KEY), base_url="https://api.groq.test/openai/v1"),
        Timeouts(),
        transport=httpx.MockTransport(answer),
    )
    try:
        models = await provider.catalogue(5.0)
    finally:
        await provider.aclose()
    assert str(seen[0].url) == "https://api.groq.test/openai/v1/models"
    by_name = {m.name: m for m in models}
    assert set(by_name) == {
        "groq/llama-3.3-70b-versatile",
        "groq/openai/gpt-oss-120b",
        "groq/new/model",
    }
    oss = by_name["groq/openai/gpt-oss-120b"]
    assert oss.upstream_model == "openai/gpt-oss-120b"
    assert oss.context_length == 131072
    assert oss.pricing.prompt_per_million == 0.15
    assert by_name["groq/new/model"].context_length == 65536
    assert not by_name["groq/new/model"].HasField("pricing")
