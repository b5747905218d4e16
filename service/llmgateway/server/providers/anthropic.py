"""Anthropic's Messages API: the contract's conversation rebuilt as content blocks.

What differs from the OpenAI wire, and why the translation is its own:
- the system prompt is a top-level field, and `max_tokens` is required;
- tool calls are `tool_use` blocks with an `input` object, and tool results
  are `tool_result` blocks in a *user* turn (consecutive ones share that turn);
- thinking comes back signed: a caller must return each thinking block byte for
  byte on the next turn, so the gateway hands out ReasoningDetails and sends back
  only those Anthropic issued. A bare `reasoning` string is never sent: an
  unsigned thinking block is a 400, while leaving out earlier thinking is
  accepted;
- errors are `{"type": "error", "error": {"type", "message"}, "request_id"}`,
  classified by `error.type` (and, where Anthropic reuses
  `invalid_request_error`, by its words).
The stream's named events are assembled in anthropic_stream.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from llmgateway.server.errors import FieldViolation
from llmgateway.server.providers import translate
from llmgateway.server.providers import upstream_errors as ue
from llmgateway.server.providers.anthropic_stream import AnthropicStreamAssembler
from llmgateway.server.providers.core import UpstreamProvider
from llmgateway.server.providers.openai_compatible.wire import (
    SamplingField,
    sampling_fields,
    struct_to_json,
    token_count,
)
from llmgateway.server.providers.translate import Untranslatable
from llmgateway.server.routing.price_tables.anthropic import MODELS
from llmgateway.server.routing.router import gateway_model_name
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Unpack

    from llmgateway.server.config import AnthropicSettings, Timeouts
    from llmgateway.server.errors import GatewayError
    from llmgateway.server.providers.core import ProviderLimits
    from llmgateway.server.providers.openai_compatible.wire import (
        AnyCompletionRequest,
        JSONObject,
    )
    from llmgateway.server.routing.price_tables import BuiltinModel
    from llmgateway.server.routing.router import Route

# Anthropic's own lower bound on a thinking budget.
MIN_THINKING_BUDGET = 1024
# Effort has no Anthropic equivalent on `thinking` (budget_tokens is a count),
# so each level is a documented budget; `reasoning.max_tokens` sets it exactly.
EFFORT_BUDGETS: dict[common.ReasoningEffort.ValueType, int] = {
    common.REASONING_EFFORT_MINIMAL: 1024,
    common.REASONING_EFFORT_LOW: 2048,
    common.REASONING_EFFORT_MEDIUM: 8192,
    common.REASONING_EFFORT_HIGH: 16384,
    common.REASONING_EFFORT_XHIGH: 32768,
}
# `reasoning.enabled` alone: thinking on, at the medium budget.
DEFAULT_THINKING_BUDGET = EFFORT_BUDGETS[common.REASONING_EFFORT_MEDIUM]
# The SamplingParams fields Anthropic takes, under its names.
_SAMPLING_NAMES: dict[SamplingField, str] = {
    "temperature": "temperature",
    "top_p": "top_p",
    "stop": "stop_sequences",
}
# Anthropic's temperature range is [0, 1] (the contract's goes to 2).
MAX_TEMPERATURE = 1.0
# Catalogue pages: Anthropic's largest page, and a bound on how many to follow.
_MODELS_PAGE = "1000"
_MAX_MODEL_PAGES = 20

_TOOL_CHOICE: dict[common.ToolChoiceMode.ValueType, JSONObject] = {
    common.TOOL_CHOICE_MODE_AUTO: {"type": "auto"},
    common.TOOL_CHOICE_MODE_NONE: {"type": "none"},
    common.TOOL_CHOICE_MODE_REQUIRED: {"type": "any"},
}

FINISH_REASONS: dict[str, common.FinishReason.ValueType] = {
    "end_turn": common.FINISH_REASON_STOP,
    "stop_sequence": common.FINISH_REASON_STOP,
    "max_tokens": common.FINISH_REASON_LENGTH,
    "model_context_window_exceeded": common.FINISH_REASON_LENGTH,
    "tool_use": common.FINISH_REASON_TOOL_CALLS,
    "refusal": common.FINISH_REASON_CONTENT_FILTER,
    # The server paused a long-running turn (server tools): OTHER, with the
    # native reason kept; the caller sends the assistant turn back to continue.
    "pause_turn": common.FINISH_REASON_OTHER,
}

ERROR_TYPES: dict[str, ue.Reason] = {
    "authentication_error": pb.ERROR_REASON_UPSTREAM_AUTH_FAILED,
    "permission_error": pb.ERROR_REASON_UPSTREAM_PERMISSION_DENIED,
    "not_found_error": pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND,
    "request_too_large": pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST,
    "rate_limit_error": pb.ERROR_REASON_UPSTREAM_RATE_LIMITED,
    "api_error": pb.ERROR_REASON_UPSTREAM_UNAVAILABLE,
    "overloaded_error": pb.ERROR_REASON_UPSTREAM_OVERLOADED,
    "billing_error": pb.ERROR_REASON_UPSTREAM_INSUFFICIENT_CREDITS,
    "timeout_error": pb.ERROR_REASON_UPSTREAM_TIMEOUT,
    "invalid_request_error": pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST,
}
# Anthropic reports these as invalid_request_error; only the words tell them apart.
_MESSAGE_REASONS: tuple[tuple[str, ue.Reason], ...] = (
    ("credit balance is too low", pb.ERROR_REASON_UPSTREAM_INSUFFICIENT_CREDITS),
    ("prompt is too long", pb.ERROR_REASON_UPSTREAM_CONTEXT_LENGTH_EXCEEDED),
)
# An upstream's error text is cut to this before it is used (redaction and the
# caller-facing bounds come after, in ue.build_error).
_MAX_ERROR_TEXT = 8192


class AnthropicProvider(UpstreamProvider):
    """anthropic/<model>."""

    kind = common.PROVIDER_ANTHROPIC
    provider_id = "anthropic"
    display_name = "Anthropic"
    key_env = "ANTHROPIC_API_KEY"
    base_url_env = "ANTHROPIC_BASE_URL"

    def __init__(
        self, settings: AnthropicSettings, timeouts: Timeouts, **limits: Unpack[ProviderLimits]
    ) -> None:
        super().__init__(settings.api_key, timeouts, **limits)
        self.settings = settings
        self._messages_url = f"{settings.base_url}/v1/messages"
        # The configured version and betas win over a same-named extra header.
        headers = {**settings.headers, "anthropic-version": settings.version}
        if settings.beta:
            headers["anthropic-beta"] = ",".join(settings.beta)
        self._extra_headers = headers

    # -- the request ------------------------------------------------------------

    def url(self, request: AnyCompletionRequest, route: Route, *, stream: bool) -> str:
        del request, route, stream
        return self._messages_url

    def auth_headers(self) -> dict[str, str]:
        if self._api_key is None:
            return {}
        return {"x-api-key": self._api_key.value}

    def extra_headers(self) -> dict[str, str]:
        return self._extra_headers

    def check(self, request: AnyCompletionRequest) -> list[FieldViolation]:
        violations = _parameter_violations(request, self.settings.default_max_tokens)
        try:
            _messages(request.messages)
        except Untranslatable as exc:
            violations.append(exc.violation)
        return violations

    def body(self, request: AnyCompletionRequest, route: Route, *, stream: bool) -> JSONObject:
        return messages_body(
            request, route.upstream_model, self.settings.default_max_tokens, stream=stream
        )

    # -- the answer ---------------------------------------------------------------

    def parse_unary(
        self, payload: object, route: Route, include_reasoning: bool
    ) -> pb.CompleteResponse:
        if not isinstance(payload, dict):
            raise self.malformed("the response body is not a JSON object", route)
        if payload.get("type") == "error":
            raise self.in_band_error(payload, route)
        native = payload.get("stop_reason")
        if not native or not isinstance(native, str):
            raise self.malformed("the response has no stop_reason", route)
        blocks = payload.get("content")
        if not isinstance(blocks, list):
            raise self.malformed("the response has no content list", route)
        response = pb.CompleteResponse(
            id=_string(payload.get("id")),
            model=gateway_model_name(
                route.provider, _string(payload.get("model")) or route.upstream_model
            ),
            provider=route.provider,
            upstream_provider=self.display_name,
            finish_reason=self.finish_reason(native, route),
            native_finish_reason=native,
        )
        # Not redacted here: the core's Redactor.response scrubs the whole
        # answer (text, reasoning, details, tool calls) before anyone sees it.
        texts: list[str] = []
        thinking: list[str] = []
        for index, block in enumerate(blocks):
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text":
                texts.append(_string(block.get("text")))
            elif kind == "thinking":
                text = _string(block.get("thinking"))
                thinking.append(text)
                response.reasoning_details.add(
                    provider=common.PROVIDER_ANTHROPIC,
                    kind=common.REASONING_DETAIL_KIND_THINKING,
                    text=text,
                    signature=_string(block.get("signature")),
                    index=index,
                )
            elif kind == "redacted_thinking":
                response.reasoning_details.add(
                    provider=common.PROVIDER_ANTHROPIC,
                    kind=common.REASONING_DETAIL_KIND_REDACTED_THINKING,
                    signature=_string(block.get("data")),
                    index=index,
                )
            elif kind == "tool_use":
                response.tool_calls.add(
                    id=_string(block.get("id")),
                    name=_string(block.get("name")),
                    arguments=orjson.dumps(block.get("input") or {}).decode(),
                )
            # Server tool blocks (web search and the like) and future block
            # types carry nothing the contract has a place for.
        response.content = "".join(texts)
        if include_reasoning:
            response.reasoning = "".join(thinking)
        usage = payload.get("usage")
        if isinstance(usage, dict):
            response.usage.CopyFrom(self.usage(usage))
        return response

    def stream_assembler(self, route: Route, include_reasoning: bool) -> AnthropicStreamAssembler:
        return AnthropicStreamAssembler(self, route, include_reasoning=include_reasoning)

    def non_stream_body(self, content: bytes, route: Route) -> GatewayError:
        try:
            payload = orjson.loads(content)
        except orjson.JSONDecodeError:
            payload = None
        if isinstance(payload, dict) and payload.get("type") == "error":
            return self.in_band_error(payload, route)
        return self.malformed("a 200 response to a stream request is not an event stream", route)

    def in_band_error(self, error: object, route: Route) -> GatewayError:
        """An `error` sent inside a 200: the stream's `event: error`, or a 200
        body of type error. Either the whole envelope or its `error` object."""
        failure = failure_from_envelope(None, error)
        return ue.build_error(self.classify(failure), failure, self.error_context(route))

    def finish_reason(self, native: str, route: Route) -> common.FinishReason.ValueType:
        del route
        return FINISH_REASONS.get(native, common.FINISH_REASON_OTHER)

    def usage(self, usage: JSONObject) -> common.Usage:
        return usage_from_json(usage)

    # -- errors -------------------------------------------------------------------

    def failure_from_error_body(
        self, status: int | None, payload: object, content: bytes
    ) -> ue.UpstreamFailure:
        if not isinstance(payload, dict) or not isinstance(payload.get("error"), dict):
            return super().failure_from_error_body(status, payload, content)
        return failure_from_envelope(status, payload)

    def classify(self, failure: ue.UpstreamFailure) -> ue.Reason:
        return classify_failure(failure)

    def request_id_from(self, headers: Mapping[str, str]) -> str | None:
        # Every Anthropic response carries a `request-id` header, also when the
        # body (a proxy's page) has no request_id of its own. Cut as the body's
        # is; ue.build_error redacts it and bounds it for the caller.
        request_id = headers.get("request-id")
        return request_id[:_MAX_ERROR_TEXT] if request_id else None

    # -- the catalogue ------------------------------------------------------------

    async def catalogue(self, within: float) -> list[pb.ModelInfo]:
        """GET /v1/models, page by page (`has_more`, `last_id` -> `after_id`);
        context windows from `max_input_tokens` where listed, else the table,
        prices from the table (Anthropic lists none)."""
        out: list[pb.ModelInfo] = []
        params = {"limit": _MODELS_PAGE}
        for _ in range(_MAX_MODEL_PAGES):
            document = await self.get_json("/v1/models", self.settings.base_url, within, params)
            if not isinstance(document, dict) or not isinstance(document.get("data"), list):
                raise TypeError("the model list has no data array")
            out.extend(
                self._model_info(entry)
                for entry in document["data"]
                if isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"]
            )
            last_id = document.get("last_id")
            if not document.get("has_more") or not isinstance(last_id, str) or not last_id:
                break
            params = {"limit": _MODELS_PAGE, "after_id": last_id}
        return out

    def _model_info(self, entry: JSONObject) -> pb.ModelInfo:
        text = self.redactor.text
        model_id = text(entry["id"])
        info = pb.ModelInfo(
            name=gateway_model_name(common.PROVIDER_ANTHROPIC, model_id),
            provider=common.PROVIDER_ANTHROPIC,
            upstream_model=model_id,
            display_name=text(_string(entry.get("display_name"))) or model_id,
            available=self.configured,
        )
        row = builtin_model(model_id)
        context = entry.get("max_input_tokens")
        if isinstance(context, int) and not isinstance(context, bool) and context > 0:
            info.context_length = context
        elif row is not None:
            info.context_length = row.context
        if row is not None:
            info.pricing.prompt_per_million = row.prompt
            info.pricing.completion_per_million = row.completion
            if row.cached is not None:
                info.pricing.cached_prompt_per_million = row.cached
        return info


# -- the request body ---------------------------------------------------------------


def messages_body(
    request: AnyCompletionRequest, model: str, default_max_tokens: int, *, stream: bool
) -> JSONObject:
    """The Messages API body for `request` (which `check` has accepted)."""
    system, messages = _messages(request.messages)
    budget = thinking_budget(request.reasoning)
    body: JSONObject = {"model": model, "max_tokens": max_tokens(request, default_max_tokens)}
    if system:
        body["system"] = system
    body["messages"] = messages
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    # max_tokens is always sent (above); seed and the penalties are refused by check().
    body.update(sampling_fields(request.sampling, _SAMPLING_NAMES))
    if request.tools:
        body["tools"] = [_tool_json(tool) for tool in request.tools]
        choice = _tool_choice_json(request.tool_choice)
        if choice is not None:
            body["tool_choice"] = choice
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if stream:
        body["stream"] = True
    return body


def thinking_budget(reasoning: common.ReasoningOptions) -> int | None:
    """budget_tokens for `thinking`, or None for no thinking: Anthropic thinks
    only when asked, so an unset request means none."""
    if reasoning.HasField("enabled") and not reasoning.enabled:
        return None
    if reasoning.effort == common.REASONING_EFFORT_NONE:
        return None
    if reasoning.HasField("max_tokens"):
        return reasoning.max_tokens
    if reasoning.effort in EFFORT_BUDGETS:
        return EFFORT_BUDGETS[reasoning.effort]
    if reasoning.HasField("enabled"):
        return DEFAULT_THINKING_BUDGET
    return None


def max_tokens(request: AnyCompletionRequest, default: int) -> int:
    """The caller's max_tokens, else the configured default, on top of the
    thinking budget when thinking (Anthropic counts thinking in max_tokens and
    requires max_tokens > budget_tokens)."""
    if request.sampling.HasField("max_tokens"):
        return request.sampling.max_tokens
    return (thinking_budget(request.reasoning) or 0) + default


def _parameter_violations(
    request: AnyCompletionRequest, default_max_tokens: int
) -> list[FieldViolation]:
    """What Anthropic cannot honour outside the messages."""
    violations: list[FieldViolation] = []
    add = violations.append
    sampling = request.sampling
    if sampling.HasField("temperature") and sampling.temperature > MAX_TEMPERATURE:
        add(FieldViolation("sampling.temperature", "Anthropic accepts 0 to 1"))
    for name in ("seed", "presence_penalty", "frequency_penalty"):
        if sampling.HasField(name):
            add(
                FieldViolation(
                    f"sampling.{name}", "Anthropic does not support this parameter; leave it unset"
                )
            )
    if request.response_format.type in (
        common.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
        common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
    ):
        add(
            FieldViolation(
                "response_format.type",
                "the gateway does not offer JSON output on Anthropic; ask for JSON in the "
                "prompt, or use a tool with the schema as its input_schema",
            )
        )
    budget = thinking_budget(request.reasoning)
    if budget is not None:
        if budget < MIN_THINKING_BUDGET:
            add(
                FieldViolation(
                    "reasoning.max_tokens",
                    f"Anthropic needs a thinking budget of at least {MIN_THINKING_BUDGET} tokens",
                )
            )
        if max_tokens(request, default_max_tokens) <= budget:
            add(
                FieldViolation(
                    "sampling.max_tokens",
                    f"must exceed the thinking budget ({budget} tokens): Anthropic counts "
                    "thinking in max_tokens",
                )
            )
        forced = request.tool_choice.WhichOneof("choice") == "function_name" or (
            request.tool_choice.mode == common.TOOL_CHOICE_MODE_REQUIRED
        )
        if request.tools and forced:
            add(
                FieldViolation(
                    "tool_choice",
                    "Anthropic does not force tool use while thinking; use auto, or turn "
                    "reasoning off",
                )
            )
    return violations


def _messages(messages: Sequence[common.ChatMessage]) -> tuple[str, list[JSONObject]]:
    """(system text, Anthropic messages): consecutive turns of one Anthropic
    role share a message (tool results become one user turn), since Anthropic
    wants user and assistant to alternate. Raises Untranslatable."""
    system, turns = translate.split_system(messages)
    for i, message in enumerate(messages):
        if message.role == common.ROLE_SYSTEM and any(
            p.WhichOneof("part") == "image" for p in message.parts
        ):
            raise Untranslatable(
                f"messages[{i}].parts", "Anthropic takes no images in the system prompt"
            )
    out: list[JSONObject] = []
    for turn in turns:
        role = "assistant" if turn.message.role == common.ROLE_ASSISTANT else "user"
        blocks = _blocks(turn)
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return system, out


def _blocks(turn: translate.Turn) -> list[JSONObject]:
    message = turn.message
    path = f"messages[{turn.index}]"
    if message.role == common.ROLE_TOOL:
        result: JSONObject = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if message.parts:
            result["content"] = _content_blocks(message, path)
        elif message.content:
            result["content"] = message.content
        return [result]
    if message.role == common.ROLE_ASSISTANT:
        return [
            *_thinking_blocks(message, path),
            *_content_blocks(message, path, images=False),
            *(
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.name,
                    "input": translate.tool_arguments_object(call, f"{path}.tool_calls[{j}]"),
                }
                for j, call in enumerate(message.tool_calls)
            ),
        ]
    return _content_blocks(message, path)


def _content_blocks(
    message: common.ChatMessage, path: str, *, images: bool = True
) -> list[JSONObject]:
    if not message.parts:
        # Anthropic refuses empty text blocks; an assistant turn may have only tool calls.
        return [{"type": "text", "text": message.content}] if message.content else []
    blocks: list[JSONObject] = []
    for k, part in enumerate(message.parts):
        if part.WhichOneof("part") == "image":
            if not images:
                raise Untranslatable(
                    f"{path}.parts[{k}]", "Anthropic takes images in user and tool messages only"
                )
            blocks.append(_image_block(part.image.url, f"{path}.parts[{k}].image.url"))
        else:
            blocks.append({"type": "text", "text": part.text})
    return blocks


def _image_block(url: str, path: str) -> JSONObject:
    """A data URL as base64, an https URL by reference (Anthropic fetches it).
    The contract's `detail` has no Anthropic equivalent and is ignored."""
    inline = translate.data_url(url)
    if inline is not None:
        media_type, data = translate.image_data(url, path, "Anthropic")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url.startswith("https://"):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise Untranslatable(path, "Anthropic takes an https:// URL or a data:<mime>;base64 URL")


