"""Turns an upstream SSE stream of chat-completion chunks into the gateway's events.

Rules that other clients got wrong, and this one keeps:
- usage may come after the finish chunk, in a chunk with empty `choices`, so
  reading stops at `[DONE]`, not at the first finish_reason; it may repeat
  (Groq) or be followed by `usage: null` (OpenAI): the last non-null one wins;
- a refusal (OpenAI `delta.refusal`) is an answer, joined into `done`;
- finish_reason may repeat (Z.AI): the last one wins;
- any chunk may carry `error` (or come as `event: error`): that ends the
  stream with a non-OK status, never a quiet success;
- a stream without its finish_reason or its `[DONE]` is incomplete, and says so.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import orjson

# Re-exported: the stream's callers (and its tests) have always found it here.
from llmgateway.server.providers.upstream_errors import UpstreamFailure, sane_retry_after
from llmgateway.server.routing.router import gateway_model_name
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmgateway.server.errors import GatewayError
    from llmgateway.server.providers.openai_compatible.wire import JSONObject
    from llmgateway.server.providers.redaction import Redactor
    from llmgateway.server.providers.sse import ServerSentEvent
    from llmgateway.server.routing.router import Route

_DONE = b"[DONE]"

__all__ = [
    "StreamAssembler",
    "StreamOwner",
    "as_object",
    "failure_from_error_object",
    "failure_from_native_error",
    "opaque_details",
]


class StreamOwner(Protocol):
    """What a stream needs of the provider it comes from (core.py's
    OpenAICompatibleProvider is one): declared here, so this module does not
    import the provider that imports it."""

    @property
    def redactor(self) -> Redactor:
        """What scrubs provider keys from everything the stream passes on."""

    @property
    def reasoning_fields(self) -> tuple[str, str]:
        """The delta keys holding reasoning text: the one read first, then the fallback."""

    @property
    def default_upstream_provider(self) -> str:
        """The upstream provider to report when no chunk names one."""

    @property
    def reasoning_details_provider(self) -> common.Provider.ValueType | None:
        """Who issues the stream's `reasoning_details`; None: they are not read."""

    def in_band_error(self, error: object, route: Route) -> GatewayError:
        """An error the provider sent inside the stream."""

    def malformed(self, detail: str, route: Route) -> GatewayError:
        """The upstream broke its own wire format."""

    def truncated(self, detail: str, route: Route) -> GatewayError:
        """The stream ended before it was complete."""

    def finish_reason(self, native: str, route: Route) -> common.FinishReason.ValueType:
        """Our enum for a provider finish reason."""

    def usage(self, usage: JSONObject) -> common.Usage:
        """Our Usage from the provider's usage object."""

    def chunk_usage(self, chunk: JSONObject) -> JSONObject | None:
        """The usage object a chunk carries, if any."""


