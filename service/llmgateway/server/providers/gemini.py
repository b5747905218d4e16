"""Google Gemini (the Gemini API's generateContent), translated from and to the contract.

The request is rebuilt in Gemini's shapes (`contents` of user/model turns made
of parts, `systemInstruction`, `functionDeclarations`, `generationConfig`);
answers are read by gemini_stream.py. The key travels in `x-goog-api-key`
only, never as `?key=`: a URL ends up in traces, proxies' logs and error
messages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import urllib.parse
from typing import TYPE_CHECKING

import orjson

from llmgateway.server.errors import FieldViolation
from llmgateway.server.providers import translate
from llmgateway.server.providers import upstream_errors as ue
from llmgateway.server.providers.core import UpstreamProvider
from llmgateway.server.providers.gemini_stream import (
    INVALID_TOOL_CALL_FINISHES,
    GeminiStreamAssembler,
    TurnReader,
    blocked_feedback,
    candidate_parts,
    finish_reason,
    first_candidate,
    redacted_detail,
    usage_from_metadata,
)
from llmgateway.server.providers.openai_compatible.wire import (
    SamplingField,
    sampling_fields,
    struct_to_json,
)
from llmgateway.server.routing.price_tables.gemini import MODELS as GEMINI_MODELS
from llmgateway.server.routing.router import gateway_model_name
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Unpack

    from llmgateway.server.config import GeminiSettings, Timeouts
    from llmgateway.server.errors import GatewayError
    from llmgateway.server.providers.core import ProviderLimits
    from llmgateway.server.providers.openai_compatible.wire import AnyCompletionRequest, JSONObject
    from llmgateway.server.routing.router import Route

# Gemini takes at most this many stop sequences.
MAX_STOP_SEQUENCES = 5
# Reasoning effort as a thinking budget (tokens) for Gemini 2.5, whose
# thinkingConfig takes only a budget. Every value lies within every 2.5
# model's range (Pro 128-32768, Flash 0-24576, Flash-Lite 512-24576).
EFFORT_BUDGETS: dict[int, int] = {
    common.REASONING_EFFORT_MINIMAL: 512,
    common.REASONING_EFFORT_LOW: 2048,
    common.REASONING_EFFORT_MEDIUM: 8192,
    common.REASONING_EFFORT_HIGH: 16384,
    common.REASONING_EFFORT_XHIGH: 24576,
}
# Gemini 3 takes a thinking level instead; Gemini 3 Pro offers "low" and "high".
EFFORT_LEVELS: dict[int, str] = {
    common.REASONING_EFFORT_MINIMAL: "low",
    common.REASONING_EFFORT_LOW: "low",
    common.REASONING_EFFORT_MEDIUM: "high",
    common.REASONING_EFFORT_HIGH: "high",
    common.REASONING_EFFORT_XHIGH: "high",
}
# thinkingBudget -1: the model decides how much to think.
DYNAMIC_BUDGET = -1
_TOOL_CHOICE_MODES = {
    common.TOOL_CHOICE_MODE_AUTO: "AUTO",
    common.TOOL_CHOICE_MODE_NONE: "NONE",
    common.TOOL_CHOICE_MODE_REQUIRED: "ANY",
}
# Ids the gateway made up for calls Gemini sent without one (translate.generated_call_id):
# Gemini never saw them, so they are not sent back as functionCall.id.
_GENERATED_ID_PREFIX = "call_"
# google.rpc status -> reason. API_KEY_* ErrorInfo reasons come first (an
# invalid key is a 400 INVALID_ARGUMENT, but the gateway's fault, not the caller's).
STATUS_REASONS: dict[str, ue.Reason] = {
    "INVALID_ARGUMENT": pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST,
    "OUT_OF_RANGE": pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST,
    "PERMISSION_DENIED": pb.ERROR_REASON_UPSTREAM_PERMISSION_DENIED,
    "UNAUTHENTICATED": pb.ERROR_REASON_UPSTREAM_AUTH_FAILED,
    "RESOURCE_EXHAUSTED": pb.ERROR_REASON_UPSTREAM_RATE_LIMITED,
    # Region not supported, billing not enabled: the account cannot use the API.
    "FAILED_PRECONDITION": pb.ERROR_REASON_UPSTREAM_PERMISSION_DENIED,
    "NOT_FOUND": pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND,
    "UNAVAILABLE": pb.ERROR_REASON_UPSTREAM_UNAVAILABLE,
    "INTERNAL": pb.ERROR_REASON_UPSTREAM_UNAVAILABLE,
    "ABORTED": pb.ERROR_REASON_UPSTREAM_UNAVAILABLE,
    "DEADLINE_EXCEEDED": pb.ERROR_REASON_UPSTREAM_TIMEOUT,
}
_CONTEXT_LENGTH = "exceeds the maximum number of tokens"
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
# "Please retry in 26.107s." in a RESOURCE_EXHAUSTED message without RetryInfo.
_RETRY_IN_MESSAGE = re.compile(
    r"retry in ((?:[0-9]+(?:\.[0-9]+)?(?:ms|us|µs|ns|h|m|s))+)", re.IGNORECASE
)
# An upstream's error text is cut to this before it is parsed further (build_error bounds it again).
_MAX_ERROR_TEXT = 8192
# The catalogue: one page of 1000 holds every model Gemini lists today; the
# bound stops a pageToken loop.
CATALOGUE_PAGE_SIZE = 1000
MAX_CATALOGUE_PAGES = 20


class GeminiProvider(UpstreamProvider):
    """gemini/<model>."""

    kind = common.PROVIDER_GEMINI
    provider_id = "gemini"
    display_name = "Google Gemini"
    key_env = "GEMINI_API_KEY"
    base_url_env = "GEMINI_BASE_URL"

    def __init__(
        self, settings: GeminiSettings, timeouts: Timeouts, **limits: Unpack[ProviderLimits]
    ) -> None:
        super().__init__(settings.api_key, timeouts, **limits)
        self.settings = settings
        self._extra_headers = dict(settings.headers)

    # -- the request ------------------------------------------------------------

    def url(self, request: AnyCompletionRequest, route: Route, *, stream: bool) -> str:
        # The router refuses `:` in a Gemini model (it would end the path
        # segment); quoting keeps anything else in it.
        model = urllib.parse.quote(route.upstream_model, safe="-._~")
        base = f"{self.settings.base_url}/v1beta/models/{model}"
        # Without alt=sse the stream is one JSON array, which no SSE reader reads.
        return f"{base}:streamGenerateContent?alt=sse" if stream else f"{base}:generateContent"

    def auth_headers(self) -> dict[str, str]:
        if self._api_key is None:
            return {}
        return {"x-goog-api-key": self._api_key.value}

    def extra_headers(self) -> dict[str, str]:
        return self._extra_headers

    def check(self, request: AnyCompletionRequest) -> list[FieldViolation]:
        violations = []
        if len(request.sampling.stop) > MAX_STOP_SEQUENCES:
            violations.append(
                FieldViolation(
                    "sampling.stop", f"Gemini takes at most {MAX_STOP_SEQUENCES} stop sequences"
                )
            )
        try:
            request_body(request, "gemini-dry-run")
        except translate.Untranslatable as exc:
            violations.append(exc.violation)
        return violations

    def body(self, request: AnyCompletionRequest, route: Route, *, stream: bool) -> JSONObject:
        del stream  # the URL says it
        return request_body(request, route.upstream_model)

    # -- the answer -------------------------------------------------------------

    def parse_unary(
        self, payload: object, route: Route, include_reasoning: bool
    ) -> pb.CompleteResponse:
        if isinstance(payload, list):
            error = _wrapped_error(payload)
            if error is not None:
                raise self.in_band_error(error, route)
            raise self.malformed("the response body is a JSON array, not an object", route)
        if not isinstance(payload, dict):
            raise self.malformed("the response body is not a JSON object", route)
        if payload.get("error") is not None:
            raise self.in_band_error(payload["error"], route)
        candidate = first_candidate(payload)
        if candidate is None:
            feedback = blocked_feedback(payload)
            if feedback is not None:
                raise self.prompt_blocked(feedback, route)
            raise self.malformed("the response has no candidates", route)
        native = candidate.get("finishReason")
        if not isinstance(native, str) or not native:
            raise self.malformed("the response's candidate has no finishReason", route)
        if native in INVALID_TOOL_CALL_FINISHES:
            message = candidate.get("finishMessage")
            raise self.invalid_tool_call(native, message if isinstance(message, str) else "", route)
        response_id = payload.get("responseId")
        reader = TurnReader(include_reasoning, str(response_id or ""))
        reader.read(candidate_parts(candidate))
        response = pb.CompleteResponse(
            id=reader.response_id,
            model=gateway_model_name(route.provider, route.upstream_model),
            provider=route.provider,
            upstream_provider=self.display_name,
            content="".join(reader.content),
            reasoning="".join(reader.reasoning),
            finish_reason=finish_reason(native, bool(reader.tool_calls)),
            native_finish_reason=native,
        )
        response.tool_calls.extend(reader.tool_calls)
        for detail in reader.details:
            response.reasoning_details.add().CopyFrom(redacted_detail(detail, self._redactor))
        usage = payload.get("usageMetadata")
        if isinstance(usage, dict):
            response.usage.CopyFrom(usage_from_metadata(usage))
        return response

    def stream_assembler(self, route: Route, include_reasoning: bool) -> GeminiStreamAssembler:
        return GeminiStreamAssembler(self, route, include_reasoning=include_reasoning)

    def non_stream_body(self, content: bytes, route: Route) -> GatewayError:
        try:
            payload: object = orjson.loads(content)
        except orjson.JSONDecodeError:
            payload = None
        if isinstance(payload, dict) and payload.get("error") is not None:
            return self.in_band_error(payload["error"], route)
        if isinstance(payload, list):
            error = _wrapped_error(payload)
            if error is not None:
                return self.in_band_error(error, route)
            return self.malformed(
                "Gemini answered a JSON array: the stream URL lacks alt=sse", route
            )
        return self.malformed("a 200 response to a stream request is not an event stream", route)

    def in_band_error(self, error: object, route: Route) -> GatewayError:
        failure = failure_from_error_object(error, None)
        # Gemini's `code` is the HTTP status the error would have had.
        status = error.get("code") if isinstance(error, dict) else None
        judged = failure
        if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
            judged = dataclasses.replace(failure, http_status=status)
        return ue.build_error(self.classify(judged), failure, self.error_context(route))

    def prompt_blocked(self, feedback: JSONObject, route: Route) -> GatewayError:
        """A 200 with promptFeedback.blockReason and no candidates: Gemini's
        moderation refused the prompt. Not retried: the request is the cause."""
        reason = str(feedback.get("blockReason"))[:_MAX_ERROR_TEXT]
        message = feedback.get("blockReasonMessage")
        failure = ue.UpstreamFailure(
            None,
            reason,
            message[:_MAX_ERROR_TEXT]
            if isinstance(message, str) and message
            else f"the prompt was blocked (blockReason {reason})",
            moderation=True,
        )
        return ue.build_error(
            pb.ERROR_REASON_UPSTREAM_CONTENT_FLAGGED, failure, self.error_context(route)
        )

    def invalid_tool_call(self, native: str, message: str, route: Route) -> GatewayError:
        """finishReason MALFORMED_FUNCTION_CALL / UNEXPECTED_TOOL_CALL: the model's
        call was refused by Gemini itself; an error to retry, not an answer."""
        failure = ue.UpstreamFailure(
            None, native, message[:_MAX_ERROR_TEXT] or f"the model ended with {native}"
        )
        return ue.build_error(
            pb.ERROR_REASON_UPSTREAM_INVALID_TOOL_CALL, failure, self.error_context(route)
        )

    def finish_reason(self, native: str, route: Route) -> common.FinishReason.ValueType:
        del route
        return finish_reason(native, has_tool_calls=False)

    def usage(self, usage: JSONObject) -> common.Usage:
        return usage_from_metadata(usage)

    # -- errors -----------------------------------------------------------------

    def failure_from_error_body(
        self, status: int | None, payload: object, content: bytes
    ) -> ue.UpstreamFailure:
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(payload, list):
            # The array form a stream without alt=sse sends its error in.
            error = _wrapped_error(payload)
        if error is None:
            return super().failure_from_error_body(status, payload, content)
        return failure_from_error_object(error, status)

    def retry_after_from(
        self, failure: ue.UpstreamFailure, headers: Mapping[str, str]
    ) -> float | None:
        # RetryInfo (or the message's "retry in …") is Gemini's own, more precise word.
        if failure.retry_after is not None:
            return failure.retry_after
        return super().retry_after_from(failure, headers)

    def classify(self, failure: ue.UpstreamFailure) -> ue.Reason:
        if failure.error_type and failure.error_type.startswith("API_KEY"):
            return pb.ERROR_REASON_UPSTREAM_AUTH_FAILED
        reason = STATUS_REASONS.get(failure.code or "")
        if reason == pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST and _CONTEXT_LENGTH in (
            failure.message.lower()
        ):
            return pb.ERROR_REASON_UPSTREAM_CONTEXT_LENGTH_EXCEEDED
        if reason is not None:
            return reason
        return super().classify(failure)

    # -- the catalogue ----------------------------------------------------------

    async def catalogue(self, within: float) -> list[pb.ModelInfo]:
        """GET /v1beta/models, every page: the models that take generateContent."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + within
        documents: list[object] = []
        token = ""
        for _ in range(MAX_CATALOGUE_PAGES):
            params = {"pageSize": str(CATALOGUE_PAGE_SIZE)}
            if token:
                params["pageToken"] = token
            remaining = max(0.001, give_up_at - loop.time())
            document = await self.get_json(
                "/v1beta/models", self.settings.base_url, remaining, params
            )
            documents.append(document)
            next_token = document.get("nextPageToken") if isinstance(document, dict) else None
            if not isinstance(next_token, str) or not next_token:
                break
            token = next_token
        return catalogue_models(documents, self.configured, self.redactor.text)


