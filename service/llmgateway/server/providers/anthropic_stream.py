"""Turns Anthropic's stream of named SSE events into the gateway's events.

Rules other clients got wrong, and this one keeps:
- a tool's `input_json_delta` fragments are joined and parsed once, at
  `content_block_stop`: the first fragment is "", and a tool without
  arguments sends nothing else (its input is then {});
- some Anthropic-compatible upstreams put the whole `input` in
  `content_block_start` and send no fragments: that input is kept;
- `message_delta` usage is cumulative and may repeat the input counts: each
  field takes its latest value, never a sum;
- `ping` and event types not known yet are skipped; an `error` event ends
  the stream with an error, never a quiet success;
- a stream without `message_stop`, or without a stop reason, is incomplete;
  a block still open at `message_stop` is closed then (its tool call sent once).
Thinking blocks become ReasoningDetails (text and signature, byte for byte)
delivered in `done`, for the caller to send back on the next turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import orjson

from llmgateway.server.routing.router import gateway_model_name
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from llmgateway.server.errors import GatewayError
    from llmgateway.server.providers.openai_compatible.wire import JSONObject
    from llmgateway.server.providers.redaction import Redactor
    from llmgateway.server.providers.sse import ServerSentEvent
    from llmgateway.server.routing.router import Route


class AnthropicStreamOwner(Protocol):
    """What the stream needs of its provider (anthropic.py's AnthropicProvider)."""

    @property
    def redactor(self) -> Redactor:
        """What scrubs provider keys from everything the stream passes on."""

    @property
    def display_name(self) -> str:
        """The provider's name, reported as the upstream provider."""

    def in_band_error(self, error: object, route: Route) -> GatewayError:
        """An error the provider sent inside the stream."""

    def malformed(self, detail: str, route: Route) -> GatewayError:
        """The upstream broke its own wire format."""

    def truncated(self, detail: str, route: Route) -> GatewayError:
        """The stream ended before it was complete."""

    def finish_reason(self, native: str, route: Route) -> common.FinishReason.ValueType:
        """Our enum for a stop reason."""

    def usage(self, usage: JSONObject) -> common.Usage:
        """Our Usage from the provider's usage object."""


@dataclass(slots=True)
class _Block:
    """A content block being received."""

    kind: str
    index: int
    # tool_use
    id: str = ""
    name: str = ""
    start_input: object = None
    fragments: list[str] = field(default_factory=list)
    # thinking
    thinking: list[str] = field(default_factory=list)
    signature: list[str] = field(default_factory=list)


class AnthropicStreamAssembler:
    """Feed it SSE events; it returns the gRPC events they produce."""

    def __init__(
        self, provider: AnthropicStreamOwner, route: Route, *, include_reasoning: bool
    ) -> None:
        self._provider = provider
        # Answer text is checked one delta at a time for exact keys (as in
        # openai_compatible/stream.py); the rest when the events are built.
        self._redactor = provider.redactor
        self._route = route
        self._include_reasoning = include_reasoning
        self._id = ""
        self._model = ""
        self._stop_reason: str | None = None
        self._usage: JSONObject | None = None
        self._blocks: dict[int, _Block] = {}
        self._details: list[common.ReasoningDetail] = []
        self.done = False

    def on_event(self, event: ServerSentEvent) -> list[pb.StreamCompleteResponse]:
        """The events one upstream SSE event produces (often one, sometimes none)."""
        if self.done:
            return []  # nothing after message_stop counts
        try:
            payload = orjson.loads(event.data)
        except orjson.JSONDecodeError as exc:
            raise self._provider.malformed(
                f"an SSE event is not JSON ({exc})", self._route
            ) from None
        if not isinstance(payload, dict):
            raise self._provider.malformed("an SSE event is not a JSON object", self._route)
        kind = payload.get("type")
        if not isinstance(kind, str) or not kind:
            kind = event.event
        if kind == "error" or event.event == "error":
            raise self._provider.in_band_error(payload, self._route)
        if kind == "content_block_delta":
            return self._block_delta(payload)
        if kind == "content_block_start":
            return self._block_start(payload)
        if kind == "content_block_stop":
            return self._block_stop(payload)
        if kind == "message_start":
            self._message_start(payload)
        elif kind == "message_delta":
            self._message_delta(payload)
        elif kind == "message_stop":
            self.done = True
        # `ping`, and event types Anthropic may add, carry nothing to pass on.
        return []

    def _message_start(self, payload: JSONObject) -> None:
        message = _object(payload.get("message"))
        if isinstance(message.get("id"), str):
            self._id = message["id"]
        if isinstance(message.get("model"), str):
            self._model = message["model"]
        self._overlay_usage(message.get("usage"))

    def _block_start(self, payload: JSONObject) -> list[pb.StreamCompleteResponse]:
        index = _index(payload)
        block = _object(payload.get("content_block"))
        kind = block.get("type")
        if kind == "redacted_thinking":
            self._details.append(
                common.ReasoningDetail(
                    provider=common.PROVIDER_ANTHROPIC,
                    kind=common.REASONING_DETAIL_KIND_REDACTED_THINKING,
                    signature=self._redactor.content(_string(block.get("data"))),
                    index=index,
                )
            )
            return []
        if not isinstance(kind, str):
            return []
        started = _Block(kind=kind, index=index)
        self._blocks[index] = started
        out: list[pb.StreamCompleteResponse] = []
        if kind == "tool_use":
            started.id = _string(block.get("id"))
            started.name = _string(block.get("name"))
            started.start_input = block.get("input")
        elif kind == "text":
            self._text(_string(block.get("text")), out)
        elif kind == "thinking":
            self._thinking(started, _string(block.get("thinking")), out)
            if signature := _string(block.get("signature")):
                started.signature.append(signature)
        # Server tool blocks and block types not known yet are received and
        # dropped: the contract has no place for them.
        return out

    def _block_delta(self, payload: JSONObject) -> list[pb.StreamCompleteResponse]:
        index = _index(payload)
        delta = _object(payload.get("delta"))
        kind = delta.get("type")
        block = self._blocks.get(index)
        out: list[pb.StreamCompleteResponse] = []
        if kind == "text_delta":
            self._text(_string(delta.get("text")), out)
        elif kind == "thinking_delta":
            self._thinking(self._block(index, "thinking"), _string(delta.get("thinking")), out)
        elif kind == "signature_delta":
            self._block(index, "thinking").signature.append(_string(delta.get("signature")))
        elif kind == "input_json_delta":
            if block is None:
                raise self._provider.malformed(
                    "tool input arrived for a block that never started", self._route
                )
            # A server tool's input (server_tool_use) is received and dropped.
            if block.kind == "tool_use":
                block.fragments.append(_string(delta.get("partial_json")))
        # citations_delta, and delta types not known yet, are skipped.
        return out

    def _block_stop(self, payload: JSONObject) -> list[pb.StreamCompleteResponse]:
        block = self._blocks.pop(_index(payload), None)
        if block is None:
            return []
        if block.kind == "thinking":
            content = self._redactor.content
            self._details.append(
                common.ReasoningDetail(
                    provider=common.PROVIDER_ANTHROPIC,
                    kind=common.REASONING_DETAIL_KIND_THINKING,
                    text=content("".join(block.thinking)),
                    signature=content("".join(block.signature)),
                    index=block.index,
                )
            )
            return []
        if block.kind != "tool_use":
            return []
        content, text = self._redactor.content, self._redactor.text
        call = common.ToolCall(
            id=text(block.id), name=content(block.name), arguments=content(_arguments(block))
        )
        return [pb.StreamCompleteResponse(tool_call=call)]

    def _message_delta(self, payload: JSONObject) -> None:
        stop_reason = _object(payload.get("delta")).get("stop_reason")
        if isinstance(stop_reason, str) and stop_reason:
            self._stop_reason = stop_reason
        self._overlay_usage(payload.get("usage"))

    def on_end(self, leftover: list[ServerSentEvent]) -> None:
        """End of body. Accept a last message_stop that lacks its blank line;
        anything else unfinished is a truncation (finish() says so)."""
        for event in leftover:
            if event.event == "message_stop":
                self.done = True

    def finish(self) -> list[pb.StreamCompleteResponse]:
        """The closing event, once the upstream body has ended."""
        if not self.done:
            raise self._provider.truncated("the stream ended without message_stop", self._route)
        if self._stop_reason is None:
            raise self._provider.truncated(
                "the stream reached message_stop without a stop_reason", self._route
            )
        # A block still open at message_stop (an Anthropic-compatible upstream
        # that sends no content_block_stop) is complete now: its tool call
        # goes out once, and its thinking joins the details, rather than
        # either being lost.
        out: list[pb.StreamCompleteResponse] = []
        for index in sorted(self._blocks):
            out.extend(self._block_stop({"index": index}))
        text = self._redactor.text
        done = pb.CompletionDone(
            id=text(self._id),
            model=text(
                gateway_model_name(self._route.provider, self._model or self._route.upstream_model)
            ),
            provider=self._route.provider,
            upstream_provider=self._provider.display_name,
            finish_reason=self._provider.finish_reason(self._stop_reason, self._route),
            native_finish_reason=text(self._stop_reason),
            reasoning_details=sorted(self._details, key=lambda d: d.index),
        )
        if self._usage is not None:
            done.usage.CopyFrom(self._provider.usage(self._usage))
        out.append(pb.StreamCompleteResponse(done=done))
        return out

    # -- helpers ------------------------------------------------------------------

    def _overlay_usage(self, usage: object) -> None:
        """Cumulative counts: each field reported replaces the one before."""
        if not isinstance(usage, dict):
            return
        if self._usage is None:
            self._usage = {}
        self._usage.update((k, v) for k, v in usage.items() if v is not None)

    def _block(self, index: int, kind: str) -> _Block:
        """The block a delta belongs to; one that never started is opened now
        (its deltas still count)."""
        block = self._blocks.get(index)
        if block is None:
            block = self._blocks[index] = _Block(kind=kind, index=index)
        return block

    def _text(self, text: str, out: list[pb.StreamCompleteResponse]) -> None:
        if text:
            out.append(
                pb.StreamCompleteResponse(
                    content_delta=pb.ContentDelta(text=self._redactor.content(text))
                )
            )

    def _thinking(self, block: _Block, text: str, out: list[pb.StreamCompleteResponse]) -> None:
        if not text:
            return
        block.thinking.append(text)
        if self._include_reasoning:
            out.append(
                pb.StreamCompleteResponse(
                    reasoning_delta=pb.ReasoningDelta(text=self._redactor.content(text))
                )
            )


def _arguments(block: _Block) -> str:
    """A tool call's arguments as JSON text: the fragments parsed once (compact,
    as a unary answer's `input` is dumped), or as sent if they are not JSON
    (the contract passes a model's invalid JSON on unrepaired); with no
    fragments, the input `content_block_start` held, else {}."""
    joined = "".join(block.fragments)
    if not joined.strip():
        start = block.start_input
        return orjson.dumps(start if isinstance(start, dict) and start else {}).decode()
    try:
        return orjson.dumps(orjson.loads(joined)).decode()
    except orjson.JSONDecodeError:
        return joined


def _index(payload: JSONObject) -> int:
    index = payload.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else 0


def _object(value: object) -> JSONObject:
    return value if isinstance(value, dict) else {}


def _string(value: object) -> str:
    return value if isinstance(value, str) else ""