@dataclass(slots=True)
class _ToolCallBuilder:
    index: int
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class StreamAssembler:
    """Feed it SSE events; it returns the gRPC events they produce."""

    def __init__(self, provider: StreamOwner, route: Route, *, include_reasoning: bool) -> None:
        self._provider = provider
        # Keys out of every string this stream passes on (redaction.py): answer
        # text as it arrives, the rest when the closing events are built.
        # Answer text is checked one delta at a time, for exact keys only, so
        # it catches a key only where a single delta holds all of it: a model
        # emits a few characters per delta, and a key split across deltas
        # goes through. Nothing better is cheap (holding text back to look
        # across deltas delays every stream); the check costs two substring
        # searches per delta, so it stays for the cases it does catch.
        self._redactor = provider.redactor
        self._route = route
        self._include_reasoning = include_reasoning
        self._reasoning_keys = provider.reasoning_fields
        self._id = ""
        self._model = ""
        self._upstream_provider = ""
        self._finish_reason: str | None = None
        self._native_finish_reason: str | None = None
        self._usage: JSONObject | None = None
        self._refusal: list[str] = []
        self._details_provider = provider.reasoning_details_provider
        # reasoning_details entries by their `index`, fragments merged as they stream.
        self._details: dict[int, JSONObject] = {}
        self._tool_calls: list[_ToolCallBuilder] = []
        self.done = False

    def on_event(self, event: ServerSentEvent) -> list[pb.StreamCompleteResponse]:
        """The events one upstream SSE event produces (often one, sometimes none)."""
        data = event.data
        if data == _DONE:
            self.done = True
            return []
        if self.done:
            return []  # nothing after [DONE] counts
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise self._provider.malformed(
                f"an SSE event is not JSON ({exc})", self._route
            ) from None
        if not isinstance(chunk, dict):
            raise self._provider.malformed("an SSE event is not a JSON object", self._route)
        if event.event == "error" or chunk.get("error") is not None:
            raise self._provider.in_band_error(chunk.get("error", chunk), self._route)
        self._note_metadata(chunk)
        usage = self._provider.chunk_usage(chunk)
        if usage is not None:
            # The last one wins, never a sum: Groq repeats the same counts.
            self._usage = usage
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list):
            return []  # the usage chunk, a debug chunk or a keep-alive
        out: list[pb.StreamCompleteResponse] = []
        for choice in choices:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._on_choice(choice, out)
        return out

    def _on_choice(self, choice: JSONObject, out: list[pb.StreamCompleteResponse]) -> None:
        if choice.get("error") is not None:
            raise self._provider.in_band_error(choice["error"], self._route)
        delta = choice.get("delta")
        if isinstance(delta, dict):
            if self._include_reasoning:
                primary, secondary = self._reasoning_keys
                reasoning = delta.get(primary) or delta.get(secondary)
                if reasoning and isinstance(reasoning, str):
                    reasoning = self._redactor.content(reasoning)
                    out.append(
                        pb.StreamCompleteResponse(reasoning_delta=pb.ReasoningDelta(text=reasoning))
                    )
            content = delta.get("content")
            if content and isinstance(content, str):
                content = self._redactor.content(content)
                out.append(pb.StreamCompleteResponse(content_delta=pb.ContentDelta(text=content)))
            tool_calls = delta.get("tool_calls")
            if tool_calls and isinstance(tool_calls, list):
                self._on_tool_call_fragments(tool_calls)
            details = delta.get("reasoning_details")
            if self._details_provider is not None and details and isinstance(details, list):
                self._on_detail_fragments(details)
            refusal = delta.get("refusal")
            if refusal and isinstance(refusal, str):
                # Delivered whole in `done` (no event of its own: see the contract).
                self._refusal.append(refusal)
        finish = choice.get("finish_reason")
        if finish:
            if finish == "error":
                raise self._provider.in_band_error(
                    {"message": "the provider ended generation with finish_reason 'error'"},
                    self._route,
                )
            self._finish_reason = str(finish)
            native = choice.get("native_finish_reason")
            self._native_finish_reason = str(native) if native else str(finish)

    def _on_tool_call_fragments(self, fragments: list[object]) -> None:
        for fragment in fragments:
            if not isinstance(fragment, dict):
                continue
            builder = self._builder_for(fragment)
            if fragment.get("id"):
                builder.id = str(fragment["id"])
            function = fragment.get("function")
            if isinstance(function, dict):
                if function.get("name"):
                    builder.name = str(function["name"])
                arguments = function.get("arguments")
                if isinstance(arguments, str):
                    builder.arguments.append(arguments)
                elif arguments is not None:
                    # Z.AI's documented schema shows an object; send JSON text either way.
                    builder.arguments.append(orjson.dumps(arguments).decode())

    def _on_detail_fragments(self, fragments: list[object]) -> None:
        """Streamed reasoning_details arrive in pieces keyed by `index`: text
        fields (`text`, `summary`, `data`) are joined, the rest (type, id,
        format, signature) taken as they come."""
        for fragment in fragments:
            if not isinstance(fragment, dict):
                continue
            index = fragment.get("index")
            if not isinstance(index, int) or isinstance(index, bool):
                index = len(self._details)
            entry = self._details.setdefault(index, {})
            for key, value in fragment.items():
                if key in _JOINED_DETAIL_FIELDS and isinstance(value, str):
                    entry[key] = str(entry.get(key, "")) + value
                elif value is not None:
                    entry[key] = value

    def _builder_for(self, fragment: JSONObject) -> _ToolCallBuilder:
        index = fragment.get("index")
        call_id = fragment.get("id")
        if isinstance(index, int) and not isinstance(index, bool):
            # Newest first: upstreams that number every call 0 start a new
            # call with a new id, and later fragments belong to that one.
            for builder in reversed(self._tool_calls):
                if builder.index == index and not (
                    call_id and builder.id and builder.id != call_id
                ):
                    return builder
        elif self._tool_calls and not (call_id and call_id != self._tool_calls[-1].id):
            # No usable index (seen with Gemini-style upstreams): a fragment
            # without a new id continues the call being streamed.
            return self._tool_calls[-1]
        new_index = index if isinstance(index, int) else len(self._tool_calls)
        builder = _ToolCallBuilder(index=new_index)
        self._tool_calls.append(builder)
        return builder

    def on_end(self, leftover: list[ServerSentEvent]) -> None:
        """End of body. Accept a last "data: [DONE]" that lacks its blank line;
        anything else unfinished is a truncation (finish() says so)."""
        for event in leftover:
            if event.data == _DONE:
                self.on_event(event)

    def finish(self) -> list[pb.StreamCompleteResponse]:
        """The closing events, once the upstream body has ended."""
        if not self.done:
            raise self._provider.truncated("the stream ended without [DONE]", self._route)
        if self._finish_reason is None:
            raise self._provider.truncated(
                "the stream reached [DONE] without a finish_reason", self._route
            )
        reason = self._provider.finish_reason(self._finish_reason, self._route)
        text, content = self._redactor.text, self._redactor.content
        out = [
            pb.StreamCompleteResponse(
                tool_call=common.ToolCall(
                    id=text(b.id), name=content(b.name), arguments=content("".join(b.arguments))
                )
            )
            for b in self._tool_calls
        ]
        done = pb.CompletionDone(
            id=text(self._id),
            model=text(
                gateway_model_name(self._route.provider, self._model or self._route.upstream_model)
            ),
            provider=self._route.provider,
            upstream_provider=text(
                self._upstream_provider or self._provider.default_upstream_provider
            ),
            finish_reason=reason,
            native_finish_reason=text(self._native_finish_reason or ""),
            refusal=content("".join(self._refusal)),
        )
        if self._details_provider is not None and self._details:
            ordered = [self._details[i] for i in sorted(self._details)]
            done.reasoning_details.extend(opaque_details(ordered, self._details_provider, content))
        if self._usage is not None:
            done.usage.CopyFrom(self._provider.usage(self._usage))
        out.append(pb.StreamCompleteResponse(done=done))
        return out

    def _note_metadata(self, chunk: JSONObject) -> None:
        if not self._id and isinstance(chunk.get("id"), str):
            self._id = chunk["id"]
        model = chunk.get("model")
        if model and isinstance(model, str):
            self._model = model
        served_by = chunk.get("provider")
        if served_by and isinstance(served_by, str):
            self._upstream_provider = served_by


