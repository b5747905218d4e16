"""The incremental SSE decoder against a whole-input reference written from the
WHATWG rules, on generated streams split at generated points: the inlined
fast path for `data:` and blank lines must agree with the general one."""

from __future__ import annotations

import itertools
import re

from hypothesis import given
from hypothesis import strategies as st

from llmgateway.server.providers.sse import ServerSentEvent, SSEDecoder

LINES = st.sampled_from(
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
        b": keep-alive",
        b"retry: 10",
        b"datum: x",
        b"",
    ]
)
ENDINGS = st.sampled_from([b"\n", b"\r\n", b"\r"])


def reference(stream: bytes) -> tuple[list[ServerSentEvent], int]:
    """Events dispatched (not the unfinished one at the end) and comments seen."""
    stream = stream.removeprefix(b"\xef\xbb\xbf")
    lines = re.split(rb"\r\n|\r|\n", stream)[:-1]  # the last piece is unfinished
    events, data, event, last_id, comments = [], [], "", None, 0
    for line in lines:
        if not line:
            if data:
                events.append(ServerSentEvent(b"\n".join(data), event, last_id))
            data, event = [], ""
            continue
        if line.startswith(b":"):
            comments += 1
            continue
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            last_id = value.decode("utf-8", "replace")
    return events, comments


@given(
    st.lists(st.tuples(LINES, ENDINGS), max_size=30),
    st.booleans(),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_any_split_of_any_stream_decodes_as_the_reference_does(
    lines: list[tuple[bytes, bytes]], bom: bool, cuts: list[int]
) -> None:
    stream = (b"\xef\xbb\xbf" if bom else b"") + b"".join(line + end for line, end in lines)
    if stream.endswith(b"\r"):
        # Whether a final CR ends its line depends on what follows; the
        # reference, reading everything at once, would not know either.
        stream += b"\n"
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for start, end in itertools.pairwise(points):
        events.extend(decoder.feed(stream[start:end]))
    expected, comments = reference(stream)
    assert events == expected
    assert decoder.comments == comments
