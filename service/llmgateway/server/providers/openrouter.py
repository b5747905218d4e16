"""OpenRouter: the OpenAI wire plus routing fields, attribution headers and error types."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from typing import TYPE_CHECKING, ClassVar

import aiohttp
import orjson

from llmgateway.server.errors import FieldViolation
from llmgateway.server.observability.logs import LogSampler
from llmgateway.server.providers.openai_compatible.core import OpenAICompatibleProvider
from llmgateway.server.providers.openai_compatible.wire import (
    AnyCompletionRequest,
    JSONObject,
    chat_body,
)
from llmgateway.server.providers.upstream_http import UpstreamStatusError
from llmgateway.server.routing.router import OPENROUTER_PREFIX, gateway_model_name
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Unpack

    from llmgateway.server.config import OpenRouterSettings, Timeouts
    from llmgateway.server.providers.core import ProviderLimits
    from llmgateway.server.providers.upstream_errors import Reason, UpstreamFailure
    from llmgateway.server.routing.router import Route

# Waits before each look-up of a generation record: its 404 window is
# reported at 0.5 s and more, longer after interrupted streams (about 10 s in all).
GENERATION_LOOKUP_DELAYS = (0.5, 1.0, 2.0, 2.5, 4.0)
# At most one warning this often about generation records that are not JSON.
NOT_JSON_LOG_INTERVAL = 60.0

_PER_MILLION = 1_000_000

logger = logging.getLogger(__name__)

_EFFORTS = {
    common.REASONING_EFFORT_NONE: "none",
    common.REASONING_EFFORT_MINIMAL: "minimal",
    common.REASONING_EFFORT_LOW: "low",
    common.REASONING_EFFORT_MEDIUM: "medium",
    common.REASONING_EFFORT_HIGH: "high",
    common.REASONING_EFFORT_XHIGH: "xhigh",
}
_SORTS = {
    common.PROVIDER_SORT_PRICE: "price",
    common.PROVIDER_SORT_THROUGHPUT: "throughput",
    common.PROVIDER_SORT_LATENCY: "latency",
}
_DATA_COLLECTION = {common.DATA_COLLECTION_ALLOW: "allow", common.DATA_COLLECTION_DENY: "deny"}

# OpenRouter's stable `error_type` values (and availability codes), switched on
# instead of message text, as its docs ask.
_ERROR_TYPES: dict[str, Reason] = {
    **dict.fromkeys(
        [
            "context_length_exceeded",
            "max_tokens_exceeded",
            "token_limit_exceeded",
            "string_too_long",
        ],
        pb.ERROR_REASON_UPSTREAM_CONTEXT_LENGTH_EXCEEDED,
    ),
    "authentication": pb.ERROR_REASON_UPSTREAM_AUTH_FAILED,
    "payment_required": pb.ERROR_REASON_UPSTREAM_INSUFFICIENT_CREDITS,
    **dict.fromkeys(
        ["permission_denied", "region_restricted", "privacy_restricted"],
        pb.ERROR_REASON_UPSTREAM_PERMISSION_DENIED,
    ),
    "rate_limit_exceeded": pb.ERROR_REASON_UPSTREAM_RATE_LIMITED,
    **dict.fromkeys(
        ["provider_overloaded", "capacity_exhausted"], pb.ERROR_REASON_UPSTREAM_OVERLOADED
    ),
    **dict.fromkeys(
        [
            "provider_unavailable",
            "server",
            "unmapped",
            "temporarily_unavailable",
            "model_unavailable_upstream",
        ],
        pb.ERROR_REASON_UPSTREAM_UNAVAILABLE,
    ),
    "timeout": pb.ERROR_REASON_UPSTREAM_TIMEOUT,
    **dict.fromkeys(
        [
            "not_found",
            "model_not_found",
            "no_endpoints",
            "model_deprecated",
            "wrong_endpoint",
            "free_variant_ended",
            "constraint_filtered",
        ],
        pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND,
    ),
    **dict.fromkeys(
        ["content_policy_violation", "refusal"], pb.ERROR_REASON_UPSTREAM_CONTENT_FLAGGED
    ),
    **dict.fromkeys(
        [
            "invalid_request",
            "invalid_prompt",
            "precondition_failed",
            "payload_too_large",
            "unprocessable",
            "invalid_image",
            "image_too_large",
            "image_too_small",
            "unsupported_image_format",
            "image_not_found",
            "image_download_failed",
        ],
        pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST,
    ),
}


class OpenRouterProvider(OpenAICompatibleProvider):
    """openrouter/<vendor>/<model>."""

    kind = common.PROVIDER_OPENROUTER
    provider_id = "openrouter"
    display_name = "OpenRouter"
    key_env = "OPENROUTER_API_KEY"
    base_url_env = "OPENROUTER_BASE_URL"
    reasoning_fields: ClassVar[tuple[str, str]] = ("reasoning", "reasoning_content")
    reasoning_details_provider: ClassVar[common.Provider.ValueType | None] = (
        common.PROVIDER_OPENROUTER
    )

    def __init__(
        self, settings: OpenRouterSettings, timeouts: Timeouts, **limits: Unpack[ProviderLimits]
    ) -> None:
        super().__init__(settings.api_key, timeouts, **limits)
        self.settings = settings
        self._chat_url = f"{settings.base_url}/chat/completions"
        headers = {}
        if settings.http_referer:
            headers["HTTP-Referer"] = settings.http_referer
        if settings.app_title:
            # X-Title is the long-standing name; OpenRouter accepts both.
            headers["X-Title"] = settings.app_title
            headers["X-OpenRouter-Title"] = settings.app_title
        self._extra_headers = headers
        self._not_json_log = LogSampler(NOT_JSON_LOG_INTERVAL)

    async def catalogue(self, within: float) -> list[pb.ModelInfo]:
        """OpenRouter's /models: every model it routes, with context and prices."""
        document = await self.get_json("/models", self.settings.base_url, within)
        # The document is not redacted as fetched (see get_json): only the
        # strings copied into a ModelInfo are.
        return openrouter_models(document, self.configured, self.redactor.text)

    def url(self, request: AnyCompletionRequest, route: Route, *, stream: bool) -> str:
        return self._chat_url

    async def generation_cost(self, generation_id: str) -> float | None:
        """The cost OpenRouter's generation record gives, for answers whose usage
        carried none. The record 404s for a while after a completion, so each
        delay of GENERATION_LOOKUP_DELAYS is waited before a try; None when the
        record never appears."""
        if not generation_id.startswith("gen-"):
            return None
        path = "/generation?id=" + urllib.parse.quote(generation_id, safe="-")
        not_json = 0
        for delay in GENERATION_LOOKUP_DELAYS:
            await asyncio.sleep(delay)
            try:
                document = await self.lookup_json(path, self.settings.base_url, 10.0)
            except UpstreamStatusError as exc:
                if exc.status in (404, 429) or exc.status >= 500:
                    continue
                return None
            except (aiohttp.ClientError, TimeoutError):
                continue
            except ValueError:
                # Not JSON: a proxy's page in the record's place, likely gone
                # on a later try. Never the caller's fault, and not worth a
                # traceback per call (service/llmgateway/server/call_path/calls.py logs those).
                not_json += 1
                continue
            data = document.get("data") if isinstance(document, dict) else None
            cost = data.get("total_cost") if isinstance(data, dict) else None
            if isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0:
                return float(cost)
            return None
        if not_json:
            self._log_unreadable_record(generation_id, not_json)
        return None

    def _log_unreadable_record(self, generation_id: str, tries: int) -> None:
        """One warning per NOT_JSON_LOG_INTERVAL: a proxy answering every lookup
        with a page would otherwise write a line per call."""
        admitted, suppressed = self._not_json_log.admit()
        if admitted:
            logger.warning(
                "OpenRouter's generation record for %s was not JSON in %d of %d tries "
                "(a proxy's page?); the call's cost stays unknown "
                "(%d more such calls since the last line)",
                generation_id,
                tries,
                len(GENERATION_LOOKUP_DELAYS),
                suppressed,
            )

    def extra_headers(self) -> dict[str, str]:
        return self._extra_headers

    def body(self, request: AnyCompletionRequest, route: Route, *, stream: bool) -> JSONObject:
        body = chat_body(
            request,
            route.upstream_model,
            stream=stream,
            reasoning_field="reasoning",
            details_of=common.PROVIDER_OPENROUTER,
        )
        # Deprecated and harmless: older deployments needed it to report cost.
        body["usage"] = {"include": True}
        if request.user:
            body["user"] = request.user
        reasoning = _reasoning_json(request.reasoning)
        if reasoning:
            # Never an empty object: OpenRouter reads `reasoning: {}` as "on, default effort".
            body["reasoning"] = reasoning
        options = request.openrouter
        if options.models:
            body["models"] = [m.removeprefix(OPENROUTER_PREFIX) for m in options.models]
        if options.HasField("provider"):
            body["provider"] = _provider_json(options.provider)
        return body

    def check(self, request: AnyCompletionRequest) -> list[FieldViolation]:
        """OpenRouter's reasoning_details go back as JSON: each must still be an object."""
        violations = []
        for i, message in enumerate(request.messages):
            for j, detail in enumerate(message.reasoning_details):
                if detail.provider != common.PROVIDER_OPENROUTER:
                    continue  # never sent to OpenRouter
                try:
                    entry = orjson.loads(detail.raw_json)
                except orjson.JSONDecodeError:
                    entry = None
                if not isinstance(entry, dict):
                    violations.append(
                        FieldViolation(
                            f"messages[{i}].reasoning_details[{j}].raw_json",
                            "must be the JSON object OpenRouter returned, unchanged",
                        )
                    )
        return violations

    def classify(self, failure: UpstreamFailure) -> Reason:
        if failure.moderation:
            return pb.ERROR_REASON_UPSTREAM_CONTENT_FLAGGED
        if failure.error_type in _ERROR_TYPES:
            return _ERROR_TYPES[failure.error_type]
        return super().classify(failure)