def _thinking_blocks(message: common.ChatMessage, path: str) -> list[JSONObject]:
    """The turn's own thinking blocks, first and in their original order, byte
    for byte: a changed byte, or a block without its signature, is a 400.
    Details from other providers are left out (translate.own_details)."""
    # For field paths: position in the request (equality, as protobuf hands
    # out a new wrapper for each access).
    sent = list(message.reasoning_details)
    blocks: list[JSONObject] = []
    for detail in translate.own_details(message, common.PROVIDER_ANTHROPIC):
        where = f"{path}.reasoning_details[{sent.index(detail)}]"
        if detail.kind == common.REASONING_DETAIL_KIND_THINKING:
            if not detail.signature:
                raise Untranslatable(
                    f"{where}.signature",
                    "required: pass Anthropic's thinking details back unchanged",
                )
            blocks.append(
                {"type": "thinking", "thinking": detail.text, "signature": detail.signature}
            )
        elif detail.kind == common.REASONING_DETAIL_KIND_REDACTED_THINKING:
            if not detail.signature:
                raise Untranslatable(
                    f"{where}.signature",
                    "required: a redacted thinking block's data, passed back unchanged",
                )
            blocks.append({"type": "redacted_thinking", "data": detail.signature})
        else:
            raise Untranslatable(
                f"{where}.kind", "Anthropic issues only THINKING and REDACTED_THINKING details"
            )
    return blocks


