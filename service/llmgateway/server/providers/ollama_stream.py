"""Ollama's /api/chat answers in the gateway's terms: NDJSON lines to stream events.

One line is one JSON object: `{"message": {"content", "thinking", "tool_calls"},
"done": false}` while the model generates, then `{"done": true, "done_reason",
"prompt_eval_count", "eval_count", ...durations}`. A unary answer is that last
line alone, carrying the whole message. Rules this assembler keeps:
- an `{"error": ...}` line ends the stream with a non-OK status even though
  the HTTP status was 200 (Ollama reports mid-generation failures that way,
  and a 200 whose only line is an error behaves the same);
- tool calls arrive whole, `arguments` an object (turned into JSON text), with
  an `id` on newer servers; without one the gateway makes one up, unique to
  the response so the caller can pair the result with the call;
- the stream is over at the `done` line, and only there: a body that ends
  without it is truncated, never a quiet success;
- `prompt_eval_count` is absent when the whole prompt came from Ollama's
  prompt cache: that is 0 prompt tokens, not a count to invent.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Protocol

import orjson

from llmgateway.server.providers.openai_compatible.wire import usage_from_json
from llmgateway.server.providers.translate import generated_call_id
from llmgateway.server.routing.router import gateway_model_name
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from llmgateway.server.errors import GatewayError
    from llmgateway.server.providers.openai_compatible.wire import JSONObject
    from llmgateway.server.providers.redaction import Redactor
    from llmgateway.server.providers.sse import ServerSentEvent
    from llmgateway.server.routing.router import Route

# Reported as "upstream_provider", as Z.AI's answers report "Z.AI".
UPSTREAM_PROVIDER = "Ollama"
# The done line's timings (nanoseconds). The contract has no field for them;
# they go on the upstream trace span as `llmgateway.ollama.<name>_ns`.
DURATION_FIELDS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")
SPAN_ATTRIBUTE_PREFIX = "llmgateway.ollama."


class OllamaOwner(Protocol):
    """What the assembler needs of the provider it reads for (ollama.py's
    OllamaProvider): declared here, so this module does not import it."""

    @property
    def redactor(self) -> Redactor:
        """What scrubs provider keys from everything the stream passes on."""

    def in_band_error(self, error: object, route: Route) -> GatewayError:
        """An error Ollama sent inside a 200 response."""

    def malformed(self, detail: str, route: Route) -> GatewayError:
        """The upstream broke its own wire format."""

    def truncated(self, detail: str, route: Route) -> GatewayError:
        """The stream ended before it was complete."""


def new_call_nonce() -> str:
    """A short random part for the ids of one response's tool calls: Ollama
    gives its answers no id, and ids made from the index alone would repeat
    across the turns of a conversation (every turn's first call `call_gw_0`),
    so a tool result could not be paired with its call."""
    return secrets.token_hex(4)


def finish_reason_for(native: str, called_tools: bool) -> common.FinishReason.ValueType:
    """Our finish reason for a `done_reason`: Ollama says `stop` after tool
    calls too, so the calls decide. `load`/`unload` (a request that only
    loaded or unloaded the model) and anything unknown are OTHER."""
    if native == "stop":
        return common.FINISH_REASON_TOOL_CALLS if called_tools else common.FINISH_REASON_STOP
    if native == "length":
        return common.FINISH_REASON_LENGTH
    return common.FINISH_REASON_OTHER


def native_finish(line: JSONObject) -> str:
    """The done line's `done_reason`; servers older than the field sent none,
    and ended only on stop."""
    reason = line.get("done_reason")
    return reason if isinstance(reason, str) and reason else "stop"


def usage_of(line: JSONObject) -> common.Usage | None:
    """Usage from a done line, or None when it carries no counts at all."""
    if "prompt_eval_count" not in line and "eval_count" not in line:
        return None
    # Absent on a prompt-cache hit: 0, as usage_from_json reads a missing count.
    return usage_from_json(
        {
            "prompt_tokens": line.get("prompt_eval_count"),
            "completion_tokens": line.get("eval_count"),
        }
    )


def durations_of(line: JSONObject) -> dict[str, int]:
    """The timings a done line carries (hosted Ollama omits some), in ns."""
    return {
        name: value
        for name in DURATION_FIELDS
        if isinstance(value := line.get(name), int) and not isinstance(value, bool) and value >= 0
    }


def duration_attributes(durations: dict[str, int]) -> dict[str, int | str]:
    """Timings as upstream span attributes: `llmgateway.ollama.eval_duration_ns`..."""
    return {f"{SPAN_ATTRIBUTE_PREFIX}{name}_ns": value for name, value in durations.items()}


def tool_calls_of(message: JSONObject, nonce: str, first_index: int) -> list[common.ToolCall]:
    """The whole tool calls in one message, numbered from `first_index` for ids
    the gateway makes up; not redacted (the caller does)."""
    calls = message.get("tool_calls")
    if not calls:
        return []
    if not isinstance(calls, list):
        raise TypeError("tool_calls is not a list")
    out: list[common.ToolCall] = []
    for call in calls:
        if not isinstance(call, dict):
            raise TypeError("a tool call is not an object")
        function = call.get("function")
        if not isinstance(function, dict):
            raise TypeError("a tool call has no function")
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = orjson.dumps(arguments if arguments is not None else {}).decode()
        call_id = call.get("id")
        out.append(
            common.ToolCall(
                id=call_id
                if isinstance(call_id, str) and call_id
                else generated_call_id(nonce, first_index + len(out)),
                name=str(function.get("name") or ""),
                arguments=arguments,
            )
        )
    return out


def text_of(message: JSONObject, key: str) -> str:
    """A message's text field, "" when absent."""
    value = message.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"message.{key} is not text")
    return value


