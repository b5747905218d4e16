"""Ollama's native /api/chat: the conversation in Ollama's shapes, NDJSON back.

Not Ollama's OpenAI-compatible /v1, which cannot set the context size per
request: on /api/chat `options.num_ctx` is always sent (Ollama otherwise cuts
the prompt silently at its own default, 2048 or 4096 tokens), and `stream` is
always explicit (Ollama streams unless told not to). No key locally; a Bearer
key (OLLAMA_API_KEY) for hosted Ollama. The stream is read by
ollama_stream.OllamaStreamAssembler, one NDJSON line at a time.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, TypeAlias

import orjson

from llmgateway.server.providers import translate
from llmgateway.server.providers import upstream_errors as ue
from llmgateway.server.providers.core import UpstreamProvider
from llmgateway.server.providers.ndjson import NDJSONDecoder
from llmgateway.server.providers.ollama_stream import (
    UPSTREAM_PROVIDER,
    OllamaStreamAssembler,
    duration_attributes,
    durations_of,
    finish_reason_for,
    message_of,
    native_finish,
    new_call_nonce,
    text_of,
    tool_calls_of,
    usage_of,
)
from llmgateway.server.providers.openai_compatible.stream import failure_from_error_object
from llmgateway.server.providers.openai_compatible.wire import (
    OPENAI_SAMPLING_NAMES,
    ROLE_NAMES,
    SamplingField,
    sampling_fields,
    struct_to_json,
    tool_json,
)
from llmgateway.server.routing.router import gateway_model_name
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Unpack

    from llmgateway.server.config import OllamaSettings, Timeouts
    from llmgateway.server.errors import FieldViolation, GatewayError
    from llmgateway.server.providers.core import ProviderLimits
    from llmgateway.server.providers.openai_compatible.wire import (
        AnyCompletionRequest,
        JSONObject,
    )
    from llmgateway.server.routing.router import Route

# `think` takes these levels (gpt-oss uses them; other thinking models read
# any of them as true). MINIMAL and XHIGH have no equivalent and are refused.
_THINK_LEVELS = {
    common.REASONING_EFFORT_LOW: "low",
    common.REASONING_EFFORT_MEDIUM: "medium",
    common.REASONING_EFFORT_HIGH: "high",
}
# The catalogue asks /api/show for each model's context window and
# capabilities: at most this many models (one request each), this many at once.
MAX_SHOWN_MODELS = 32
MAX_SHOWS_AT_ONCE = 4
# Ollama resolves a name without a tag to `:latest`; the catalogue lists the
# short name, the one callers write.
_DEFAULT_TAG = ":latest"
# What /api/show told of one model: its context window and capabilities, each
# None when the answer did not say.
_Shown: TypeAlias = tuple[int | None, pb.ModelCapabilities | None]
_WHOLE_SECONDS = re.compile(r"-?[0-9]+")
_MODEL_NOT_FOUND = re.compile(r"\bmodel\b.*\bnot found\b", re.IGNORECASE | re.DOTALL)


class OllamaProvider(UpstreamProvider):
    """ollama/<model>: any model the Ollama server has pulled (`ollama/llama3.2`,
    `ollama/hf.co/user/repo:Q4_K_M`)."""

    kind = common.PROVIDER_OLLAMA
    provider_id = "ollama"
    display_name = "Ollama"
    key_env = "OLLAMA_API_KEY"
    base_url_env = "OLLAMA_BASE_URL"

    def __init__(
        self, settings: OllamaSettings, timeouts: Timeouts, **limits: Unpack[ProviderLimits]
    ) -> None:
        super().__init__(settings.api_key, timeouts, **limits)
        self.settings = settings
        self._chat_url = f"{settings.base_url}/api/chat"
        self._extra_headers = dict(settings.headers)

    @property
    def configured(self) -> bool:
        # A local Ollama needs no key; OLLAMA_API_KEY is only for hosted Ollama.
        return True

    # -- the request ----------------------------------------------------------

    def url(self, request: AnyCompletionRequest, route: Route, *, stream: bool) -> str:
        return self._chat_url

    def extra_headers(self) -> dict[str, str]:
        return self._extra_headers

    def check(self, request: AnyCompletionRequest) -> list[FieldViolation]:
        # Translating is the check: whatever cannot be said on this wire
        # raises while it is being said (a dry run; the body is dropped).
        try:
            chat_body(request, "", stream=False, settings=self.settings)
        except translate.Untranslatable as exc:
            return [exc.violation]
        return []

    def body(self, request: AnyCompletionRequest, route: Route, *, stream: bool) -> JSONObject:
        return chat_body(request, route.upstream_model, stream=stream, settings=self.settings)

    # -- the answer -----------------------------------------------------------

    def parse_unary(
        self, payload: object, route: Route, include_reasoning: bool
    ) -> pb.CompleteResponse:
        """A `stream: false` answer: the done line alone, with the whole message."""
        if not isinstance(payload, dict):
            raise self.malformed("the response body is not a JSON object", route)
        if payload.get("error") is not None:
            raise self.in_band_error(payload["error"], route)
        if payload.get("done") is not True:
            raise self.malformed("the answer is not finished (no `done: true`)", route)
        message = message_of(payload)
        calls = tool_calls_of(message, new_call_nonce(), 0)
        native = native_finish(payload)
        model = payload.get("model")
        response = pb.CompleteResponse(
            model=gateway_model_name(
                route.provider, model if model and isinstance(model, str) else route.upstream_model
            ),
            provider=route.provider,
            upstream_provider=UPSTREAM_PROVIDER,
            content=text_of(message, "content"),
            tool_calls=calls,
            finish_reason=finish_reason_for(native, bool(calls)),
            native_finish_reason=native,
        )
        if include_reasoning:
            response.reasoning = text_of(message, "thinking")
        usage = usage_of(payload)
        if usage is not None:
            response.usage.CopyFrom(usage)
        return response

    def unary_span_attributes(self, payload: object) -> dict[str, int | str]:
        """The done line's timings (parse_unary accepted it: a JSON object)."""
        return duration_attributes(durations_of(payload)) if isinstance(payload, dict) else {}

    def frame_decoder(self) -> NDJSONDecoder:
        return NDJSONDecoder()

    def stream_assembler(self, route: Route, include_reasoning: bool) -> OllamaStreamAssembler:
        return OllamaStreamAssembler(self, route, include_reasoning=include_reasoning)

    def stream_content_type_ok(self, content_type: str) -> bool:
        # Hosted Ollama streams the same NDJSON labelled application/json.
        return "application/x-ndjson" in content_type or "application/json" in content_type

    def non_stream_body(self, content: bytes, route: Route) -> GatewayError:
        try:
            payload = orjson.loads(content)
        except orjson.JSONDecodeError:
            payload = None
        if isinstance(payload, dict) and payload.get("error") is not None:
            return self.in_band_error(payload["error"], route)
        return self.malformed("a 200 response to a stream request is not NDJSON", route)

    def in_band_error(self, error: object, route: Route) -> GatewayError:
        """An `{"error": ...}` line (or body) in a 200: the HTTP status said
        nothing, so the words decide (a failure mid-generation is UNAVAILABLE)."""
        failure = failure_from_error_object(error, None)
        return ue.build_error(
            self.classify(failure), failure, self.error_context(route), self.hint(failure)
        )

    def finish_reason(self, native: str, route: Route) -> common.FinishReason.ValueType:
        del route
        return finish_reason_for(native, called_tools=False)

    def usage(self, usage: JSONObject) -> common.Usage:
        return usage_of(usage) or common.Usage()

    # -- errors ---------------------------------------------------------------

    def failure_from_error_body(
        self, status: int | None, payload: object, content: bytes
    ) -> ue.UpstreamFailure:
        # `{"error": "text"}`; a wrong path gets Go's plain "404 page not found".
        if isinstance(payload, dict) and payload.get("error") is not None:
            return failure_from_error_object(payload["error"], status)
        return super().failure_from_error_body(status, payload, content)

    def classify(self, failure: ue.UpstreamFailure) -> ue.Reason:
        """Ollama's errors carry no code: the message decides where the status
        is not specific (400, or a 200 with an error line)."""
        message = failure.message.lower()
        status = failure.http_status
        client_side = status is None or 400 <= status < 500
        if client_side and "context length" in message:
            return pb.ERROR_REASON_UPSTREAM_CONTEXT_LENGTH_EXCEEDED
        if client_side and "does not support" in message:
            # tools, thinking, images: this model cannot, another might.
            return pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST
        if status == 404 or (client_side and _MODEL_NOT_FOUND.search(message)):
            return pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND
        return super().classify(failure)

    def hint(self, failure: ue.UpstreamFailure) -> str | None:
        message = failure.message.lower()
        if "page not found" in message:
            return f"nothing answers that path: {self.base_url_env} is the server's root URL"
        if _MODEL_NOT_FOUND.search(message):
            return "the Ollama server has not pulled this model: run `ollama pull <model>` there"
        if "does not support tools" in message:
            return "this model cannot call tools: send none, or use a model that can"
        if "does not support thinking" in message:
            return "this model does not think: leave `reasoning` unset"
        return None

    # -- the catalogue --------------------------------------------------------

    async def catalogue(self, within: float) -> list[pb.ModelInfo]:
        """The server's pulled models (GET /api/tags), with each one's context
        window and capabilities from POST /api/show where it answers in time.
        Priced at 0: a local model costs nothing per token (hosted Ollama
        bills by plan)."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + within
        listing = await self.get_json("/api/tags", self.settings.base_url, within)
        entries = listing.get("models") if isinstance(listing, dict) else None
        if not isinstance(entries, list):
            raise TypeError("/api/tags has no models list")
        names = [
            str(e.get("name") or e.get("model"))
            for e in entries
            if isinstance(e, dict) and (e.get("name") or e.get("model"))
        ]
        shown = await self._shown(names[:MAX_SHOWN_MODELS], max(0.0, give_up_at - loop.time()))
        text = self.redactor.text
        out = []
        for name in names:
            short = name.removesuffix(_DEFAULT_TAG)
            model = pb.ModelInfo(
                name=text(gateway_model_name(common.PROVIDER_OLLAMA, short)),
                provider=common.PROVIDER_OLLAMA,
                upstream_model=text(short),
                display_name=text(name),
                pricing=pb.ModelPricing(prompt_per_million=0.0, completion_per_million=0.0),
                available=self.configured,
            )
            context, capabilities = shown.get(name, (None, None))
            if context is not None:
                model.context_length = context
            if capabilities is not None:
                model.capabilities.CopyFrom(capabilities)
            out.append(model)
        return out

    async def _shown(self, names: list[str], within: float) -> dict[str, _Shown]:
        """Context window and capabilities by model name, for those /api/show
        told in time; the others are listed without them rather than not at all."""
        gate = asyncio.Semaphore(MAX_SHOWS_AT_ONCE)

        async def show(name: str) -> _Shown:
            async with gate:
                shown = await self.post_json(
                    "/api/show", self.settings.base_url, within, {"model": name}
                )
            return _context_length(shown), _capabilities(shown)

        if not names or within <= 0:
            return {}
        tasks = {asyncio.create_task(show(name)): name for name in names}
        finished, pending = await asyncio.wait(tasks, timeout=within)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return {
            tasks[task]: task.result()
            for task in finished
            if not task.cancelled() and task.exception() is None
        }


def chat_body(
    request: AnyCompletionRequest, upstream_model: str, *, stream: bool, settings: OllamaSettings
) -> JSONObject:
    """The body of POST /api/chat for `request`; raises translate.Untranslatable
    for what this wire cannot carry."""
    body: JSONObject = {
        "model": upstream_model,
        "messages": _messages(request.messages),
        # Ollama streams unless told otherwise.
        "stream": stream,
        "options": _options(request, settings),
    }
    tools = _tools(request)
    if tools:
        body["tools"] = tools
    if request.response_format.type == common.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        body["format"] = "json"
    elif request.response_format.type == common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        body["format"] = struct_to_json(request.response_format.json_schema.schema)
    think = _think(request.reasoning)
    if think is not None:
        body["think"] = think
    if settings.keep_alive:
        keep_alive = settings.keep_alive
        # A bare number is seconds; as a string Ollama would want a unit.
        body["keep_alive"] = int(keep_alive) if _WHOLE_SECONDS.fullmatch(keep_alive) else keep_alive
    return body


def _messages(messages: Sequence[common.ChatMessage]) -> list[JSONObject]:
    names = translate.tool_names_by_call_id(messages)
    out = []
    for i, message in enumerate(messages):
        entry: JSONObject = {
            "role": ROLE_NAMES[message.role],
            "content": translate.message_text(message),
        }
        images = [
            translate.image_data(part.image.url, f"messages[{i}].parts[{j}].image.url", "Ollama")[1]
            for j, part in enumerate(message.parts)
            if part.WhichOneof("part") == "image"
        ]
        if images:
            entry["images"] = images
        if message.role == common.ROLE_ASSISTANT:
            if message.reasoning:
                entry["thinking"] = message.reasoning
            if message.tool_calls:
                entry["tool_calls"] = [
                    {
                        "function": {
                            "name": call.name,
                            "arguments": translate.tool_arguments_object(
                                call, f"messages[{i}].tool_calls[{k}]"
                            ),
                        }
                    }
                    for k, call in enumerate(message.tool_calls)
                ]
        if message.role == common.ROLE_TOOL and message.tool_call_id in names:
            # Ollama pairs a result with its call by the function's name.
            entry["tool_name"] = names[message.tool_call_id]
        out.append(entry)
    return out


def _tools(request: AnyCompletionRequest) -> list[JSONObject]:
    """The tools on offer. Ollama has no tool_choice: "none" offers none,
    a named function offers only that one (so the model can call nothing
    else, though it may still answer in text), "required" cannot be said."""
    if not request.tools:
        return []
    tools = [tool_json(t) for t in request.tools]
    if not request.HasField("tool_choice"):
        return tools
    choice = request.tool_choice
    if choice.WhichOneof("choice") == "function_name":
        return [t for t in tools if t["function"]["name"] == choice.function_name]
    if choice.mode == common.TOOL_CHOICE_MODE_NONE:
        return []
    if choice.mode == common.TOOL_CHOICE_MODE_REQUIRED:
        raise translate.Untranslatable(
            "tool_choice.mode",
            "Ollama cannot require a tool call; use AUTO, or name the function to offer only it",
        )
    return tools


def _options(request: AnyCompletionRequest, settings: OllamaSettings) -> JSONObject:
    # num_ctx always: without it Ollama truncates the prompt, silently, at its default.
    # The OpenAI names, but for the output limit.
    names: dict[SamplingField, str] = {**OPENAI_SAMPLING_NAMES, "max_tokens": "num_predict"}
    return {"num_ctx": settings.num_ctx, **sampling_fields(request.sampling, names)}


def _think(reasoning: common.ReasoningOptions) -> bool | str | None:
    """`think`: a level, or on/off; None leaves it to the model."""
    if reasoning.HasField("max_tokens"):
        raise translate.Untranslatable(
            "reasoning.max_tokens",
            "Ollama takes no reasoning budget; use reasoning.effort (low, medium, high) "
            "or reasoning.enabled",
        )
    effort = reasoning.effort
    if effort == common.REASONING_EFFORT_NONE:
        return False
    if effort in _THINK_LEVELS:
        return _THINK_LEVELS[effort]
    if effort != common.REASONING_EFFORT_UNSPECIFIED:
        raise translate.Untranslatable(
            "reasoning.effort", "Ollama takes effort low, medium or high (or none)"
        )
    if reasoning.HasField("enabled"):
        return reasoning.enabled
    return None


def _capabilities(shown: object) -> pb.ModelCapabilities | None:
    """What an /api/show answer's `capabilities` ("completion", "tools",
    "vision", "thinking", "embedding", ...) says the model takes; None when
    the answer has no such list (servers before it was added). JSON output is
    Ollama's own constrained decoding (`format`), so every completion model
    takes a schema and a plain object; forcing a call is not published (the
    native API has no tool_choice)."""
    listed = shown.get("capabilities") if isinstance(shown, dict) else None
    if not isinstance(listed, list):
        return None
    names = {name for name in listed if isinstance(name, str)}
    completion = "completion" in names
    return pb.ModelCapabilities(
        tools="tools" in names,
        vision="vision" in names,
        json_schema=completion,
        json_object=completion,
    )


def _context_length(shown: object) -> int | None:
    """`model_info["<architecture>.context_length"]` of an /api/show answer."""
    info = shown.get("model_info") if isinstance(shown, dict) else None
    if not isinstance(info, dict):
        return None
    length = info.get(f"{info.get('general.architecture')}.context_length")
    if isinstance(length, int) and not isinstance(length, bool) and length > 0:
        return length
    return None