# An upstream's error text is cut to this before it is parsed further. Far
# beyond what an error message keeps (500 characters, after redaction), so
# nothing this cut leaves behind can reach the caller.
_MAX_ERROR_TEXT = 8192


def failure_from_error_object(error: object, http_status: int | None) -> UpstreamFailure:
    """An UpstreamFailure from an OpenAI-style `error` object, with OpenRouter's
    `metadata` (error_type, provider_name, raw, moderation reasons) and Z.AI's
    `availability` where present; Ollama's bare `{"error": "text"}` too.

    Strings are taken whole (up to _MAX_ERROR_TEXT): redaction and the
    caller-facing bounds are build_error's, in that order.
    """
    if not isinstance(error, dict):
        return UpstreamFailure(http_status, None, str(error)[:_MAX_ERROR_TEXT])
    code = error.get("code")
    metadata = as_object(error.get("metadata"))
    availability = as_object(error.get("availability"))
    error_type = metadata.get("error_type") or availability.get("code") or error.get("error_type")
    retry_after = availability.get("retry_after")
    message = error.get("message")
    provider_name = metadata.get("provider_name")
    return UpstreamFailure(
        http_status=http_status,
        code=None if code is None else str(code)[:_MAX_ERROR_TEXT],
        message=message[:_MAX_ERROR_TEXT] if isinstance(message, str) else "",
        error_type=error_type[:_MAX_ERROR_TEXT] if isinstance(error_type, str) else None,
        retry_after=sane_retry_after(float(retry_after))
        if isinstance(retry_after, int | float) and not isinstance(retry_after, bool)
        else None,
        moderation=bool(metadata.get("reasons") or metadata.get("flagged_input")),
        raw=_raw_text(metadata.get("raw")),
        upstream_provider=provider_name[:_MAX_ERROR_TEXT]
        if isinstance(provider_name, str) and provider_name
        else None,
    )