def catalogue_models(
    documents: list[object], available: bool, scrub: Callable[[str], str]
) -> list[pb.ModelInfo]:
    """ModelInfo for every model in Gemini's /v1beta/models pages that serves
    generateContent (embedding and image-only models do not). `scrub` redacts
    each copied string (the documents are not redacted as fetched)."""
    prices = {model.name: model for model in GEMINI_MODELS}
    out: list[pb.ModelInfo] = []
    seen: set[str] = set()
    for document in documents:
        models = document.get("models") if isinstance(document, dict) else None
        for entry in models if isinstance(models, list) else ():
            if not isinstance(entry, dict):
                continue
            methods = entry.get("supportedGenerationMethods")
            if not isinstance(methods, list) or "generateContent" not in methods:
                continue
            name = entry.get("name")
            if not isinstance(name, str) or not name.startswith("models/"):
                continue
            model_id = scrub(name.removeprefix("models/"))
            if not model_id or model_id in seen:
                continue
            seen.add(model_id)
            display = entry.get("displayName")
            info = pb.ModelInfo(
                name=gateway_model_name(common.PROVIDER_GEMINI, model_id),
                provider=common.PROVIDER_GEMINI,
                upstream_model=model_id,
                display_name=scrub(display) if isinstance(display, str) else model_id,
                available=available,
            )
            limit = entry.get("inputTokenLimit")
            if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
                info.context_length = limit
            price = prices.get(model_id)
            if price is not None:
                info.pricing.prompt_per_million = price.prompt
                info.pricing.completion_per_million = price.completion
                if price.cached is not None:
                    info.pricing.cached_prompt_per_million = price.cached
                if not info.context_length:
                    info.context_length = price.context
            out.append(info)
    return out