def _reasoning_json(reasoning: common.ReasoningOptions) -> JSONObject:
    out: JSONObject = {}
    if reasoning.HasField("enabled"):
        out["enabled"] = reasoning.enabled
    if reasoning.effort in _EFFORTS:
        out["effort"] = _EFFORTS[reasoning.effort]
    if reasoning.HasField("max_tokens"):
        out["max_tokens"] = reasoning.max_tokens
    if reasoning.exclude:
        out["exclude"] = True
    return out


def _provider_json(prefs: common.ProviderPreferences) -> JSONObject:
    out: JSONObject = {}
    if prefs.order:
        out["order"] = list(prefs.order)
    if prefs.HasField("allow_fallbacks"):
        out["allow_fallbacks"] = prefs.allow_fallbacks
    if prefs.HasField("require_parameters"):
        out["require_parameters"] = prefs.require_parameters
    if prefs.data_collection in _DATA_COLLECTION:
        out["data_collection"] = _DATA_COLLECTION[prefs.data_collection]
    if prefs.sort in _SORTS:
        out["sort"] = _SORTS[prefs.sort]
    if prefs.HasField("max_price"):
        price = prefs.max_price
        out["max_price"] = {
            name: getattr(price, name)
            for name in ("prompt", "completion", "request", "image")
            if price.HasField(name)
        }
    return out


