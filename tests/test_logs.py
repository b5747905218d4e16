"""Structured logs: the request id on every line of a call, one access line per call,
and no prompt, answer or key in any line."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from typing import TYPE_CHECKING

import grpc
import pytest
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

from service import logs
from service.config import ConfigError, Settings
from service.server import start_gateway
from service.state.db import Database
from service.state.keys import KeyStore
from service.state.schema import migrate
from tests.conftest import user

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from fake_upstream import FakeUpstream

MARKER = "zebra-marmalade-4417"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Everything logged at INFO and above (the default), as JSON lines."""
    stream = io.StringIO()
    handler = logs.make_handler("json", stream)
    root = logging.getLogger()
    saved = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(saved)


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

    by_id = {str(e["request_id"]): e for e in access_entries(captured)}
    assert set(by_id) == {unary_id, stream_id, failed_id}
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
        [sys.executable, "-m", "service.cli", "serve", "--log-format", "xml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--log-format" in result.stderr