# -- the request body -------------------------------------------------------------


def request_body(request: AnyCompletionRequest, upstream_model: str) -> JSONObject:
    """The body of POST …:generateContent for `request`; raises
    translate.Untranslatable for what Gemini's wire cannot carry."""
    _refuse_images_outside_user_turns(request.messages)
    system, turns = translate.split_system(request.messages)
    names = translate.tool_names_by_call_id(request.messages)
    body: JSONObject = {"contents": _contents(turns, names)}
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t) for t in request.tools]}]
        if request.HasField("tool_choice"):
            config = _function_calling_config(request.tool_choice)
            if config is not None:
                body["toolConfig"] = {"functionCallingConfig": config}
    generation = _generation_config(request, upstream_model)
    if generation:
        body["generationConfig"] = generation
    return body


def _refuse_images_outside_user_turns(messages: Sequence[common.ChatMessage]) -> None:
    """Gemini's system instruction, model turns and function responses carry
    text only: an image there would be dropped, which changes the answer."""
    for i, message in enumerate(messages):
        if message.role == common.ROLE_USER:
            continue
        for j, part in enumerate(message.parts):
            if part.WhichOneof("part") == "image":
                raise translate.Untranslatable(
                    f"messages[{i}].parts[{j}]",
                    "Gemini takes images only in user messages; move the image to a user message",
                )


