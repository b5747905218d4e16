"""An incremental Server-Sent Events decoder (WHATWG event-stream rules).

Bytes arrive in arbitrary pieces: a line, a CRLF pair or a UTF-8 sequence may
be split between two reads. The decoder buffers only the unfinished line, and
decodes nothing until a field is complete, so a split multi-byte character is
never mangled. Comment lines (`: OPENROUTER PROCESSING`) are counted, never
handed on as data: treating them as data is what broke many OpenRouter clients.
"""

from __future__ import annotations

from typing import NamedTuple

_BOM = b"\xef\xbb\xbf"


class ServerSentEvent(NamedTuple):
    """One dispatched event. `data` stays bytes: JSON parsers take bytes directly.
    Immutable as a NamedTuple: a third of the cost of a frozen dataclass's
    construction, made once per event of every stream."""

    data: bytes
    event: str = ""
    id: str | None = None


class SSEDecoder:
    """Feed it bytes; it returns the events completed by them."""

    __slots__ = ("_data", "_event", "_last_id", "_pending", "_skip_lf", "_started", "comments")

    def __init__(self) -> None:
        self._pending = b""
        self._skip_lf = False
        self._started = False
        self._data: list[bytes] = []
        self._event = ""
        self._last_id: str | None = None
        # Comment lines seen so far; keep-alives, useful as a liveness signal.
        self.comments = 0

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode `chunk` and return every event it completes, in order."""
        if not chunk:
            return []
        if self._skip_lf:
            # The previous chunk ended in CR; a LF now completes that CRLF.
            self._skip_lf = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        buffer = self._pending + chunk if self._pending else chunk
        if not self._started:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._pending = buffer
                return []
            self._started = True
            buffer = buffer.removeprefix(_BOM)
        if b"\r" in buffer:
            self._skip_lf = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._pending = lines.pop()
        events: list[ServerSentEvent] = []
        data = self._data
        for line in lines:
            # The two lines of nearly every event, `data: ...` and the blank
            # line that dispatches it (as _dispatch does), inline; the rest
            # through _line.
            if line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif not line:
                if data:
                    joined = data[0] if len(data) == 1 else b"\n".join(data)
                    events.append(ServerSentEvent(joined, self._event, self._last_id))
                    data = self._data = []
                self._event = ""
            else:
                self._line(line)
        return events

    def _line(self, line: bytes) -> None:
        """A line that is neither blank nor `data:...` (feed has those)."""
        if line[0] == 0x3A:  # ':' starts a comment
            self.comments += 1
            return
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            self._last_id = value.decode("utf-8", "replace")
        # `retry` and unknown fields are ignored, as the spec says.

    def _dispatch(self) -> ServerSentEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        joined = data[0] if len(data) == 1 else b"\n".join(data)
        return ServerSentEvent(data=joined, event=event, id=self._last_id)

    def end(self) -> list[ServerSentEvent]:
        """At end of stream: dispatch what is buffered as if a blank line followed.

        The spec discards an unfinished event at EOF; callers decide whether
        such a last event may count (the gateway accepts only `[DONE]`).
        """
        events = self.feed(b"\n\n") if self._pending else []
        if not events and self._data:
            event = self._dispatch()
            events = [event] if event else []
        return events

    @property
    def buffered(self) -> int:
        """Bytes held for the event being received (its fields and unfinished line)."""
        return len(self._pending) + sum(len(d) for d in self._data)

    @property
    def has_partial_event(self) -> bool:
        """True when bytes or fields of an unfinished event are buffered."""
        return bool(self._pending or self._data)
