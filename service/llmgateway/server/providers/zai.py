"""Z.AI (GLM): the OpenAI wire with Z.AI's endpoints, thinking, limits and business codes."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from llmgateway.server.errors import FieldViolation
from llmgateway.server.providers import upstream_errors as ue
from llmgateway.server.providers.openai_compatible.core import OpenAICompatibleProvider
from llmgateway.server.providers.openai_compatible.wire import (
    AnyCompletionRequest,
    JSONObject,
    chat_body,
)
from llmgateway.server.routing.pricing import ZAI_MODELS
from llmgateway.server.routing.router import gateway_model_name
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from typing import Unpack

    from llmgateway.server.config import Timeouts, ZaiSettings
    from llmgateway.server.providers.core import ProviderLimits
    from llmgateway.server.routing.router import Route

# Z.AI drops list-form content on these roles, so their text parts are joined.
_FLATTENED_ROLES = frozenset({"system", "assistant", "tool"})

# Business codes decide, not the HTTP status: 429 covers both "retry soon"
# (1302, 1305) and "do not retry" (1113, 1308).
_BUSINESS_CODES: dict[int, ue.Reason] = {
    **dict.fromkeys(range(1000, 1005), pb.ERROR_REASON_UPSTREAM_AUTH_FAILED),
    **dict.fromkeys(
        [1110, 1111, 1112, 1121, 1220, 1221, 1222, 1300, 1313],
        pb.ERROR_REASON_UPSTREAM_PERMISSION_DENIED,
    ),
    1113: pb.ERROR_REASON_UPSTREAM_INSUFFICIENT_CREDITS,
    **dict.fromkeys([500, 1100, 1120, 1230, 1234], pb.ERROR_REASON_UPSTREAM_UNAVAILABLE),
    **dict.fromkeys(
        [1200, 1210, 1212, 1213, 1214, 1215], pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST
    ),
    1211: pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND,
    1231: pb.ERROR_REASON_UPSTREAM_DUPLICATE_REQUEST,
    1261: pb.ERROR_REASON_UPSTREAM_CONTEXT_LENGTH_EXCEEDED,
    1301: pb.ERROR_REASON_UPSTREAM_CONTENT_FLAGGED,
    **dict.fromkeys([1302, 1303], pb.ERROR_REASON_UPSTREAM_RATE_LIMITED),
    1305: pb.ERROR_REASON_UPSTREAM_OVERLOADED,
    **dict.fromkeys([1304, 1308, 1309, 1310, 1312], pb.ERROR_REASON_UPSTREAM_QUOTA_EXCEEDED),
}

# Z.AI's SDK keeps sampling values inside the open interval the API once
# required; the gateway does the same.
_MIN_TEMPERATURE = 0.01
_MAX_TEMPERATURE = 0.99
_MIN_TOP_P = 0.01
_MAX_TOP_P = 0.99
_MIN_USER_ID = 6


class ZaiProvider(OpenAICompatibleProvider):
    """zai/<model>."""

    kind = common.PROVIDER_ZAI
    provider_id = "zai"
    display_name = "Z.AI"
    key_env = "ZAI_API_KEY"
    base_url_env = "ZAI_BASE_URL or ZAI_CODING_BASE_URL"
    reasoning_fields: ClassVar[tuple[str, str]] = ("reasoning_content", "reasoning")
    default_upstream_provider = "Z.AI"

    def __init__(
        self, settings: ZaiSettings, timeouts: Timeouts, **limits: Unpack[ProviderLimits]
    ) -> None:
        super().__init__(settings.api_key, timeouts, **limits)
        self.settings = settings
        self._general_url = f"{settings.base_url}/chat/completions"
        self._coding_url = f"{settings.coding_base_url}/chat/completions"
        self._extra_headers = {"Accept-Language": settings.accept_language}

    def endpoint(self, request: AnyCompletionRequest, route: Route) -> common.ZaiEndpoint.ValueType:
        """The endpoint serving this request: pinned by an alias target, else asked
        for, else configured for the model, else general."""
        if route.zai_endpoint != common.ZAI_ENDPOINT_UNSPECIFIED:
            return route.zai_endpoint
        if request.zai.endpoint != common.ZAI_ENDPOINT_UNSPECIFIED:
            return request.zai.endpoint
        if route.upstream_model in self.settings.coding_models:
            return common.ZAI_ENDPOINT_CODING
        return common.ZAI_ENDPOINT_GENERAL

    served_endpoint = endpoint

    @property
    def circuit_names(self) -> tuple[str, ...]:
        return (self.provider_id, f"{self.provider_id}-coding")

    def circuit_name(self, request: AnyCompletionRequest, route: Route) -> str:
        # The endpoints fail independently (different plans, different capacity).
        if self.endpoint(request, route) == common.ZAI_ENDPOINT_CODING:
            return f"{self.provider_id}-coding"
        return self.provider_id

    async def catalogue(self, within: float) -> list[pb.ModelInfo]:
        """Z.AI publishes no model list with prices: the built-in table."""
        del within
        out = []
        for model in ZAI_MODELS:
            pricing = pb.ModelPricing(
                prompt_per_million=model.prompt, completion_per_million=model.completion
            )
            if model.cached is not None:
                pricing.cached_prompt_per_million = model.cached
            out.append(
                pb.ModelInfo(
                    name=gateway_model_name(common.PROVIDER_ZAI, model.name),
                    provider=common.PROVIDER_ZAI,
                    upstream_model=model.name,
                    display_name=model.name.upper(),
                    context_length=model.context,
                    pricing=pricing,
                    available=self.configured,
                )
            )
        return out

    def url(self, request: AnyCompletionRequest, route: Route, *, stream: bool) -> str:
        if self.endpoint(request, route) == common.ZAI_ENDPOINT_CODING:
            return self._coding_url
        return self._general_url

    def extra_headers(self) -> dict[str, str]:
        return self._extra_headers

    def check(self, request: AnyCompletionRequest) -> list[FieldViolation]:
        violations = []
        if len(request.sampling.stop) > 1:
            violations.append(
                FieldViolation("sampling.stop", "Z.AI supports one stop sequence; send at most one")
            )
        violations.extend(
            FieldViolation(
                f"sampling.{name}", "Z.AI does not support this parameter; leave it unset"
            )
            for name in ("presence_penalty", "frequency_penalty")
            if request.sampling.HasField(name)
        )
        if request.response_format.type == common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
            violations.append(
                FieldViolation(
                    "response_format.type",
                    "Z.AI does not support json_schema; use RESPONSE_FORMAT_TYPE_JSON_OBJECT and "
                    "describe the schema in the prompt",
                )
            )
        if request.user and len(request.user) < _MIN_USER_ID:
            violations.append(
                FieldViolation(
                    "user", f"Z.AI needs a user id of at least {_MIN_USER_ID} characters"
                )
            )
        for i, message in enumerate(request.messages):
            if message.role != common.ROLE_USER and any(
                p.WhichOneof("part") == "image" for p in message.parts
            ):
                violations.append(
                    FieldViolation(
                        f"messages[{i}].parts",
                        "Z.AI takes images only in user messages; move the image to a user message",
                    )
                )
        roles = {m.role for m in request.messages}
        if roles and roles <= {common.ROLE_SYSTEM, common.ROLE_ASSISTANT}:
            violations.append(
                FieldViolation("messages", "Z.AI needs at least one user or tool message")
            )
        return violations

    def body(self, request: AnyCompletionRequest, route: Route, *, stream: bool) -> JSONObject:
        body = chat_body(
            request,
            route.upstream_model,
            stream=stream,
            reasoning_field="reasoning_content",
            flatten_content_roles=_FLATTENED_ROLES,
        )
        _adapt_sampling(body)
        _adapt_tool_choice(body, request)
        thinking: JSONObject = {}
        if request.reasoning.HasField("enabled"):
            thinking["type"] = "enabled" if request.reasoning.enabled else "disabled"
        elif request.reasoning.effort == common.REASONING_EFFORT_NONE:
            # Z.AI has no effort levels, but "none" has an exact equivalent.
            thinking["type"] = "disabled"
        if request.zai.HasField("clear_thinking"):
            thinking.setdefault("type", "enabled")
            thinking["clear_thinking"] = request.zai.clear_thinking
        if thinking:
            body["thinking"] = thinking
        if request.user:
            body["user_id"] = request.user
        return body

    def classify(self, failure: ue.UpstreamFailure) -> ue.Reason:
        try:
            code = int(failure.code) if failure.code is not None else None
        except ValueError:
            code = None
        if code is not None and code in _BUSINESS_CODES:
            return _BUSINESS_CODES[code]
        return super().classify(failure)

    def withdraws_content(self, native_finish_reason: str) -> bool:
        # `sensitive`: content safety blocked the output; Z.AI says withdraw it.
        return native_finish_reason == "sensitive"

    def hint(self, failure: ue.UpstreamFailure) -> str | None:
        if failure.code == "1113":
            return (
                "Z.AI also answers 1113 when a Coding Plan key is used on the general "
                "endpoint or the reverse; check ZAI_API_KEY against the endpoint"
            )
        return None

    def finish_reason(self, native: str, route: Route) -> common.FinishReason.ValueType:
        if native == "network_error":
            # Inference failed upstream: an error to retry, not an answer.
            raise ue.local_error(
                pb.ERROR_REASON_UPSTREAM_UNAVAILABLE,
                "the model reported finish_reason 'network_error' (inference failed); retry",
                self.error_context(route),
            )
        if native == "sensitive":
            return common.FINISH_REASON_CONTENT_FILTER
        if native == "model_context_window_exceeded":
            # Treated as `length`, or agents loop on it.
            return common.FINISH_REASON_LENGTH
        return super().finish_reason(native, route)


def _adapt_sampling(body: JSONObject) -> None:
    temperature = body.get("temperature")
    if temperature is not None:
        if temperature <= 0:
            body["do_sample"] = False
            body["temperature"] = _MIN_TEMPERATURE
        else:
            body["temperature"] = min(temperature, _MAX_TEMPERATURE)
    top_p = body.get("top_p")
    if top_p is not None:
        body["top_p"] = min(max(top_p, _MIN_TOP_P), _MAX_TOP_P)


def _adapt_tool_choice(body: JSONObject, request: AnyCompletionRequest) -> None:
    """Z.AI answers 400 to any tool_choice but "auto"."""
    choice = body.pop("tool_choice", None)
    if "tools" not in body:
        return
    if choice == "none":
        # No tools means no tool calls: the only faithful "none" on Z.AI.
        del body["tools"]
        return
    if isinstance(choice, dict):
        # A forced function: offer only that tool, so "auto" can pick nothing else.
        forced = request.tool_choice.function_name
        body["tools"] = [t for t in body["tools"] if t["function"]["name"] == forced]
    body["tool_choice"] = "auto"