def _contents(turns: list[translate.Turn], names: dict[str, str]) -> list[JSONObject]:
    contents: list[JSONObject] = []
    for turn in turns:
        message = turn.message
        if message.role == common.ROLE_TOOL:
            part = _function_response(turn, names)
            last = contents[-1] if contents else None
            if last is not None and last.get("_tool_results"):
                # Consecutive tool results answer one model turn: one user turn.
                last["parts"].append(part)
            else:
                contents.append({"role": "user", "parts": [part], "_tool_results": True})
        elif message.role == common.ROLE_ASSISTANT:
            contents.append({"role": "model", "parts": _model_parts(turn)})
        else:
            contents.append({"role": "user", "parts": _user_parts(turn)})
    for content in contents:
        content.pop("_tool_results", None)
    return contents


def _user_parts(turn: translate.Turn) -> list[JSONObject]:
    message = turn.message
    if not message.parts:
        return [{"text": message.content}]
    parts: list[JSONObject] = []
    for j, part in enumerate(message.parts):
        if part.WhichOneof("part") == "image":
            # ImagePart.detail is a hint Gemini has no field for: ignored.
            mime, data = translate.image_data(
                part.image.url, f"messages[{turn.index}].parts[{j}].image.url", "Gemini"
            )
            parts.append({"inlineData": {"mimeType": mime, "data": data}})
        else:
            parts.append({"text": part.text})
    return parts