def _tool_json(tool: common.Tool) -> JSONObject:
    """A tool as Anthropic takes it. `strict` is a hint the gateway does not
    pass on (Anthropic's strict tool use is a beta of its own)."""
    out: JSONObject = {"name": tool.name}
    if tool.description:
        out["description"] = tool.description
    out["input_schema"] = (
        struct_to_json(tool.parameters)
        if tool.HasField("parameters")
        else {"type": "object", "properties": {}}
    )
    return out


def _tool_choice_json(choice: common.ToolChoice) -> JSONObject | None:
    if choice.WhichOneof("choice") == "function_name":
        return {"type": "tool", "name": choice.function_name}
    return _TOOL_CHOICE.get(choice.mode)


# -- answers and errors ---------------------------------------------------------------


def usage_from_json(usage: JSONObject) -> common.Usage:
    """Our Usage from Anthropic's: input, cache reads and cache writes are
    reported apart and all count as prompt tokens."""
    fresh = token_count(usage.get("input_tokens"))
    cache_read = token_count(usage.get("cache_read_input_tokens"))
    cache_write = token_count(usage.get("cache_creation_input_tokens"))
    completion = token_count(usage.get("output_tokens"))
    details = usage.get("output_tokens_details")
    thinking = token_count(details.get("thinking_tokens")) if isinstance(details, dict) else 0
    prompt = fresh + cache_read + cache_write
    return common.Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=min(thinking, completion),
    )


