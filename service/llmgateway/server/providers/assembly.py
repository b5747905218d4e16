"""What the shared stream loop (core.py) needs from a wire: a frame decoder and an assembler.

Every provider's stream goes through the same loop: bytes in, frames out of a
FrameDecoder, gateway events out of an Assembler. Only these two differ between
wires (SSE with OpenAI chunks, SSE with named events, NDJSON lines), so the
deadlines, size bounds and error mapping around them are written once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from llmgateway.server.providers.sse import ServerSentEvent


class FrameDecoder(Protocol):
    """Splits a body arriving in arbitrary pieces into frames (sse.SSEDecoder is one)."""

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """The frames `chunk` completes, in order."""

    def end(self) -> list[ServerSentEvent]:
        """At end of body: what was still buffered, as frames (the assembler judges them)."""

    @property
    def buffered(self) -> int:
        """Bytes held for the frame being received: the loop bounds it."""


class Assembler(Protocol):
    """Turns one stream's frames into the gateway's events, and says when it is over."""

    @property
    def done(self) -> bool:
        """True once the wire said the stream is over; the loop stops reading."""

    def on_event(self, event: ServerSentEvent) -> list[pb.StreamCompleteResponse]:
        """The events one frame produces (often one, sometimes none)."""

    def on_end(self, leftover: list[ServerSentEvent]) -> None:
        """The body ended without `done`; `leftover` is what the decoder still held."""

    def finish(self) -> list[pb.StreamCompleteResponse]:
        """The closing events, once the body has ended; raises if the stream is incomplete."""


@runtime_checkable
class SpanAnnotating(Protocol):
    """An assembler that has attributes of its wire's own for the upstream trace
    span (Ollama's timings); the stream loop adds them once finish() returned."""

    def span_attributes(self) -> dict[str, int | str]:
        """Names and numbers only, never answer text (strings are scrubbed as metadata)."""


def coalesce(events: list[pb.StreamCompleteResponse]) -> list[pb.StreamCompleteResponse]:
    """Merge adjacent content deltas, and adjacent reasoning deltas, into one each.

    Applied to the events of one network read: they arrived together, so
    merging adds no latency, and each gRPC message saved is a write saved.
    Under load, when the gateway falls behind, reads hold more events and
    this batches exactly when it helps.
    """
    if len(events) < 2:
        return events
    merged: list[pb.StreamCompleteResponse] = []
    texts: list[str] = []
    kind: str | None = None
    for event in events:
        current = event.WhichOneof("event")
        if current in ("content_delta", "reasoning_delta"):
            if current != kind:
                _flush(merged, kind, texts)
                kind, texts = current, []
            texts.append(getattr(event, current).text)
            continue
        _flush(merged, kind, texts)
        kind, texts = None, []
        merged.append(event)
    _flush(merged, kind, texts)
    return merged


def _flush(merged: list[pb.StreamCompleteResponse], kind: str | None, texts: list[str]) -> None:
    if kind == "content_delta":
        merged.append(pb.StreamCompleteResponse(content_delta=pb.ContentDelta(text="".join(texts))))
    elif kind == "reasoning_delta":
        merged.append(
            pb.StreamCompleteResponse(reasoning_delta=pb.ReasoningDelta(text="".join(texts)))
        )