def _model_parts(turn: translate.Turn) -> list[JSONObject]:
    """An assistant turn as Gemini's model turn: its text, then its calls, each
    with the thoughtSignature Gemini issued for it (Gemini 3 refuses a turn
    whose calls lack theirs). Reasoning text is not sent back: Gemini keeps
    its thoughts to itself and needs only the signatures."""
    message = turn.message
    signatures = [
        d
        for d in translate.own_details(message, common.PROVIDER_GEMINI)
        if d.kind == common.REASONING_DETAIL_KIND_THOUGHT_SIGNATURE
    ]
    by_call = {d.tool_call_id: d.signature for d in signatures if d.tool_call_id}
    on_text = next((d.signature for d in signatures if not d.tool_call_id), "")
    parts: list[JSONObject] = []
    text = translate.message_text(message)
    if text:
        part: JSONObject = {"text": text}
        if on_text:
            part["thoughtSignature"] = on_text
        parts.append(part)
    for k, call in enumerate(message.tool_calls):
        function: JSONObject = {
            "name": call.name,
            "args": translate.tool_arguments_object(
                call, f"messages[{turn.index}].tool_calls[{k}]"
            ),
        }
        if call.id and not call.id.startswith(_GENERATED_ID_PREFIX):
            function["id"] = call.id
        call_part: JSONObject = {"functionCall": function}
        signature = by_call.get(call.id)
        if signature:
            call_part["thoughtSignature"] = signature
        parts.append(call_part)
    if not parts:
        # An empty assistant turn (a SAFETY stop): Gemini refuses a turn with no parts.
        parts.append({"text": ""})
    return parts


def _function_response(turn: translate.Turn, names: dict[str, str]) -> JSONObject:
    message = turn.message
    name = names.get(message.tool_call_id)
    if name is None:
        raise translate.Untranslatable(
            f"messages[{turn.index}].tool_call_id",
            "Gemini names the function on a tool result: this id matches no tool call "
            "of an earlier assistant message in the request",
        )
    text = translate.message_text(message)
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    # Gemini wants an object; anything else is wrapped.
    result: JSONObject = {
        "name": name,
        "response": value if isinstance(value, dict) else {"result": text},
    }
    if message.tool_call_id and not message.tool_call_id.startswith(_GENERATED_ID_PREFIX):
        result["id"] = message.tool_call_id
    return {"functionResponse": result}


def _declaration(tool: common.Tool) -> JSONObject:
    declaration: JSONObject = {"name": tool.name}
    if tool.description:
        declaration["description"] = tool.description
    if tool.HasField("parameters"):
        # Full JSON Schema (parametersJsonSchema), not `parameters`' OpenAPI
        # subset, which refuses additionalProperties, $ref and more. Tool.strict
        # is a hint Gemini has no field for: ignored.
        declaration["parametersJsonSchema"] = struct_to_json(tool.parameters)
    return declaration


def _function_calling_config(choice: common.ToolChoice) -> JSONObject | None:
    if choice.WhichOneof("choice") == "function_name":
        return {"mode": "ANY", "allowedFunctionNames": [choice.function_name]}
    mode = _TOOL_CHOICE_MODES.get(choice.mode)
    return {"mode": mode} if mode else None


