"""No provider key leaves the gateway, whatever the upstream quotes it in.

A gateway configured with recognisable canary keys is pointed at a fake upstream
that echoes the Authorization header it was sent in every place an upstream or
a proxy in front of it could: the error's code, its metadata, OpenRouter's
`metadata.raw` and `provider_name`, a non-JSON page, a bare JSON string, a
mid-stream error event, and a 200 answer's id, model, provider and finish
reason. Every path out is then searched for the canary: the caller's status,
its trailing metadata, the answer and stream events, the gateway's logs, the
ledger's database files, the trace spans and the metrics.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmgateway.server.process.server import start_gateway
from llmgateway.server.providers.redaction import PARTIAL_MIN, REDACTED, Redactor
from llmgateway.testing.fake_upstream import FakeUpstream
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from tests.conftest import user
from tests.test_ledger import ledger_rows

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from llmgateway.server.config import Settings

# Canary keys: fake, and recognisable anywhere, whole or in part. The Z.AI one
# has Z.AI's `<id>.<secret>` form but not its hex id, so only the configured key
# (not a key-shaped pattern) can remove it.
OPENROUTER_CANARY = "sk-or-v1-CANARY" + "0a1b2c3d4e5f6789" * 3 + "CANARYEND"
ZAI_CANARY = "CANARYzai00000000000000000000000.CanaryTAILsecret"
# Any of these in any output is a leak (a key's start, its end, or its secret
# half), and so is any run of PARTIAL_MIN characters of either key.
MARKS = (
    "CANARY",
    "CanaryTAIL",
    "0a1b2c3d4e5f6789",
    *{
        key[at : at + PARTIAL_MIN]
        for key in (OPENROUTER_CANARY, ZAI_CANARY)
        for at in range(len(key) - PARTIAL_MIN + 1)
    },
)

ERROR_FAULTS = [
    "leak-code",
    "leak-error-type",
    "leak-text-body",
    "leak-bare-string",
    "leak-string-error",
    "leak-long-message",
    "leak-midstream",
    "echo-auth",
    "leak-tail",
    "leak-middle",
    "leak-zai-secret",
]
OPENROUTER_ONLY = ["leak-raw", "leak-escaped-raw"]
# Faults that put the key across the point where the message is cut to length.
STRADDLING = {"leak-text-body", "leak-string-error", "leak-long-message"}
# (model prefix, Z.AI endpoint): both providers, and Z.AI's two endpoints.
TARGETS = [
    ("openrouter/x/fault-", common.ZAI_ENDPOINT_UNSPECIFIED),
    ("zai/fault-", common.ZAI_ENDPOINT_GENERAL),
    ("zai/fault-", common.ZAI_ENDPOINT_CODING),
]
CASES = [
    pytest.param(prefix + fault, endpoint, rpc, id=f"{rpc}:{prefix}{fault}:{endpoint}")
    for fault in [*ERROR_FAULTS, *OPENROUTER_ONLY, "leak-answer"]
    for prefix, endpoint in TARGETS
    for rpc in ("unary", "stream")
    if not (fault in OPENROUTER_ONLY and prefix.startswith("zai"))
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(openrouter_key=OPENROUTER_CANARY, zai_key=ZAI_CANARY) as upstream:
        yield upstream


@dataclasses.dataclass
class Seen:
    """Everything that left the gateway during one call."""

    texts: list[str] = dataclasses.field(default_factory=list)
    blobs: list[bytes] = dataclasses.field(default_factory=list)
    code: grpc.StatusCode = grpc.StatusCode.OK
    message: str = ""

    def add(self, value: str | bytes) -> None:
        if isinstance(value, bytes):
            self.blobs.append(value)
        else:
            self.texts.append(value)

    def leaks(self) -> list[str]:
        found = [
            f"{mark!r} in {text[:300]!r}" for text in self.texts for mark in MARKS if mark in text
        ]
        found += [
            f"{mark!r} in bytes {blob[:300]!r}"
            for blob in self.blobs
            for mark in MARKS
            if mark.encode() in blob
        ]
        return found


async def _call(
    stub: pb_grpc.CompletionServiceAsyncStub,
    model: str,
    endpoint: common.ZaiEndpoint.ValueType,
    rpc: str,
    seen: Seen,
) -> None:
    zai = common.ZaiOptions(endpoint=endpoint)
    call: (
        grpc.aio.UnaryUnaryCall[pb.CompleteRequest, pb.CompleteResponse]
        | grpc.aio.UnaryStreamCall[pb.StreamCompleteRequest, pb.StreamCompleteResponse]
    )
    try:
        if rpc == "unary":
            call = stub.Complete(
                pb.CompleteRequest(model=model, messages=[user("hi")], zai=zai), timeout=10
            )
            seen.add((await call).SerializeToString())
        else:
            call = stub.StreamComplete(
                pb.StreamCompleteRequest(model=model, messages=[user("hi")], zai=zai), timeout=10
            )
            async for event in call:
                seen.add(event.SerializeToString())
    except grpc.aio.AioRpcError as error:
        seen.code = error.code()
        seen.message = error.details() or ""
        seen.add(seen.message)
        seen.add(str(error))
        for _, value in error.trailing_metadata() or ():
            seen.add(value)
    for _, value in await call.initial_metadata() or ():
        seen.add(value)


def _files(directory: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()]


@pytest.mark.parametrize(("model", "endpoint", "rpc"), CASES)
async def test_no_path_out_of_the_gateway_carries_a_provider_key(
    model: str,
    endpoint: common.ZaiEndpoint.ValueType,
    rpc: str,
    settings: Settings,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # INFO and above everywhere (gRPC's own DEBUG lines are noise), and all of the gateway's.
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="llmgateway.server")
    state = tmp_path / "state"
    state.mkdir()
    exporter = InMemorySpanExporter()
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(exporter))
    gateway = await start_gateway(
        dataclasses.replace(settings, db=str(state / "state.db"), metrics_address="127.0.0.1:0"),
        address="127.0.0.1:0",
        tracer_provider=tracer,
    )
    seen = Seen()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            await _call(pb_grpc.CompletionServiceStub(channel), model, endpoint, rpc, seen)
        from prometheus_client import generate_latest

        assert gateway.metrics is not None
        seen.add(generate_latest(gateway.metrics.registry))
    finally:
        await gateway.stop(grace=1)
        tracer.shutdown()

    for record in caplog.records:
        seen.add(logging.Formatter().format(record))
        seen.add(repr(vars(record)))
    spans = exporter.get_finished_spans()
    assert spans, "tracing recorded nothing"
    for span in spans:
        seen.add(span.to_json())
    rows = ledger_rows(str(state / "state.db"))
    assert len(rows) == 1
    seen.blobs.extend(_files(state))

    assert seen.leaks() == []
    if model.endswith("leak-answer"):
        assert seen.code == grpc.StatusCode.OK
        assert rows[0]["served_model"]
    else:
        assert seen.code != grpc.StatusCode.OK
        if model.rsplit("fault-", 1)[1] in STRADDLING:
            # The key began just before the cut: what is left of the message ends
            # where the key began, and not one character of the key follows.
            assert "Bearer" in seen.message
        else:
            # Redacted, not dropped: the caller still learns what the upstream objected
            # to (in the status message, or in ErrorInfo's metadata in the details).
            assert "[redacted]" in seen.message or any(b"[redacted]" in b for b in seen.blobs)


async def test_every_provider_scrubs_every_providers_key(gateway, fake):
    # A proxy in front of several providers could quote any of their keys:
    # each provider's redactor holds all seven providers' configured keys.
    keys = [fake.openrouter_key, fake.zai_key, *(k for k in fake.keys.values() if k)]
    assert len(keys) >= 6  # Ollama runs without a key here
    assert len(gateway.providers) == 7
    for provider in gateway.providers.values():
        for key in keys:
            assert provider.redactor.text(f"quoted {key} here") == f"quoted {REDACTED} here"
            assert provider.redactor.content(f"echo: {key}") == f"echo: {REDACTED}"


def test_a_unary_refusal_and_every_reasoning_detail_field_are_scrubbed() -> None:
    # Redactor.response is what the core applies to every unary answer: the
    # contract's refusal and reasoning details are answer text like content.
    redactor = Redactor((OPENROUTER_CANARY, ZAI_CANARY))
    response = pb.CompleteResponse(
        content="fine",
        refusal=f"I will not repeat {OPENROUTER_CANARY}.",
        reasoning_details=[
            common.ReasoningDetail(
                provider=common.PROVIDER_ANTHROPIC,
                kind=common.REASONING_DETAIL_KIND_THINKING,
                text=f"the header said {ZAI_CANARY}",
                signature=f"sig{OPENROUTER_CANARY}sig",
                index=0,
            ),
            common.ReasoningDetail(
                provider=common.PROVIDER_OPENROUTER,
                kind=common.REASONING_DETAIL_KIND_OPENROUTER,
                raw_json=f'{{"type":"reasoning.text","text":"{ZAI_CANARY}"}}',
                tool_call_id=f"call_{OPENROUTER_CANARY}",
                index=1,
            ),
        ],
    )
    wire = redactor.response(response).SerializeToString()
    assert [mark for mark in MARKS if mark.encode() in wire] == []
    assert response.refusal == f"I will not repeat {REDACTED}."
    thinking, opaque = response.reasoning_details
    assert thinking.text == f"the header said {REDACTED}"
    assert thinking.signature == f"sig{REDACTED}sig"
    assert opaque.raw_json == f'{{"type":"reasoning.text","text":"{REDACTED}"}}'
    assert opaque.tool_call_id == f"call_{REDACTED}"
    # Everything else is left exactly as it was.
    assert (response.content, thinking.kind, thinking.index, opaque.index) == (
        "fine",
        common.REASONING_DETAIL_KIND_THINKING,
        0,
        1,
    )
