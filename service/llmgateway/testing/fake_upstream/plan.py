"""A stream as the wire will carry it, in parts that faults can cut or reorder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    """One SSE data event."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


@dataclass(slots=True)
class StreamPlan:
    """The frames of one streamed answer."""

    # Keep-alive comments and the like, before the first chunk.
    preamble: list[bytes] = field(default_factory=list)
    # Reasoning, content and tool-call chunks.
    deltas: list[bytes] = field(default_factory=list)
    # Finish chunk(s) and usage, in wire order.
    closing: list[bytes] = field(default_factory=list)
    # The same usage with no finish_reason anywhere (for the no-finish fault).
    closing_without_finish: list[bytes] = field(default_factory=list)

    def frames(self) -> list[bytes]:
        """The whole, well-formed stream."""
        return [*self.preamble, *self.deltas, *self.closing, DONE]