def failure_from_envelope(status: int | None, envelope: object) -> ue.UpstreamFailure:
    """An UpstreamFailure from Anthropic's error envelope (or its `error` object alone)."""
    if not isinstance(envelope, dict):
        return ue.UpstreamFailure(status, None, str(envelope)[:_MAX_ERROR_TEXT])
    error = envelope.get("error")
    if not isinstance(error, dict):
        error = envelope
    kind = error.get("type")
    kind = kind[:_MAX_ERROR_TEXT] if isinstance(kind, str) and kind else None
    message = error.get("message")
    request_id = envelope.get("request_id")
    return ue.UpstreamFailure(
        http_status=status,
        code=kind,
        message=message[:_MAX_ERROR_TEXT] if isinstance(message, str) else "",
        error_type=kind,
        request_id=request_id[:_MAX_ERROR_TEXT] if isinstance(request_id, str) else None,
    )


def classify_failure(failure: ue.UpstreamFailure) -> ue.Reason:
    """By error type (words first where Anthropic reuses invalid_request_error),
    else by HTTP status; an in-band error of no known type is a failure to retry."""
    message = failure.message.lower()
    if failure.error_type in (None, "invalid_request_error"):
        for words, reason in _MESSAGE_REASONS:
            if words in message:
                return reason
    if failure.error_type in ERROR_TYPES:
        return ERROR_TYPES[failure.error_type]
    if failure.http_status is not None:
        return ue.reason_for_http_status(failure.http_status)
    return pb.ERROR_REASON_UPSTREAM_UNAVAILABLE


def builtin_model(model_id: str) -> BuiltinModel | None:
    """The table's row for a model id: exact, else the longest name the id
    extends with `-` (a dated snapshot: claude-sonnet-4-5-20250929)."""
    best: BuiltinModel | None = None
    for row in MODELS:
        if model_id == row.name:
            return row
        if model_id.startswith(row.name + "-") and (best is None or len(row.name) > len(best.name)):
            best = row
    return best


def _string(value: object) -> str:
    return value if isinstance(value, str) else ""