# SamplingParams fields under generationConfig's names.
_SAMPLING_NAMES: dict[SamplingField, str] = {
    "max_tokens": "maxOutputTokens",
    "temperature": "temperature",
    "top_p": "topP",
    "stop": "stopSequences",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}


def _generation_config(request: AnyCompletionRequest, upstream_model: str) -> JSONObject:
    config = sampling_fields(request.sampling, _SAMPLING_NAMES)
    kind = request.response_format.type
    if kind in (common.RESPONSE_FORMAT_TYPE_JSON_OBJECT, common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA):
        config["responseMimeType"] = "application/json"
    if kind == common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        # Full JSON Schema, as for tools. The schema's name, description and
        # strict flag have no Gemini field; the schema itself is enforced.
        config["responseJsonSchema"] = struct_to_json(request.response_format.json_schema.schema)
    if request.HasField("reasoning"):
        thinking = thinking_config(request.reasoning, upstream_model)
        if thinking:
            config["thinkingConfig"] = thinking
    return config


def thinking_config(reasoning: common.ReasoningOptions, upstream_model: str) -> JSONObject:
    """Gemini's thinkingConfig for the contract's reasoning options.

    Off (enabled=false or effort NONE) is a budget of 0 (models that cannot
    stop thinking answer 400, which passes through); a token budget is
    thinkingBudget; an effort is a thinkingLevel on Gemini 3 and a budget from
    EFFORT_BUDGETS before it. Thoughts come back (includeThoughts) unless
    `exclude` is set."""
    off = (reasoning.HasField("enabled") and not reasoning.enabled) or (
        reasoning.effort == common.REASONING_EFFORT_NONE
    )
    if off:
        return {"thinkingBudget": 0}
    config: JSONObject = {}
    if reasoning.HasField("max_tokens"):
        config["thinkingBudget"] = reasoning.max_tokens
    elif reasoning.effort in EFFORT_BUDGETS:
        if upstream_model.startswith("gemini-3"):
            config["thinkingLevel"] = EFFORT_LEVELS[reasoning.effort]
        else:
            config["thinkingBudget"] = EFFORT_BUDGETS[reasoning.effort]
    elif reasoning.HasField("enabled"):
        config["thinkingBudget"] = DYNAMIC_BUDGET
    if not reasoning.exclude:
        config["includeThoughts"] = True
    return config


# -- errors ---------------------------------------------------------------------------


def _wrapped_error(payload: list[object]) -> object | None:
    """The error of `[{"error": …}]` (a stream read without alt=sse), else None."""
    first = payload[0] if payload else None
    if isinstance(first, dict):
        error: object = first.get("error")
        return error
    return None


def failure_from_error_object(error: object, http_status: int | None) -> ue.UpstreamFailure:
    """An UpstreamFailure from Gemini's `error` object: `code` (the HTTP
    status), `message`, `status` (google.rpc code name) and `details`
    (ErrorInfo.reason, RetryInfo.retryDelay)."""
    if not isinstance(error, dict):
        return ue.UpstreamFailure(http_status, None, str(error)[:_MAX_ERROR_TEXT])
    message = error.get("message")
    message = message[:_MAX_ERROR_TEXT] if isinstance(message, str) else ""
    status = error.get("status")
    code = error.get("code")
    if isinstance(status, str) and status:
        code_text: str | None = status[:_MAX_ERROR_TEXT]
    elif code is not None:
        code_text = str(code)[:_MAX_ERROR_TEXT]
    else:
        code_text = None
    error_type = None
    retry_after = None
    details = error.get("details")
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, dict):
            continue
        kind = detail.get("@type")
        if kind == _ERROR_INFO and isinstance(detail.get("reason"), str):
            error_type = detail["reason"][:_MAX_ERROR_TEXT]
        elif kind == _RETRY_INFO:
            retry_after = parse_duration(detail.get("retryDelay"))
    if retry_after is None:
        found = _RETRY_IN_MESSAGE.search(message)
        if found is not None:
            retry_after = parse_duration(found[1])
    return ue.UpstreamFailure(
        http_status=http_status,
        code=code_text,
        message=message,
        error_type=error_type,
        retry_after=retry_after,
    )


def parse_duration(value: object) -> float | None:
    """Seconds in a google.protobuf.Duration's JSON form ("26s", "1.5s") or a
    Go-style duration as Gemini's messages write it ("2m59.56s", "120ms"),
    bounded as a retry delay; None for anything else."""
    seconds = ue.parse_duration(value)
    return None if seconds is None else ue.sane_retry_after(seconds)
