"""OpenAI: Chat Completions on the OpenAI-compatible core, with OpenAI's own limits and codes.

What differs from the shared dialect: the output limit is `max_completion_tokens`
(reasoning models refuse `max_tokens`); reasoning is an effort, never a budget,
and its text never comes back (so none is sent back); a refusal is carried both
ways; errors are classified by OpenAI's `code` (then `type`), because one HTTP
status covers both "retry soon" (429 rate_limit_exceeded) and "never retry"
(429 insufficient_quota).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

from llmgateway.server.errors import FieldViolation
from llmgateway.server.providers.openai_compatible.core import OpenAICompatibleProvider
from llmgateway.server.providers.openai_compatible.stream import failure_from_native_error
from llmgateway.server.providers.openai_compatible.wire import (
    AnyCompletionRequest,
    JSONObject,
    chat_body,
)
from llmgateway.server.routing.price_tables import openai as openai_prices
from llmgateway.server.routing.router import gateway_model_name
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Unpack

    from llmgateway.server.config import OpenAISettings, Timeouts
    from llmgateway.server.providers import upstream_errors as ue
    from llmgateway.server.providers.core import ProviderLimits
    from llmgateway.server.routing.price_tables import BuiltinModel
    from llmgateway.server.routing.router import Route

EFFORTS: dict[int, str] = {
    common.REASONING_EFFORT_NONE: "none",
    common.REASONING_EFFORT_MINIMAL: "minimal",
    common.REASONING_EFFORT_LOW: "low",
    common.REASONING_EFFORT_MEDIUM: "medium",
    common.REASONING_EFFORT_HIGH: "high",
    common.REASONING_EFFORT_XHIGH: "xhigh",
}

# OpenAI's error `code`s, switched on before the HTTP status (its docs' advice).
_CODES: dict[str, ue.Reason] = {
    # A 429 like a rate limit, but the account is out of money: retrying never helps.
    "insufficient_quota": pb.ERROR_REASON_UPSTREAM_INSUFFICIENT_CREDITS,
    "billing_hard_limit_reached": pb.ERROR_REASON_UPSTREAM_INSUFFICIENT_CREDITS,
    "rate_limit_exceeded": pb.ERROR_REASON_UPSTREAM_RATE_LIMITED,
    "context_length_exceeded": pb.ERROR_REASON_UPSTREAM_CONTEXT_LENGTH_EXCEEDED,
    "string_above_max_length": pb.ERROR_REASON_UPSTREAM_CONTEXT_LENGTH_EXCEEDED,
    "invalid_api_key": pb.ERROR_REASON_UPSTREAM_AUTH_FAILED,
    "model_not_found": pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND,
    "unsupported_parameter": pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST,
    "unsupported_value": pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST,
    "invalid_value": pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST,
    "server_error": pb.ERROR_REASON_UPSTREAM_UNAVAILABLE,
}
# Its error `type`s, for errors whose code is null or unknown.
_TYPES: dict[str, ue.Reason] = {
    "insufficient_quota": pb.ERROR_REASON_UPSTREAM_INSUFFICIENT_CREDITS,
    "server_error": pb.ERROR_REASON_UPSTREAM_UNAVAILABLE,
    "authentication_error": pb.ERROR_REASON_UPSTREAM_AUTH_FAILED,
}

# Ids on GET /models that are not chat models (embeddings, speech, images,
# moderation, legacy completions): ListModels leaves them out, since
# openai/<id> would only fail with them.
_NOT_CHAT = re.compile(
    r"embedding|tts|whisper|transcribe|dall-e|gpt-image|image|moderation|"
    r"^babbage|^davinci|instruct|realtime|audio|search|sora|computer-use|codex-mini|"
    # Responses-API-only models.
    r"-pro\b|deep-research"
)
# What follows a table name in a dated snapshot id (`gpt-4o-2024-08-06`,
# `gpt-4-0613`): a digit, `latest` or `preview`; another word is another model.
_SNAPSHOT_TAG = re.compile(r"-(?:\d|latest\b|preview\b)")


class OpenAIProvider(OpenAICompatibleProvider):
    """openai/<model>."""

    kind = common.PROVIDER_OPENAI
    provider_id = "openai"
    display_name = "OpenAI"
    # Reported as upstream_provider, as every direct provider reports itself.
    default_upstream_provider: ClassVar[str] = "OpenAI"
    key_env = "OPENAI_API_KEY"
    base_url_env = "OPENAI_BASE_URL"

    def __init__(
        self, settings: OpenAISettings, timeouts: Timeouts, **limits: Unpack[ProviderLimits]
    ) -> None:
        super().__init__(settings.api_key, timeouts, **limits)
        self.settings = settings
        self._chat_url = f"{settings.base_url}/chat/completions"
        headers = dict(settings.headers)
        if settings.organization:
            headers["OpenAI-Organization"] = settings.organization
        if settings.project:
            headers["OpenAI-Project"] = settings.project
        self._extra_headers = headers

    def url(self, request: AnyCompletionRequest, route: Route, *, stream: bool) -> str:
        return self._chat_url

    def extra_headers(self) -> dict[str, str]:
        return self._extra_headers

    def check(self, request: AnyCompletionRequest) -> list[FieldViolation]:
        if request.reasoning.HasField("max_tokens"):
            return [
                FieldViolation(
                    "reasoning.max_tokens",
                    "OpenAI takes a reasoning effort, not a token budget; set reasoning.effort",
                )
            ]
        return []

    def body(self, request: AnyCompletionRequest, route: Route, *, stream: bool) -> JSONObject:
        body = chat_body(
            request,
            route.upstream_model,
            stream=stream,
            # Chat Completions returns no reasoning text and takes none back.
            reasoning_field=None,
            max_tokens_field="max_completion_tokens",
            sends_refusal=True,
        )
        effort = reasoning_effort(request.reasoning)
        if effort is not None:
            body["reasoning_effort"] = effort
        if request.user:
            body["user"] = request.user
        return body

    def failure_from_error(self, error: object, http_status: int | None) -> ue.UpstreamFailure:
        return failure_from_native_error(error, http_status)

    def classify(self, failure: ue.UpstreamFailure) -> ue.Reason:
        if failure.code in _CODES:
            return _CODES[failure.code]
        if failure.error_type in _TYPES:
            return _TYPES[failure.error_type]
        return super().classify(failure)

    async def catalogue(self, within: float) -> list[pb.ModelInfo]:
        """GET /models (ids only), chat models only, with context and prices
        from the built-in table (OpenAI publishes neither)."""
        document = await self.get_json("/models", self.settings.base_url, within)
        return listed_models(
            document,
            common.PROVIDER_OPENAI,
            self.configured,
            self.redactor.text,
            lambda entry, model_id: _NOT_CHAT.search(model_id) is None,
            lambda entry, model_id: table_row(openai_prices.MODELS, model_id),
        )


def reasoning_effort(reasoning: common.ReasoningOptions) -> str | None:
    """`reasoning_effort` for OpenAI-style wires: `enabled=false` is "none",
    else the effort asked for; None leaves the model's default."""
    if reasoning.HasField("enabled") and not reasoning.enabled:
        return "none"
    return EFFORTS.get(reasoning.effort)


