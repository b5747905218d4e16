"""An incremental NDJSON decoder: one frame per non-blank line.

Ollama streams newline-delimited JSON, not Server-Sent Events: reading it as
SSE (waiting for a blank line that never comes) or as one JSON document is how
other clients ended up with empty answers. Bytes arrive in arbitrary pieces, so
only the unfinished line is buffered, and nothing is decoded until a line is
complete: a multi-byte character split between reads is never mangled. Each
line becomes a ServerSentEvent whose data is the line, so the shared stream
loop (core.py) and the Assembler protocol need nothing NDJSON-specific.
"""

from __future__ import annotations

from llmgateway.server.providers.sse import ServerSentEvent


class NDJSONDecoder:
    """Feed it bytes; it returns one frame per line they complete."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Every line `chunk` completes, in order, without its line ending."""
        if not chunk:
            return []
        buffer = self._pending + chunk if self._pending else chunk
        lines = buffer.split(b"\n")
        # The last piece has no newline yet: it is the line being received.
        self._pending = lines.pop()
        return [frame for line in lines if (frame := _frame(line)) is not None]

    def end(self) -> list[ServerSentEvent]:
        """At end of body: the last line, if it lacks its newline (the
        assembler judges whether it may count)."""
        line, self._pending = self._pending, b""
        frame = _frame(line)
        return [frame] if frame is not None else []

    @property
    def buffered(self) -> int:
        """Bytes held for the line being received: the stream loop bounds it."""
        return len(self._pending)


def _frame(line: bytes) -> ServerSentEvent | None:
    # A CR before the LF (CRLF line endings) and blank or whitespace-only lines
    # (keep-alives, a trailing newline) carry nothing.
    line = line.strip(b" \t\r")
    return ServerSentEvent(data=line) if line else None
