"""The incremental SSE decoder: the same events whatever the chunk boundaries."""

from __future__ import annotations

import pytest

from llmgateway.server.providers.sse import ServerSentEvent, SSEDecoder

TEXT = "Olá, 世界 🎉 – ünïcödé"

# One stream with every awkward feature at once: a BOM, OpenRouter keep-alive
# comments, LF, CRLF and lone-CR line endings, an `event:` field, an `id:`,
# multi-line data, multi-byte UTF-8 (2, 3 and 4 bytes) and `[DONE]`.
STREAM = (
    b"\xef\xbb\xbf"
    b": OPENROUTER PROCESSING\n"
    b"\n"
    b": OPENROUTER PROCESSING\r\n"
    b"\r\n"
    b'data: {"n":1}\n'
    b"\n"
    b"id: gen-1\r"
    b"data: first line\r"
    b"data: second line\r"
    b"\r"
    b"event: error\r\n"
    b'data: {"error":{"code":429}}\r\n'
    b"\r\n"
    b"data:" + TEXT.encode() + b"\n"
    b"\n"
    b"data: [DONE]\n"
    b"\n"
)

EXPECTED = [
    ServerSentEvent(data=b'{"n":1}'),
    ServerSentEvent(data=b"first line\nsecond line", id="gen-1"),
    ServerSentEvent(data=b'{"error":{"code":429}}', event="error", id="gen-1"),
    ServerSentEvent(data=TEXT.encode(), id="gen-1"),
    ServerSentEvent(data=b"[DONE]", id="gen-1"),
]


def decode(chunks: list[bytes]) -> tuple[list[ServerSentEvent], SSEDecoder]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events, decoder


def test_whole_stream_in_one_feed():
    events, decoder = decode([STREAM])
    assert events == EXPECTED
    assert decoder.comments == 2
    assert not decoder.has_partial_event


@pytest.mark.parametrize("split", range(len(STREAM) + 1))
def test_every_split_point_gives_the_same_events(split):
    events, decoder = decode([STREAM[:split], STREAM[split:]])
    assert events == EXPECTED
    assert decoder.comments == 2
    assert not decoder.has_partial_event


def test_byte_by_byte_gives_the_same_events():
    events, decoder = decode([STREAM[i : i + 1] for i in range(len(STREAM))])
    assert events == EXPECTED
    assert decoder.comments == 2
    assert not decoder.has_partial_event


@pytest.mark.parametrize("size", [2, 3, 5, 7, 11])
def test_fixed_size_chunks_give_the_same_events(size):
    events, _ = decode([STREAM[i : i + size] for i in range(0, len(STREAM), size)])
    assert events == EXPECTED


def test_multibyte_characters_split_one_byte_at_a_time_stay_intact():
    payload = f'{{"content":"{TEXT}"}}'.encode()
    raw = b"data: " + payload + b"\n\n"
    events, _ = decode([raw[i : i + 1] for i in range(len(raw))])
    assert len(events) == 1
    assert events[0].data.decode("utf-8") == f'{{"content":"{TEXT}"}}'


def test_event_name_with_multibyte_characters_survives_a_split():
    raw = "event: ошибка\ndata: x\n\n".encode()
    events, _ = decode([raw[i : i + 1] for i in range(len(raw))])
    assert events == [ServerSentEvent(data=b"x", event="ошибка")]


def test_crlf_split_between_two_feeds_is_one_line_ending():
    # If the LF after a chunk-final CR counted as a second line ending, the
    # blank line would dispatch "a" on its own and "b" would be a new event.
    events, decoder = decode([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])
    assert events == [ServerSentEvent(data=b"a\nb")]
    assert not decoder.has_partial_event


def test_lone_cr_ends_lines():
    events, _ = decode([b"data: a\rdata: b\r\rdata: c\r\r"])
    assert events == [ServerSentEvent(data=b"a\nb"), ServerSentEvent(data=b"c")]


def test_cr_then_cr_across_feeds_is_two_line_endings():
    events, _ = decode([b"data: a\r", b"\r"])
    assert events == [ServerSentEvent(data=b"a")]


def test_lf_after_a_split_crlf_is_skipped_only_once():
    # CR | LF LF: the first LF completes the CRLF, the second is a blank line.
    events, _ = decode([b"data: a\r", b"\n\n"])
    assert events == [ServerSentEvent(data=b"a")]