def failure_from_native_error(error: object, http_status: int | None) -> UpstreamFailure:
    """An UpstreamFailure from OpenAI's (or Groq's) own `error` object:
    `{"message", "type", "param", "code"}`, where `type` is the error class
    (`invalid_request_error`, `server_error`...) and Groq adds
    `failed_generation`, the model's rejected output, kept as `raw` (it
    reaches the message and upstreamRaw, redacted and bounded)."""
    failure = failure_from_error_object(error, http_status)
    if not isinstance(error, dict):
        return failure
    kind = error.get("type")
    return dataclasses.replace(
        failure,
        error_type=failure.error_type
        or (kind[:_MAX_ERROR_TEXT] if isinstance(kind, str) and kind else None),
        raw=failure.raw or _raw_text(error.get("failed_generation")),
    )


def _raw_text(raw: object) -> str | None:
    """OpenRouter's metadata.raw as text: the provider's own words, or its error as JSON."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        return raw[:_MAX_ERROR_TEXT]
    try:
        return orjson.dumps(raw).decode()[:_MAX_ERROR_TEXT]
    except TypeError:
        return None


# reasoning_details fields whose streamed pieces are joined.
_JOINED_DETAIL_FIELDS = frozenset({"text", "summary", "data"})


def opaque_details(
    entries: object,
    provider: common.Provider.ValueType,
    redact: Callable[[str], str] | None = None,
) -> list[common.ReasoningDetail]:
    """OpenRouter-style `reasoning_details` entries as ReasoningDetails the
    caller passes back unchanged: each entry whole, as JSON text. `redact`
    scrubs exact keys, as answer text is scrubbed (looser rules could alter an
    opaque signature; an entry that did quote a key is altered, and refused
    upstream on the next turn, rather than passed on)."""
    out: list[common.ReasoningDetail] = []
    for i, entry in enumerate(entries if isinstance(entries, list) else ()):
        if not isinstance(entry, dict):
            continue
        raw = orjson.dumps(entry).decode()
        out.append(
            common.ReasoningDetail(
                provider=provider,
                kind=common.REASONING_DETAIL_KIND_OPENROUTER,
                index=i,
                raw_json=redact(raw) if redact is not None else raw,
            )
        )
    return out


def as_object(value: object) -> JSONObject:
    """`value` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}