def openrouter_models(
    document: object, available: bool, redact: Callable[[str], str]
) -> list[pb.ModelInfo]:
    """ModelInfos from OpenRouter's /models document; `redact` scrubs each
    string copied out of it (numbers are parsed, never copied)."""
    data = document.get("data") if isinstance(document, dict) else None
    out = []
    for entry in data if isinstance(data, list) else ():
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        upstream_model = redact(entry["id"])
        info = pb.ModelInfo(
            name=gateway_model_name(common.PROVIDER_OPENROUTER, upstream_model),
            provider=common.PROVIDER_OPENROUTER,
            upstream_model=upstream_model,
            display_name=redact(str(entry.get("name") or "")),
            available=available,
        )
        context = entry.get("context_length")
        if isinstance(context, int) and context > 0:
            info.context_length = context
        _published_capabilities(entry, info.capabilities)
        pricing = entry.get("pricing")
        if isinstance(pricing, dict):
            # OpenRouter quotes USD per token as decimal strings.
            for source, target in (
                ("prompt", "prompt_per_million"),
                ("completion", "completion_per_million"),
                ("input_cache_read", "cached_prompt_per_million"),
            ):
                per_token = _decimal(pricing.get(source))
                if per_token is not None and per_token >= 0:
                    setattr(info.pricing, target, per_token * _PER_MILLION)
        out.append(info)
    return out


def _published_capabilities(entry: dict[str, object], out: pb.ModelCapabilities) -> None:
    """What a /models entry says the model takes, into `out`; a fact is set
    only when its field is there. `supported_parameters` lists the request
    parameters some provider of the model honours (OpenRouter drops the
    others silently), so a parameter missing from a present list is a "no".
    json_schema travels in `response_format` too, so a model with
    `structured_outputs` takes a plain JSON object as well."""
    parameters = entry.get("supported_parameters")
    if isinstance(parameters, list):
        names = {name for name in parameters if isinstance(name, str)}
        out.tools = "tools" in names
        out.forced_tool_choice = "tools" in names and "tool_choice" in names
        out.json_schema = "structured_outputs" in names
        out.json_object = "response_format" in names or "structured_outputs" in names
    architecture = entry.get("architecture")
    modalities = architecture.get("input_modalities") if isinstance(architecture, dict) else None
    if isinstance(modalities, list):
        out.vision = "image" in modalities


def _decimal(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]  # strings and numbers both occur
    except (TypeError, ValueError):
        return None
