"""NDJSONDecoder: Ollama's stream, one frame per line, however the bytes arrive."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from llmgateway.server.providers.ndjson import NDJSONDecoder

LINES = [
    b'{"message":{"content":"Hello"},"done":false}',
    # A multi-byte character, split by any cut through it.
    b'{"message":{"content":"\xe2\x80\x99 \xf0\x9f\x98\x8a"},"done":false}',
    b'{"done":true,"done_reason":"stop","eval_count":2}',
]
BODY = b"\n".join(LINES) + b"\n"


def decode(pieces: list[bytes]) -> list[bytes]:
    decoder = NDJSONDecoder()
    frames = [frame.data for piece in pieces for frame in decoder.feed(piece)]
    return frames + [frame.data for frame in decoder.end()]


def cut(body: bytes, offsets: list[int]) -> list[bytes]:
    points = sorted({o % (len(body) + 1) for o in offsets})
    edges = [0, *points, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


def test_one_frame_per_line_in_one_buffer() -> None:
    assert decode([BODY]) == LINES


def test_every_single_byte_split_gives_the_same_frames() -> None:
    for at in range(len(BODY) + 1):
        assert decode([BODY[:at], BODY[at:]]) == LINES, at


def test_byte_by_byte_gives_the_same_frames() -> None:
    assert decode([BODY[i : i + 1] for i in range(len(BODY))]) == LINES


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_any_cut_points_give_the_same_frames(offsets: list[int]) -> None:
    assert decode(cut(BODY, offsets)) == LINES


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_crlf_line_endings_split_anywhere(offsets: list[int]) -> None:
    # A CR arriving in one read and its LF in the next is still one line end.
    assert decode(cut(BODY.replace(b"\n", b"\r\n"), offsets)) == LINES


def test_blank_and_whitespace_lines_are_skipped() -> None:
    body = b"\n\n" + LINES[0] + b"\n \t\r\n\r\n" + LINES[2] + b"\n\n"
    assert decode([body]) == [LINES[0], LINES[2]]


def test_a_last_line_without_its_newline_comes_out_at_the_end() -> None:
    decoder = NDJSONDecoder()
    assert [f.data for f in decoder.feed(LINES[0] + b"\n" + LINES[2])] == [LINES[0]]
    assert [f.data for f in decoder.end()] == [LINES[2]]
    # And only once.
    assert decoder.end() == []


def test_nothing_at_the_end_when_the_body_ended_with_a_newline() -> None:
    decoder = NDJSONDecoder()
    decoder.feed(BODY)
    assert decoder.end() == []


def test_buffered_counts_only_the_unfinished_line() -> None:
    decoder = NDJSONDecoder()
    assert decoder.buffered == 0
    decoder.feed(LINES[0] + b"\n" + b'{"partial":')
    assert decoder.buffered == len(b'{"partial":')
    decoder.feed(b"1}\n")
    assert decoder.buffered == 0


@given(st.integers(min_value=1, max_value=5000), st.integers(min_value=1, max_value=512))
def test_a_line_that_never_ends_is_all_that_is_buffered(size: int, step: int) -> None:
    # The stream loop bounds `buffered`: it must grow with the endless line
    # and hold nothing else.
    decoder = NDJSONDecoder()
    decoder.feed(LINES[0] + b"\n")
    endless = b"x" * size
    for start in range(0, size, step):
        assert decoder.feed(endless[start : start + step]) == []
    assert decoder.buffered == size


def test_empty_reads_change_nothing() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(b"") == []
    decoder.feed(b'{"a":')
    assert decoder.feed(b"") == []
    assert [f.data for f in decoder.feed(b"1}\n")] == [b'{"a":1}']
