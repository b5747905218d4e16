"""Structured logs: the request id on every line of a call, one access line per call,
and no prompt, answer or key in any line."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import re
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import grpc
import httpx
import pytest

from llmgateway.server.call_path import access
from llmgateway.server.config import ConfigError, Settings
from llmgateway.server.observability import logs
from llmgateway.server.observability.observe import CallRecord
from llmgateway.server.process import admin_cli
from llmgateway.server.process.server import start_gateway
from llmgateway.server.state.db import Database, StateUnavailableError
from llmgateway.server.state.keys import CallerKey, KeyStore
from llmgateway.server.state.schema import migrate
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from tests.conftest import gateway_stub, rich_status, user

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from llmgateway.testing.fake_upstream import FakeUpstream

MARKER = "zebra-marmalade-4417"


def _capture_root(fmt: str) -> Iterator[io.StringIO]:
    """Everything logged at INFO and above on the root logger, in format fmt."""
    stream = io.StringIO()
    handler = logs.make_handler(fmt, stream)
    root = logging.getLogger()
    saved = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(saved)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Everything logged at INFO and above (the default), as JSON lines."""
    yield from _capture_root("json")


def entries(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def access_entries(stream: io.StringIO) -> list[dict[str, object]]:
    return [e for e in entries(stream) if e["logger"] == logs.ACCESS_LOGGER]


async def test_each_line_of_a_call_carries_the_request_id_the_caller_received(
    stub: pb_grpc.CompletionServiceAsyncStub, captured: io.StringIO
) -> None:
    call = stub.Complete(pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")]))
    answer = await call
    unary_id = dict(await call.initial_metadata())["x-request-id"]

    stream = stub.StreamComplete(
        pb.StreamCompleteRequest(model="openrouter/openai/gpt-4o-mini", messages=[user("hi")])
    )
    async for _ in stream:
        pass
    stream_id = dict(await stream.initial_metadata())["x-request-id"]

    # A retried then failed call logs more than its access line: each retry.
    failing = stub.Complete(
        pb.CompleteRequest(model="zai/fault-http-502", messages=[user("hi")]), timeout=10
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await failing
    failed_id = dict(await failing.initial_metadata())["x-request-id"]

    # The access line is written as the call's scope closes, which can come a
    # moment after the caller saw the end (a busy machine): wait for all three.
    wanted = {unary_id, stream_id, failed_id}
    deadline = time.monotonic() + 10
    by_id = {str(e["request_id"]): e for e in access_entries(captured)}
    while set(by_id) != wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        by_id = {str(e["request_id"]): e for e in access_entries(captured)}
    assert set(by_id) == wanted
    unary = by_id[str(unary_id)]
    assert unary["method"] == "Complete"
    assert unary["model"] == unary["served_model"] == "zai/glm-4.7"
    assert unary["provider"] == "zai"
    assert unary["status"] == "OK"
    assert unary["reason"] == ""
    assert unary["prompt_tokens"] == answer.usage.prompt_tokens
    assert unary["completion_tokens"] == answer.usage.completion_tokens
    assert unary["cost_usd"] == pytest.approx(answer.usage.cost_usd)
    assert unary["attempts"] == 1
    assert unary["fallbacks"] == 0
    assert isinstance(unary["latency_ms"], float)
    assert isinstance(unary["ttft_ms"], float)
    assert unary["message"] == "call finished"
    assert str(unary["time"]).endswith("Z")
    assert by_id[str(stream_id)]["method"] == "StreamComplete"
    assert by_id[str(stream_id)]["provider"] == "openrouter"
    failed = by_id[str(failed_id)]
    assert failed["status"] == "UNAVAILABLE"
    assert failed["reason"] == "UPSTREAM_UNAVAILABLE"
    assert failed["attempts"] == 3
    assert failed["upstream_errors"] == ",".join(["zai:UPSTREAM_UNAVAILABLE"] * 3)

    # The retries and the failure were logged inside the call, with its id.
    inside = [
        e
        for e in entries(captured)
        if e.get("request_id") == failed_id and e["logger"] != "llmgateway.access"
    ]
    assert any("retrying" in str(e["message"]) for e in inside)
    assert any("call failed" in str(e["message"]) for e in inside)
    # Lines outside any call have no request id.
    assert all("request_id" not in e for e in entries(captured) if "listening" in str(e["message"]))


async def test_prompts_answers_and_keys_are_never_logged(
    settings: Settings, fake: FakeUpstream, captured: io.StringIO
) -> None:
    db = Database(settings.db)
    migrate(db)
    record, caller_key = KeyStore(db).create("log-test")
    db.close()
    metadata = (("authorization", f"Bearer {caller_key}"),)
    prompt = f"please repeat {MARKER} back to me"
    gateway = await start_gateway(settings, address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = pb_grpc.CompletionServiceStub(channel)
            answer = await stub.Complete(
                pb.CompleteRequest(model="zai/glm-4.7", messages=[user(prompt)]),
                metadata=metadata,
                timeout=10,
            )
            assert MARKER in answer.content  # the fake echoes it: the answer holds it too
            async for _ in stub.StreamComplete(
                pb.StreamCompleteRequest(
                    model="openrouter/openai/gpt-4o-mini", messages=[user(prompt)]
                ),
                metadata=metadata,
                timeout=10,
            ):
                pass
            # An upstream that quotes the request's Authorization header back.
            for model in ("zai/fault-echo-auth", "openrouter/x/fault-echo-auth", "zai/fault-reset"):
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.Complete(
                        pb.CompleteRequest(model=model, messages=[user(prompt)]),
                        metadata=metadata,
                        timeout=10,
                    )
            # A caller with a wrong key.
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Complete(
                    pb.CompleteRequest(model="zai/glm-4.7", messages=[user(prompt)]),
                    metadata=(("authorization", f"Bearer {caller_key}x"),),
                    timeout=10,
                )
    finally:
        await gateway.stop(grace=0)
    output = captured.getvalue()
    assert len(access_entries(captured)) == 6
    assert {e["key_id"] for e in access_entries(captured)} >= {record.id}
    for secret in (MARKER, caller_key, fake.openrouter_key, fake.zai_key):
        assert secret not in output


def test_text_lines_end_with_the_request_id_and_extra_fields() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("tests.text")
    handler = logs.make_handler("text", stream)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        token = logs.REQUEST_ID.set("abc123")
        logger.warning(
            "inside %s",
            "a call",
            extra={"fields": {"model": "zai/glm-4.7", "empty": "", "none": None, "zero": 0}},
        )
        logs.REQUEST_ID.reset(token)
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    inside, outside = stream.getvalue().splitlines()
    assert inside.endswith("tests.text: inside a call model=zai/glm-4.7 zero=0 request_id=abc123")
    assert outside.endswith("tests.text: outside")


def test_text_lines_write_numbers_and_flags_as_python_spells_them() -> None:
    # The access line's many numeric fields take a short path: the same text.
    fields = {"latency_ms": 1.5, "cost_usd": 1e-05, "zero": 0.0, "sticky": False, "n": -3}
    output = _logged_output(lambda logger: logger.info("done", extra={"fields": fields}))
    assert output.rstrip("\n").endswith(
        "done latency_ms=1.5 cost_usd=1e-05 zero=0.0 sticky=False n=-3"
    )


def test_json_lines_carry_extra_fields_and_tracebacks() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("tests.json")
    handler = logs.make_handler("json", stream)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("boom")  # a traceback to log
        except ValueError:
            logger.exception("failed", extra={"fields": {"attempts": 2, "when": object}})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    entry = json.loads(stream.getvalue())
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "tests.json"
    assert entry["message"] == "failed"
    assert entry["attempts"] == 2
    assert entry["when"] == str(object)
    assert "ValueError: boom" in entry["exception"]
    assert "request_id" not in entry


def test_log_format_setting(tmp_path: Path) -> None:
    assert Settings.load({}).log_format == "text"
    assert Settings.load({"LLMGATEWAY_LOG_FORMAT": "JSON"}).log_format == "json"
    config = tmp_path / "gateway.toml"
    config.write_text('[server]\nlog_format = "json"\n')
    assert Settings.load({}, config).log_format == "json"
    with pytest.raises(ConfigError, match="LLMGATEWAY_LOG_FORMAT"):
        Settings.load({"LLMGATEWAY_LOG_FORMAT": "xml"})


def test_serve_refuses_an_unknown_log_format() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llmgateway.server.process.cli", "serve", "--log-format", "xml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--log-format" in result.stderr


# What a text line must never carry raw: C0 controls, DEL, C1 controls, line and
# paragraph separators, bidi marks, embeddings, overrides and isolates, zero-width
# and byte-order marks.
ESCAPED_CHARS = [
    *(chr(code) for code in range(0x20)),
    "\x7f",
    *(chr(code) for code in range(0x80, 0xA0)),
    "\u2028",
    "\u2029",
    "\u061c",
    "\u200b",
    "\u200e",
    "\u200f",
    *(chr(code) for code in range(0x202A, 0x202F)),
    *(chr(code) for code in range(0x2066, 0x206A)),
    "\ufeff",
]
FORGED = "2026-12-01 00:00:00,000 INFO [1] llmgateway.access: call finished key_id=key_admin"
HOSTILE_MODEL = f"zai/glm\r\n{FORGED}\x1b[2J\x1b[31m\u202e\u2028\x85"
LINE_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \[\d+\] ")


def _logged_output(
    log: Callable[[logging.Logger], None],
    log_format: str = "text",
    name: str = "tests.text.escape",
) -> str:
    """What `log` writes through a logger of its own in `log_format`, at INFO."""
    stream = io.StringIO()
    logger = logging.getLogger(name)
    handler = logs.make_handler(log_format, stream)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        log(logger)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return stream.getvalue()


@pytest.mark.parametrize("char", ESCAPED_CHARS, ids=[f"U+{ord(c):04X}" for c in ESCAPED_CHARS])
def test_text_lines_escape_every_control_format_and_separator_character(char: str) -> None:
    output = _logged_output(
        lambda logger: logger.warning(
            "refused %s", f"a{char}b", extra={"fields": {"model": f"m{char}n", f"k{char}": 1}}
        )
    )
    line = output.removesuffix("\n")
    assert char not in line
    assert len(output.splitlines()) == 1
    assert "refused a\\" in line
    assert "model=m\\" in line


def test_a_hostile_value_cannot_forge_a_line_or_a_field() -> None:
    output = _logged_output(
        lambda logger: logger.info(
            "call failed: %s",
            HOSTILE_MODEL,
            extra={"fields": {"model": HOSTILE_MODEL, "note": 'a" key_id=key_admin x="'}},
        )
    )
    (line,) = output.splitlines()
    assert "\x1b" not in line
    assert LINE_START.match(line)
    assert line.count("llmgateway.access: call finished") == 2  # both inside the one line
    # Quoted logfmt-style, the inner quotes escaped: no second key_id field.
    assert 'note="a\\" key_id=key_admin x=\\""' in line


def test_text_tracebacks_are_escaped_and_indented_under_their_line() -> None:
    def log(logger: logging.Logger) -> None:
        try:
            raise ValueError(f"bad model {HOSTILE_MODEL}")
        except ValueError:
            logger.exception("failed")

    first, *rest = _logged_output(log).splitlines()
    assert first.endswith("tests.text.escape: failed")
    assert rest
    assert all(line.startswith("    ") for line in rest)  # only a record starts at column 0
    assert not any("\x1b" in line for line in rest)
    assert any("ValueError: bad model zai/glm" in line for line in rest)


def test_json_lines_keep_hostile_values_exactly_and_stay_one_line() -> None:
    output = _logged_output(
        lambda logger: logger.info(
            "call failed: %s", HOSTILE_MODEL, extra={"fields": {"model": HOSTILE_MODEL}}
        ),
        log_format="json",
        name="tests.json.hostile",
    )
    assert output.count("\n") == 1
    assert "\x1b" not in output  # JSON writes it as \u001b
    entry = json.loads(output)
    assert entry["model"] == HOSTILE_MODEL
    assert entry["message"] == f"call failed: {HOSTILE_MODEL}"


@pytest.fixture
def text_captured() -> Iterator[io.StringIO]:
    """Everything logged at INFO and above, as text lines."""
    yield from _capture_root("text")


def _issue_key(settings: Settings) -> str:
    db = Database(settings.db)
    migrate(db)
    _, caller_key = KeyStore(db).create("log-injection-test")
    db.close()
    return caller_key


def _key_id(settings: Settings) -> str:
    db = Database(settings.db)
    try:
        return KeyStore(db).list()[0].id
    finally:
        db.close()


async def test_a_crlf_ansi_model_name_never_forges_a_text_log_line(
    settings: Settings, fake: FakeUpstream, text_captured: io.StringIO
) -> None:
    caller_key = _issue_key(settings)
    request = pb.CompleteRequest(model=HOSTILE_MODEL, messages=[user("hi")])
    async with gateway_stub(settings) as stub:
        # Before authentication: no key at all.
        with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
            await stub.Complete(request, timeout=10)
        # After it: refused by validation.
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.Complete(
                request, metadata=(("authorization", f"Bearer {caller_key}"),), timeout=10
            )
    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    output = text_captured.getvalue()
    assert "\x1b" not in output
    assert "\r" not in output
    lines = output.splitlines()
    assert lines == output.split("\n")[:-1]  # no other line separator either
    assert all(LINE_START.match(line) for line in lines), lines
    access = [line for line in lines if f"{logs.ACCESS_LOGGER}: call finished" in line]
    assert len(access) == 2
    assert all(line.count("call finished") == 2 for line in access)  # the forged one is inside
    assert fake.requests == []


async def test_a_hostile_model_name_never_becomes_a_metric_label(
    settings: Settings, fake: FakeUpstream
) -> None:
    metered = dataclasses.replace(settings, metrics_address="127.0.0.1:0")
    gateway = await start_gateway(metered, address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = pb_grpc.CompletionServiceStub(channel)
            for model in (HOSTILE_MODEL, "zai/glm-4.7\x1b[31m", "zai/glm-4.7\u202e"):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Complete(
                        pb.CompleteRequest(model=model, messages=[user("hi")]), timeout=10
                    )
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert gateway.metrics_server is not None
        async with httpx.AsyncClient() as client:
            scraped = await client.get(
                f"http://127.0.0.1:{gateway.metrics_server.port}/metrics", timeout=10
            )
    finally:
        await gateway.stop(grace=0)
    assert scraped.status_code == 200
    assert 'model="other"' in scraped.text
    for char in ("\x1b", "\u202e", "\u2028", "\x85", "\r"):
        assert char not in scraped.text
    assert fake.requests == []


def test_a_refusal_flood_logs_one_line_per_interval_and_counts_the_rest() -> None:
    now = [100.0]
    stream = io.StringIO()
    logger = logging.getLogger("tests.sampled")
    logger.addHandler(logs.make_handler("json", stream))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    sampled = logs.SampledLog(logger, interval=1.0, clock=lambda: now[0])
    try:
        for _ in range(1000):
            sampled.info("UNAUTHENTICATED", "refused", sampled=True, fields={"n": 1})
            now[0] += 0.0005  # 1,000 refusals in half a second
        now[0] += 1.0
        sampled.info("UNAUTHENTICATED", "refused", sampled=True)
        for _ in range(5):
            sampled.info("UNAUTHENTICATED", "refused", sampled=True)
        # Lines about callers that were let in are never sampled, whatever their status.
        sampled.info("UNAVAILABLE", "failed", sampled=False)
        sampled.info("UNAVAILABLE", "failed", sampled=False)
        sampled.flush()  # at shutdown: the count still held back
    finally:
        logger.handlers.clear()
        logger.propagate = True
    written = entries(stream)
    assert [(e["message"], e.get("suppressed")) for e in written] == [
        ("refused", 0),
        ("refused", 999),
        ("failed", None),
        ("failed", None),
        ("5 more UNAUTHENTICATED lines in the last 1 s were not written one by one", 5),
    ]
    assert written[0]["n"] == 1


async def test_a_count_held_back_is_written_when_its_interval_ends() -> None:
    reported: list[int] = []
    written = asyncio.Event()

    def report(count: int) -> None:
        reported.append(count)
        written.set()

    sampler = logs.LogSampler(0.05, report)
    assert sampler.admit() == (True, 0)
    for _ in range(7):
        assert sampler.admit() == (False, 0)
    await asyncio.wait_for(written.wait(), timeout=10)
    assert reported == [7]
    assert sampler.admit() == (True, 0)  # a new interval, nothing left to report


def test_a_sampler_outliving_its_event_loop_still_reports_on_the_next() -> None:
    # servicer's sampler lives as long as the module: across a server's
    # restart (or tests), the loop its timer was set on closes unfired.
    now = [0.0]
    reported: list[int] = []
    written: list[asyncio.Event] = []

    def report(count: int) -> None:
        reported.append(count)
        for event in written:
            event.set()

    sampler = logs.LogSampler(60.0, report, clock=lambda: now[0])

    async def held_back(count: int) -> None:
        for _ in range(count):
            assert sampler.admit() == (False, 0)

    async def held_back_then_reported() -> None:
        written.append(asyncio.Event())
        now[0] = 59.99  # the same interval, about to end
        await held_back(2)
        await asyncio.wait_for(written[0].wait(), timeout=10)

    assert sampler.admit() == (True, 0)
    asyncio.run(held_back(3))  # its timer, a minute away, dies with its loop
    asyncio.run(held_back_then_reported())
    assert reported == [5]


async def test_a_flood_during_a_state_outage_logs_bounded_lines_but_key_holders_in_full(
    settings: Settings,
    fake: FakeUpstream,
    captured: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = _issue_key(settings)
    # The live key stays cached through the test, however slow the machine.
    monkeypatch.setattr(access, "CACHE_SECONDS", 3600.0)
    failing = False
    finds = 0
    found = KeyStore.find

    async def find(self: KeyStore, token: str) -> CallerKey | None:
        nonlocal finds
        if not failing:
            return await found(self, token)
        finds += 1
        raise StateUnavailableError("the state database is unavailable")

    monkeypatch.setattr(KeyStore, "find", find)
    request = pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")])

    async def outcome(stub: pb_grpc.CompletionServiceAsyncStub, token: str) -> str:
        try:
            await stub.Complete(
                request, metadata=(("authorization", f"Bearer {token}"),), timeout=30
            )
        except grpc.aio.AioRpcError as error:
            return str(rich_status(error).info.reason)
        return "OK"

    async with gateway_stub(settings) as stub:
        assert await outcome(stub, key) == "OK"  # the key is known, and the gateway closed
        failing = True
        captured.seek(0)
        captured.truncate()
        started = time.monotonic()
        # Tokens that cannot be keys, and well-formed ones nobody issued.
        tokens = [f"not-a-key-{i}" if i % 2 else f"lgw_{i:043d}" for i in range(500)]
        reasons = await asyncio.gather(*(outcome(stub, token) for token in tokens))
        elapsed = time.monotonic() - started
        # A key holder's failure during the flood.
        bad = stub.Complete(
            pb.CompleteRequest(model="zai/glm-4.7"),
            metadata=(("authorization", f"Bearer {key}"),),
            timeout=30,
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await bad
        bad_id = dict(await bad.initial_metadata())["x-request-id"]
        during = entries(captured)
    assert reasons[1::2] == ["UNAUTHENTICATED"] * 250
    assert set(reasons[0::2]) == {"GATEWAY_STATE_UNAVAILABLE"}
    intervals = int(elapsed / logs.REFUSAL_LOG_INTERVAL) + 1
    # The look-ups under way when it failed, then one per retry interval.
    retries = int(elapsed / access.OUTAGE_RETRY_SECONDS) + 1
    assert finds <= access.MAX_CONCURRENT_LOOKUPS + retries
    # Two statuses, two kinds of line (access, "call failed"): each at most one
    # in full and one count per interval; and the key holder's two lines.
    flood = [e for e in during if e.get("request_id") != bad_id]
    assert len(flood) <= 2 * 2 * 2 * intervals, [e["message"] for e in flood]
    mine = [e for e in during if e.get("request_id") == bad_id]
    assert {str(e["message"]).split(":")[0] for e in mine} == {"call finished", "call failed"}
    line = next(e for e in mine if e["logger"] == logs.ACCESS_LOGGER)
    assert (line["status"], line["key_id"]) == ("INVALID_ARGUMENT", _key_id(settings))
    assert all("suppressed" not in e for e in mine)


async def test_log_records_per_refused_call_are_bounded(
    settings: Settings, fake: FakeUpstream, captured: io.StringIO
) -> None:
    _issue_key(settings)
    refusals = 300
    request = pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")])

    async def refused(stub: pb_grpc.CompletionServiceAsyncStub, i: int) -> grpc.StatusCode:
        # Well-formed keys nobody issued, and tokens that cannot be keys.
        token = f"lgw_{i:043d}" if i % 2 else f"not-a-key-{i}"
        try:
            await stub.Complete(
                request, metadata=(("authorization", f"Bearer {token}"),), timeout=30
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    async with gateway_stub(settings) as stub:
        captured.seek(0)
        captured.truncate()  # start-up lines do not count
        started = time.monotonic()
        codes = await asyncio.gather(*(refused(stub, i) for i in range(refusals)))
        elapsed = time.monotonic() - started
        during = entries(captured)
    assert set(codes) == {grpc.StatusCode.UNAUTHENTICATED}
    # Two sampled kinds of line (the access line, "call failed"): each at most
    # one in full per interval begun, and one count of the rest per interval.
    intervals = int(elapsed / logs.REFUSAL_LOG_INTERVAL) + 1
    assert len(during) <= 2 * 2 * intervals, [e["message"] for e in during]
    first = next(e for e in during if e["logger"] == logs.ACCESS_LOGGER)
    assert first["status"] == "UNAUTHENTICATED"
    assert first["suppressed"] == 0


def test_usage_tables_escape_what_callers_sent(capsys: pytest.CaptureFixture[str]) -> None:
    admin_cli._table(["model", "calls"], [[HOSTILE_MODEL, "3"], ["zai/glm-4.7", "12"]])
    printed = capsys.readouterr().out
    assert "\x1b" not in printed
    assert "\u202e" not in printed
    assert len(printed.splitlines()) == 3  # the header and one line per row


async def test_every_refused_call_is_counted_in_the_access_log_once_the_gateway_stops(
    settings: Settings, fake: FakeUpstream, captured: io.StringIO
) -> None:
    # Sampling holds counts back for up to an interval; stopping must write
    # them, or an operator under attack undercounts the refusals.
    _issue_key(settings)
    refusals = 40
    request = pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")])
    async with gateway_stub(settings) as stub:
        captured.seek(0)
        captured.truncate()
        for i in range(refusals):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Complete(
                    request, metadata=(("authorization", f"Bearer nope-{i}"),), timeout=30
                )
    access = [e for e in entries(captured) if e["logger"] == logs.ACCESS_LOGGER]
    written_in_full = sum(1 for e in access if e["message"] == "call finished")
    held_back = sum(int(str(e.get("suppressed", 0))) for e in access)
    assert written_in_full + held_back == refusals


# -- routed calls on the access line ------------------------------------------------------


def _access_line(record: CallRecord) -> dict[str, object]:
    stream = io.StringIO()
    logger = logging.getLogger("tests.access.routing")
    logger.propagate = False
    handler = logs.make_handler("json", stream)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logs.AccessLog(logger).call_finished(record)
    finally:
        logger.removeHandler(handler)
    (line,) = entries(stream)
    return line


def test_a_routed_call_says_its_route_task_and_whether_it_stayed_or_escalated() -> None:
    record = CallRecord(
        "r1",
        "Complete",
        requested_model="route/default",
        authenticated=True,
        route="route/default",
        task="code",
        task_source="rule:code-fences",
        sticky=True,
        escalated=True,
    )
    line = _access_line(record)
    assert {k: line[k] for k in ("route", "task", "task_source", "sticky", "escalated")} == {
        "route": "route/default",
        "task": "code",
        "task_source": "rule:code-fences",
        "sticky": True,
        "escalated": True,
    }


def test_a_named_model_line_has_no_route_fields_and_a_callers_task_only_when_set() -> None:
    plain = _access_line(
        CallRecord("r1", "Complete", requested_model="zai/glm-4.7", authenticated=True)
    )
    assert not {"route", "task", "task_source", "sticky", "escalated"} & set(plain)
    tasked = _access_line(
        CallRecord(
            "r2",
            "Complete",
            requested_model="zai/glm-4.7",
            authenticated=True,
            task="translation",
            task_source="caller",
        )
    )
    assert (tasked["task"], tasked["task_source"]) == ("translation", "caller")
    assert "route" not in tasked