def table_row(models: Iterable[BuiltinModel], model_id: str) -> BuiltinModel | None:
    """The built-in row for `model_id`: its own, else the longest row name it
    extends with a snapshot tag (`gpt-4o-2024-08-06` takes `gpt-4o`'s)."""
    best: BuiltinModel | None = None
    for row in models:
        if row.name == model_id:
            return row
        if (
            model_id.startswith(row.name)
            and _SNAPSHOT_TAG.match(model_id, len(row.name))
            and (best is None or len(row.name) > len(best.name))
        ):
            best = row
    return best


def listed_models(
    document: object,
    provider: common.Provider.ValueType,
    available: bool,
    redact: Callable[[str], str],
    wanted: Callable[[JSONObject, str], bool],
    row_for: Callable[[JSONObject, str], BuiltinModel | None],
) -> list[pb.ModelInfo]:
    """ModelInfos from an OpenAI-style `{"data": [{"id": ...}]}` list: the
    entries `wanted` keeps, with context and prices from `row_for`. Every
    string copied out goes through `redact` (the document is not redacted as
    fetched: see UpstreamProvider.get_json)."""
    data = document.get("data") if isinstance(document, dict) else None
    out = []
    for entry in data if isinstance(data, list) else ():
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        model_id = entry["id"]
        if not model_id or not wanted(entry, model_id):
            continue
        upstream_model = redact(model_id)
        info = pb.ModelInfo(
            name=gateway_model_name(provider, upstream_model),
            provider=provider,
            upstream_model=upstream_model,
            display_name=upstream_model,
            available=available,
        )
        row = row_for(entry, model_id)
        if row is not None:
            info.context_length = row.context
            info.pricing.prompt_per_million = row.prompt
            info.pricing.completion_per_million = row.completion
            if row.cached is not None:
                info.pricing.cached_prompt_per_million = row.cached
        out.append(info)
    return out