def test_comments_are_counted_and_never_emitted():
    raw = b": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\n:\n\ndata: {}\n\n"
    events, decoder = decode([raw])
    assert events == [ServerSentEvent(data=b"{}")]
    assert decoder.comments == 3
    assert all(b"OPENROUTER" not in event.data for event in events)


def test_comment_between_data_lines_does_not_split_the_event():
    events, decoder = decode([b"data: a\n: keep-alive\ndata: b\n\n"])
    assert events == [ServerSentEvent(data=b"a\nb")]
    assert decoder.comments == 1


def test_only_comments_produce_no_events_and_no_partial_event():
    events, decoder = decode([b": OPENROUTER PROCESSING\n\n" * 5])
    assert events == []
    assert decoder.comments == 5
    assert not decoder.has_partial_event


def test_multi_line_data_is_joined_with_newlines():
    events, _ = decode([b"data: line one\ndata: line two\ndata:\ndata: line four\n\n"])
    assert events == [ServerSentEvent(data=b"line one\nline two\n\nline four")]


def test_only_one_space_after_the_colon_is_removed():
    events, _ = decode([b"data:no space\n\ndata:  two spaces\n\n"])
    assert [e.data for e in events] == [b"no space", b" two spaces"]


def test_event_field_applies_to_one_event_only():
    events, _ = decode([b"event: error\ndata: 1\n\ndata: 2\n\n"])
    assert events == [ServerSentEvent(data=b"1", event="error"), ServerSentEvent(data=b"2")]


def test_event_without_data_is_not_dispatched():
    events, _ = decode([b"event: ping\n\ndata: x\n\n"])
    assert events == [ServerSentEvent(data=b"x")]


def test_unknown_fields_and_retry_are_ignored():
    events, _ = decode([b"retry: 1000\nfoo: bar\ndata: x\n\n"])
    assert events == [ServerSentEvent(data=b"x")]


def test_id_persists_until_changed():
    events, _ = decode([b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n"])
    assert [(e.data, e.id) for e in events] == [(b"a", "1"), (b"b", "1"), (b"c", "2")]


def test_bom_at_start_is_stripped():
    events, _ = decode([b"\xef\xbb\xbfdata: x\n\n"])
    assert events == [ServerSentEvent(data=b"x")]


@pytest.mark.parametrize("split", [1, 2, 3])
def test_bom_split_across_feeds_is_stripped(split):
    raw = b"\xef\xbb\xbfdata: x\n\n"
    events, _ = decode([raw[:split], raw[split:]])
    assert events == [ServerSentEvent(data=b"x")]


def test_bom_is_stripped_only_at_the_very_start():
    raw = "data: \ufeffkept\n\n".encode()
    events, _ = decode([b"data: a\n\n", raw])
    assert events == [ServerSentEvent(data=b"a"), ServerSentEvent(data="\ufeffkept".encode())]


def test_unfinished_event_at_the_end_is_held_back():
    decoder = SSEDecoder()
    assert not decoder.has_partial_event
    assert decoder.feed(b'data: {"a":1}\n') == []
    assert decoder.has_partial_event  # a field is buffered, no blank line yet
    assert decoder.feed(b"\n") == [ServerSentEvent(data=b'{"a":1}')]
    assert not decoder.has_partial_event
    assert decoder.feed(b"data: {") == []
    assert decoder.has_partial_event  # half a line is buffered


def test_done_is_ordinary_data_and_decoding_continues():
    events, _ = decode([b"data: [DONE]\n\ndata: after\n\n"])
    assert events == [ServerSentEvent(data=b"[DONE]"), ServerSentEvent(data=b"after")]


def test_empty_feed_returns_nothing_and_keeps_state():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n\n") == [ServerSentEvent(data=b"a")]


def test_several_events_in_one_feed_come_back_in_order():
    raw = b"".join(f"data: {i}\n\n".encode() for i in range(10))
    events, _ = decode([raw])
    assert [e.data for e in events] == [str(i).encode() for i in range(10)]


def test_end_dispatches_a_last_event_without_its_blank_line():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]\n") == []
    assert decoder.end() == [ServerSentEvent(data=b"[DONE]")]


def test_end_dispatches_an_unterminated_last_line():
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a"') == []
    assert decoder.end() == [ServerSentEvent(data=b'{"a"')]


def test_end_with_nothing_pending_is_empty():
    decoder = SSEDecoder()
    decoder.feed(b"data: x\n\n")
    assert decoder.end() == []
