"""The incremental SSE decoder against a reference that follows the WHATWG
"interpreting an event stream" steps literally, on generated streams split at
generated points, and against the examples the standard itself gives.

The reference is written apart from the decoder on purpose: it decodes the
whole stream as UTF-8 first, as the standard does, splits it into lines with a
regular expression, keeps the data buffer as a string with a LF appended per
`data` field and the last LF removed at dispatch, and matches fields by the
standard's own words. The decoder works on bytes, incrementally, with a fast
path for `data:` and blank lines; agreeing with this on every split of
open-ended lines is what says the fast path changed nothing."""

from __future__ import annotations

import itertools
import re
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmgateway.server.providers.sse import ServerSentEvent, SSEDecoder


class Event(NamedTuple):
    """An event as the standard defines it (its data a string)."""

    data: str
    event: str
    id: str | None


def reference(stream: bytes) -> tuple[list[Event], int]:
    """The events the standard dispatches from `stream` (read to its end, so
    an unfinished last event is discarded) and the comment lines seen."""
    text = stream.decode("utf-8", "replace")
    text = text.removeprefix("\ufeff")
    # end-of-line = ( cr lf / cr / lf ); what follows the last one is unfinished.
    lines = re.split("\r\n|\r|\n", text)[:-1]
    events: list[Event] = []
    data_buffer = ""
    event_type = ""
    last_event_id: str | None = None
    comments = 0
    for line in lines:
        if line == "":
            # Dispatch: nothing when the data buffer is empty; otherwise its
            # last LF removed. Both buffers reset either way.
            if data_buffer != "":
                events.append(Event(data_buffer.removesuffix("\n"), event_type, last_event_id))
            data_buffer, event_type = "", ""
        elif line.startswith(":"):
            comments += 1
        else:
            if ":" in line:
                field, value = line.split(":", 1)
                value = value.removeprefix(" ")  # one space, no more
            else:
                field, value = line, ""
            if field == "event":
                event_type = value
            elif field == "data":
                data_buffer += value + "\n"
            elif field == "id" and "\0" not in value:
                last_event_id = value
            # "retry" sets the reconnection time; any other field is ignored.
    return events, comments


def decoded(events: list[ServerSentEvent]) -> list[Event]:
    return [Event(e.data.decode("utf-8", "replace"), e.event, e.id) for e in events]


# Pieces of lines: field names right and nearly right, colons and spaces where
# they matter, multi-byte UTF-8, a NUL, a BOM out of place. Never CR or LF:
# the line endings come from ENDINGS.
PIECES = st.sampled_from(
    [
        b"data",
        b"event",
        b"id",
        b"retry",
        b"Data",
        b"dat",
        b"datum",
        b":",
        b" ",
        b"  ",
        b"\t",
        b"x",
        b"{}",
        b"10",
        b"\xd0\xbf",
        b"\xe4\xb8\x96",
        b"\xf0\x9f\x8e\x89",
        b"\x00",
        b"\xef\xbb\xbf",
    ]
)
# Whole lines of the usual kinds, so that sequences of them (an event name,
# then a blank line with no data; an id with a NUL) come up often.
COMMON_LINES = st.sampled_from(
    [
        b"data: {}",
        b"data:{}",
        b"data:  two spaces",
        b"data",
        b"data:",
        b"data: \xd0\xbf\xd1\x80",
        b"event: error",
        b"event:",
        b"id: gen-1",
        b"id: a\0b",
        b"id",
        b": keep-alive",
        b"retry: 10",
        b"datum: x",
        b"",
        b"",
    ]
)
LINES = st.one_of(COMMON_LINES, st.lists(PIECES, max_size=6).map(b"".join))
ENDINGS = st.sampled_from([b"\n", b"\r\n", b"\r"])


def decode_split(stream: bytes, cuts: list[int]) -> tuple[list[ServerSentEvent], int]:
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for start, end in itertools.pairwise(points):
        events.extend(decoder.feed(stream[start:end]))
    return events, decoder.comments


@settings(max_examples=400)
@given(
    st.lists(st.tuples(LINES, ENDINGS), max_size=30),
    st.booleans(),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_any_split_of_any_stream_decodes_as_the_standard_says(
    lines: list[tuple[bytes, bytes]], bom: bool, cuts: list[int]
) -> None:
    stream = (b"\xef\xbb\xbf" if bom else b"") + b"".join(line + end for line, end in lines)
    if stream.endswith(b"\r"):
        # Whether a final CR ends its line depends on what follows; the
        # reference, reading everything at once, would not know either.
        stream += b"\n"
    events, comments = decode_split(stream, cuts)
    assert decoded(events) == reference(stream)[0]
    assert comments == reference(stream)[1]


# The examples of the standard's event-stream section (WHATWG HTML, "Server-sent
# events", 9.2.6), with the events it says each dispatches.
SPEC_EXAMPLES = [
    (
        b"data: YHOO\ndata: +2\ndata: 10\n\n",
        [Event("YHOO\n+2\n10", "", None)],
    ),
    (
        (
            b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n"
            b"data:  third event\n\n"
        ),
        [
            Event("first event", "", "1"),
            Event("second event", "", ""),
            Event(" third event", "", ""),
        ],
    ),
    (
        b"data\n\ndata\ndata\n\ndata:",
        [Event("", "", None), Event("\n", "", None)],
    ),
    (
        b"data:test\n\ndata: test\n\n",
        [Event("test", "", None), Event("test", "", None)],
    ),
]


@pytest.mark.parametrize(("stream", "expected"), SPEC_EXAMPLES)
def test_the_standards_examples(stream: bytes, expected: list[Event]) -> None:
    assert reference(stream)[0] == expected
    for size in (1, 2, 3, len(stream)):
        cuts = list(range(0, len(stream), size))
        assert decoded(decode_split(stream, cuts)[0]) == expected