def message_of(line: JSONObject) -> JSONObject:
    """A line's message, {} when it has none."""
    message = line.get("message")
    if message is None:
        return {}
    if not isinstance(message, dict):
        raise TypeError("message is not an object")
    return message


class OllamaStreamAssembler:
    """Feed it one frame per NDJSON line; it returns the gRPC events they produce."""

    def __init__(
        self,
        provider: OllamaOwner,
        route: Route,
        *,
        include_reasoning: bool,
        nonce: str | None = None,
    ) -> None:
        self._provider = provider
        # Answer text is scrubbed of exact keys one line at a time, as
        # openai_compatible/stream.py explains; ids and names fully.
        self._redactor = provider.redactor
        self._route = route
        self._include_reasoning = include_reasoning
        self._nonce = nonce if nonce is not None else new_call_nonce()
        self._model = ""
        self._calls = 0
        # Events of a last line that lacked its newline, sent by finish().
        self._tail: list[pb.StreamCompleteResponse] = []
        self.done = False
        # The done line's timings, for the upstream trace span (span_attributes).
        self.durations: dict[str, int] = {}

    def on_event(self, event: ServerSentEvent) -> list[pb.StreamCompleteResponse]:
        """The events one NDJSON line produces."""
        if self.done:
            return []  # nothing after the done line counts
        try:
            line = orjson.loads(event.data)
        except orjson.JSONDecodeError as exc:
            raise self._provider.malformed(
                f"an NDJSON line is not JSON ({exc})", self._route
            ) from None
        if not isinstance(line, dict):
            raise self._provider.malformed("an NDJSON line is not a JSON object", self._route)
        if line.get("error") is not None:
            raise self._provider.in_band_error(line["error"], self._route)
        model = line.get("model")
        if model and isinstance(model, str):
            self._model = model
        out = self._message_events(message_of(line))
        if line.get("done") is True:
            self.done = True
            out.append(self._done(line))
        return out

    def _message_events(self, message: JSONObject) -> list[pb.StreamCompleteResponse]:
        out = []
        content = self._redactor.content
        thinking = text_of(message, "thinking")
        if thinking and self._include_reasoning:
            out.append(
                pb.StreamCompleteResponse(reasoning_delta=pb.ReasoningDelta(text=content(thinking)))
            )
        text = text_of(message, "content")
        if text:
            out.append(pb.StreamCompleteResponse(content_delta=pb.ContentDelta(text=content(text))))
        for call in tool_calls_of(message, self._nonce, self._calls):
            self._calls += 1
            out.append(
                pb.StreamCompleteResponse(
                    tool_call=common.ToolCall(
                        id=self._redactor.text(call.id),
                        name=content(call.name),
                        arguments=content(call.arguments),
                    )
                )
            )
        return out

    def _done(self, line: JSONObject) -> pb.StreamCompleteResponse:
        native = native_finish(line)
        text = self._redactor.text
        done = pb.CompletionDone(
            model=text(
                gateway_model_name(self._route.provider, self._model or self._route.upstream_model)
            ),
            provider=self._route.provider,
            upstream_provider=UPSTREAM_PROVIDER,
            finish_reason=finish_reason_for(native, self._calls > 0),
            native_finish_reason=text(native),
        )
        usage = usage_of(line)
        if usage is not None:
            done.usage.CopyFrom(usage)
        self.durations = durations_of(line)
        return pb.StreamCompleteResponse(done=done)

    def on_end(self, leftover: list[ServerSentEvent]) -> None:
        """End of body before the done line: a last line without its newline
        still counts when it is whole; one cut short (not JSON) leaves the
        stream unfinished, a truncation (finish() says so), as a body cut
        between lines is."""
        for event in leftover:
            try:
                orjson.loads(event.data)
            except orjson.JSONDecodeError:
                return
            self._tail.extend(self.on_event(event))

    def finish(self) -> list[pb.StreamCompleteResponse]:
        """What a last line without its newline produced (the done event
        otherwise went out with its line); raises when there was no done line."""
        if not self.done:
            raise self._provider.truncated("the stream ended without its done line", self._route)
        tail, self._tail = self._tail, []
        return tail

    def span_attributes(self) -> dict[str, int | str]:
        """The done line's timings, for the upstream trace span (assembly.SpanAnnotating)."""
        return duration_attributes(self.durations)
