"""Groq: the OpenAI wire, with Groq's usage placement, error codes and rate-limit headers.

What differs from the shared dialect: usage arrives in `x_groq.usage` as well
as (or instead of) top-level `usage`, repeated by the include_usage chunk (the
last one wins, never a sum); a model's invalid tool call is its own error
(`tool_use_failed`, as a 400 or mid-stream with `status_code`), and so is a
full flex tier (498 `capacity_exceeded`); a tokens-per-minute overrun is 413;
and a 429 may say when to retry only in `x-ratelimit-reset-*` headers. Groq
refuses any reasoning field on an assistant message ("property 'reasoning' is
unsupported"), so reasoning text is never sent back.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

from llmgateway.server.errors import FieldViolation
from llmgateway.server.providers import upstream_errors as ue
from llmgateway.server.providers.openai import listed_models, reasoning_effort
from llmgateway.server.providers.openai_compatible.core import OpenAICompatibleProvider
from llmgateway.server.providers.openai_compatible.stream import failure_from_native_error
from llmgateway.server.providers.openai_compatible.wire import (
    AnyCompletionRequest,
    JSONObject,
    chat_body,
)
from llmgateway.server.routing.price_tables import groq as groq_prices
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Unpack

    from llmgateway.server.config import GroqSettings, Timeouts
    from llmgateway.server.providers.core import ProviderLimits
    from llmgateway.server.routing.router import Route

_CODES: dict[str, ue.Reason] = {
    # The model, not the request, failed: its own server rejected its tool call.
    "tool_use_failed": pb.ERROR_REASON_UPSTREAM_INVALID_TOOL_CALL,
    "capacity_exceeded": pb.ERROR_REASON_UPSTREAM_OVERLOADED,
    # 429: requests or tokens per minute/day, retried after the reset. (413 with
    # this code is one request larger than the TPM limit itself: see classify.)
    "rate_limit_exceeded": pb.ERROR_REASON_UPSTREAM_RATE_LIMITED,
    "model_not_found": pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND,
    "model_decommissioned": pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND,
    "invalid_api_key": pb.ERROR_REASON_UPSTREAM_AUTH_FAILED,
    "context_length_exceeded": pb.ERROR_REASON_UPSTREAM_CONTEXT_LENGTH_EXCEEDED,
}
# Groq's own status for a full flex tier: retry with jitter.
_CAPACITY_EXCEEDED_STATUS = 498
_TOO_MANY_REQUESTS = 429
_REQUEST_TOO_LARGE = 413
# Which limit each reset header belongs to, by its remaining-count header.
_RESET_HEADERS = (
    ("x-ratelimit-reset-requests", "x-ratelimit-remaining-requests"),
    ("x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens"),
)


class GroqProvider(OpenAICompatibleProvider):
    """groq/<model>; the model keeps its slashes (groq/openai/gpt-oss-120b)."""

    kind = common.PROVIDER_GROQ
    provider_id = "groq"
    display_name = "Groq"
    # Reported as upstream_provider, as every direct provider reports itself.
    default_upstream_provider: ClassVar[str] = "Groq"
    key_env = "GROQ_API_KEY"
    base_url_env = "GROQ_BASE_URL"

    def __init__(
        self, settings: GroqSettings, timeouts: Timeouts, **limits: Unpack[ProviderLimits]
    ) -> None:
        super().__init__(settings.api_key, timeouts, **limits)
        self.settings = settings
        self._chat_url = f"{settings.base_url}/chat/completions"
        self._extra_headers = dict(settings.headers)

    def url(self, request: AnyCompletionRequest, route: Route, *, stream: bool) -> str:
        return self._chat_url

    def extra_headers(self) -> dict[str, str]:
        return self._extra_headers

    def check(self, request: AnyCompletionRequest) -> list[FieldViolation]:
        if request.reasoning.HasField("max_tokens"):
            return [
                FieldViolation(
                    "reasoning.max_tokens",
                    "Groq takes a reasoning effort, not a token budget; set reasoning.effort",
                )
            ]
        return []

    def body(self, request: AnyCompletionRequest, route: Route, *, stream: bool) -> JSONObject:
        body = chat_body(request, route.upstream_model, stream=stream, reasoning_field=None)
        # Passed through by name: the levels differ per model (gpt-oss: low,
        # medium, high; qwen3: none, default) and Groq's 400 names a wrong one.
        effort = reasoning_effort(request.reasoning)
        if effort is not None:
            body["reasoning_effort"] = effort
        if request.reasoning.exclude:
            # Saves the bytes; the stream and the unary parser drop reasoning
            # text anyway when it is excluded.
            body["include_reasoning"] = False
        if request.user:
            body["user"] = request.user
        return body

    def chunk_usage(self, chunk: JSONObject) -> JSONObject | None:
        usage = super().chunk_usage(chunk)
        if usage is not None:
            return usage
        extra = chunk.get("x_groq")
        groq_usage = extra.get("usage") if isinstance(extra, dict) else None
        return groq_usage if isinstance(groq_usage, dict) else None

    def failure_from_error(self, error: object, http_status: int | None) -> ue.UpstreamFailure:
        return failure_from_native_error(error, http_status)

    def in_band_status(self, error: object, failure: ue.UpstreamFailure) -> int | None:
        # A mid-stream error says which HTTP status it would have had.
        status = error.get("status_code") if isinstance(error, dict) else None
        if isinstance(status, int) and not isinstance(status, bool):
            return status
        return None

    def classify(self, failure: ue.UpstreamFailure) -> ue.Reason:
        if failure.http_status == _REQUEST_TOO_LARGE and failure.code == "rate_limit_exceeded":
            # One request above the account's tokens-per-minute limit: waiting
            # never lets it through, so no retry; another target may take it
            # (QUOTA_EXCEEDED is a reason to fall back).
            return pb.ERROR_REASON_UPSTREAM_QUOTA_EXCEEDED
        if failure.code in _CODES:
            return _CODES[failure.code]
        if failure.http_status == _CAPACITY_EXCEEDED_STATUS:
            return pb.ERROR_REASON_UPSTREAM_OVERLOADED
        return super().classify(failure)

    def retry_after_from(
        self, failure: ue.UpstreamFailure, headers: Mapping[str, str]
    ) -> float | None:
        stated = super().retry_after_from(failure, headers)
        if stated is not None or failure.http_status != _TOO_MANY_REQUESTS:
            return stated
        return rate_limit_reset(headers)

    async def catalogue(self, within: float) -> list[pb.ModelInfo]:
        """GET /models: every active model (Groq lists its context windows),
        with prices from the built-in table (Groq lists none)."""
        document = await self.get_json("/models", self.settings.base_url, within)
        rows = {row.name: row for row in groq_prices.MODELS}
        infos = listed_models(
            document,
            common.PROVIDER_GROQ,
            self.configured,
            self.redactor.text,
            lambda entry, model_id: (
                entry.get("active") is not False and not _NOT_CHAT.search(model_id)
            ),
            lambda entry, model_id: rows.get(model_id),
        )
        windows = _context_windows(document)
        for info in infos:
            listed = windows.get(info.upstream_model)
            if listed:
                info.context_length = listed
        return infos


# Speech-to-text, text-to-speech and moderation-only models on Groq's list.
_NOT_CHAT = re.compile(r"whisper|tts|orpheus|playai|guard")


def _context_windows(document: object) -> dict[str, int]:
    data = document.get("data") if isinstance(document, dict) else None
    out: dict[str, int] = {}
    for entry in data if isinstance(data, list) else ():
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            window = entry.get("context_window")
            if isinstance(window, int) and not isinstance(window, bool) and window > 0:
                out[entry["id"]] = window
    return out


def rate_limit_reset(headers: Mapping[str, str]) -> float | None:
    """When the exhausted limit resets, from Groq's x-ratelimit-reset-* headers:
    the one whose remaining count is 0, else the later of those given (waiting
    for the wrong one is only slower; the earlier could be too soon)."""
    exhausted: list[float] = []
    given: list[float] = []
    for reset, remaining in _RESET_HEADERS:
        seconds = parse_duration(headers.get(reset))
        if seconds is None:
            continue
        given.append(seconds)
        if headers.get(remaining, "").strip() == "0":
            exhausted.append(seconds)
    chosen = exhausted or given
    return ue.sane_retry_after(max(chosen)) if chosen else None


def parse_duration(value: str | None) -> float | None:
    """Seconds in a Go-style duration, as Groq's x-ratelimit-reset-* headers
    give it ("2m59.56s", "7.66s", "120ms", "1h2m"); None if not one."""
    return ue.parse_duration(value)
