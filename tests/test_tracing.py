"""OpenTelemetry tracing: a SERVER span per call, a CLIENT span per upstream attempt."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from typing import TYPE_CHECKING

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from llmgateway.server.config import ConfigError, Settings
from llmgateway.server.observability import tracing
from llmgateway.server.observability.observe import CallRecord
from llmgateway.server.process.server import start_gateway
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from tests.conftest import user

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from llmgateway.testing.fake_upstream import FakeUpstream

MARKER = "quokka-lantern-9931"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
CALLER_KEY = "lgw_caller-key-that-must-not-leak"


@dataclasses.dataclass
class Traced:
    stub: pb_grpc.CompletionServiceAsyncStub
    exporter: InMemorySpanExporter


@pytest.fixture
async def traced(settings: Settings) -> AsyncIterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    gateway = await start_gateway(settings, address="127.0.0.1:0", tracer_provider=provider)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            yield Traced(pb_grpc.CompletionServiceStub(channel), exporter)
    finally:
        await gateway.stop(grace=0)
        provider.shutdown()


def by_kind(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind == kind]


def assert_nothing_secret(spans: tuple[ReadableSpan, ...], fake: FakeUpstream) -> None:
    for span in spans:
        texts = [span.name, *(str(v) for v in (span.attributes or {}).values())]
        texts += [str(span.status.description or "")]
        texts += [str(e.attributes) for e in span.events]
        for text in texts:
            for secret in (MARKER, CALLER_KEY, fake.openrouter_key, fake.zai_key, "Bearer"):
                assert secret not in text, (span.name, text)


async def test_a_unary_call_makes_a_server_span_under_the_callers_trace_and_a_client_child(
    traced: Traced, fake: FakeUpstream
) -> None:
    request = pb.CompleteRequest(
        model="zai/glm-4.7",
        messages=[user(f"say {MARKER}")],
        sampling=common.SamplingParams(max_tokens=300, temperature=0.5),
    )
    call = traced.stub.Complete(
        request,
        metadata=(
            ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),
            ("authorization", f"Bearer {CALLER_KEY}"),
        ),
        timeout=10,
    )
    answer = await call
    request_id = dict(await call.initial_metadata())["x-request-id"]
    spans = traced.exporter.get_finished_spans()
    (server,) = by_kind(spans, SpanKind.SERVER)
    (client,) = by_kind(spans, SpanKind.CLIENT)

    assert server.name == "chat zai/glm-4.7"
    assert server.context is not None
    assert f"{server.context.trace_id:032x}" == TRACE_ID
    assert server.parent is not None
    assert f"{server.parent.span_id:016x}" == PARENT_ID
    assert server.parent.is_remote
    assert server.status.status_code == StatusCode.UNSET
    assert dict(server.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "llmgateway.v1.CompletionService",
        "rpc.method": "Complete",
        "rpc.grpc.status_code": 0,
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "zai/glm-4.7",
        "gen_ai.request.max_tokens": 300,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.provider.name": "z.ai",
        "gen_ai.system": "z.ai",
        "gen_ai.response.model": "zai/glm-4.7",
        "gen_ai.usage.input_tokens": answer.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": answer.usage.completion_tokens,
        "llmgateway.request_id": request_id,
        "llmgateway.attempts": 1,
        "llmgateway.fallbacks": 0,
        "llmgateway.cost_usd": pytest.approx(answer.usage.cost_usd),
    }

    assert client.name == "chat glm-4.7"
    assert client.parent is not None
    assert client.parent.span_id == server.context.span_id
    assert client.context is not None
    assert client.context.trace_id == server.context.trace_id
    attributes = dict(client.attributes or {})
    assert attributes == {
        "http.request.method": "POST",
        "http.response.status_code": 200,
        "url.full": f"{fake.zai_base_url}/chat/completions",
        "server.address": "127.0.0.1",
        "server.port": fake.port,
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "z.ai",
        "gen_ai.system": "z.ai",
        "gen_ai.request.model": "glm-4.7",
        "gen_ai.request.max_tokens": 300,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.response.model": "glm-4.7",
        "gen_ai.response.id": answer.id,
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": answer.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": answer.usage.completion_tokens,
        "llmgateway.stream": False,
    }
    assert client.start_time is not None
    assert server.start_time is not None
    assert server.end_time is not None
    assert client.end_time is not None
    assert server.start_time <= client.start_time <= client.end_time <= server.end_time
    assert_nothing_secret(spans, fake)


async def test_a_streamed_call_without_traceparent_starts_a_trace(
    traced: Traced, fake: FakeUpstream
) -> None:
    done = None
    async for event in traced.stub.StreamComplete(
        pb.StreamCompleteRequest(
            model="openrouter/openai/gpt-4o-mini", messages=[user(f"say {MARKER}")]
        ),
        timeout=10,
    ):
        if event.HasField("done"):
            done = event.done
    assert done is not None
    spans = traced.exporter.get_finished_spans()
    (server,) = by_kind(spans, SpanKind.SERVER)
    (client,) = by_kind(spans, SpanKind.CLIENT)
    assert server.parent is None
    assert server.name == "chat openrouter/openai/gpt-4o-mini"
    assert server.attributes is not None
    assert server.attributes["rpc.method"] == "StreamComplete"
    assert server.attributes["gen_ai.provider.name"] == "openrouter"
    assert server.attributes["gen_ai.usage.output_tokens"] == done.usage.completion_tokens
    assert "gen_ai.request.max_tokens" not in server.attributes
    assert server.context is not None
    assert client.parent is not None
    assert client.parent.span_id == server.context.span_id
    assert client.name == "chat openai/gpt-4o-mini"
    assert client.attributes is not None
    assert client.attributes["llmgateway.stream"] is True
    assert client.attributes["http.response.status_code"] == 200
    assert client.attributes["gen_ai.response.model"] == "openai/gpt-4o-mini"
    assert client.attributes["gen_ai.usage.output_tokens"] == done.usage.completion_tokens
    assert client.attributes["url.full"] == f"{fake.openrouter_base_url}/chat/completions"
    assert client.status.status_code == StatusCode.UNSET
    assert_nothing_secret(spans, fake)


async def test_each_attempt_has_its_span_and_failures_carry_their_reason(
    traced: Traced, fake: FakeUpstream
) -> None:
    answer = await traced.stub.Complete(
        pb.CompleteRequest(model="zai/fault-flaky", messages=[user(MARKER)]), timeout=10
    )
    assert answer.attempts == 3
    spans = traced.exporter.get_finished_spans()
    (server,) = by_kind(spans, SpanKind.SERVER)
    attempts = sorted(by_kind(spans, SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    assert len(attempts) == 3
    assert server.context is not None
    assert all(
        a.parent is not None and a.parent.span_id == server.context.span_id for a in attempts
    )
    for failed in attempts[:2]:
        assert failed.status.status_code == StatusCode.ERROR
        assert failed.attributes is not None
        assert failed.attributes["error.type"] == "UPSTREAM_UNAVAILABLE"
        assert failed.attributes["http.response.status_code"] == 502
    assert attempts[2].status.status_code == StatusCode.UNSET
    assert server.attributes is not None
    assert server.attributes["llmgateway.attempts"] == 3

    traced.exporter.clear()
    with pytest.raises(grpc.aio.AioRpcError):
        await traced.stub.Complete(
            pb.CompleteRequest(model="openrouter/x/fault-echo-auth", messages=[user(MARKER)]),
            timeout=10,
        )
    spans = traced.exporter.get_finished_spans()
    (server,) = by_kind(spans, SpanKind.SERVER)
    (client,) = by_kind(spans, SpanKind.CLIENT)
    assert server.attributes is not None
    assert server.attributes["error.type"] == "UPSTREAM_REJECTED_REQUEST"
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    # The caller's mistake is not the server's error (gRPC conventions).
    assert server.status.status_code == StatusCode.UNSET
    assert client.status.status_code == StatusCode.ERROR
    assert client.attributes is not None
    assert client.attributes["http.response.status_code"] == 400
    assert_nothing_secret(spans, fake)


async def test_a_cancelled_stream_ends_both_spans(traced: Traced, fake: FakeUpstream) -> None:
    fake.slow_chunk_delay = 0.02
    call = traced.stub.StreamComplete(
        pb.StreamCompleteRequest(model="zai/fault-slow", messages=[user("go")]), timeout=30
    )
    assert isinstance(await call.read(), pb.StreamCompleteResponse)
    call.cancel()
    for _ in range(200):
        spans = traced.exporter.get_finished_spans()
        if len(spans) == 2:
            break
        await asyncio.sleep(0.02)
    (server,) = by_kind(spans, SpanKind.SERVER)
    (client,) = by_kind(spans, SpanKind.CLIENT)
    assert server.attributes is not None
    assert server.attributes["error.type"] == "CANCELLED"
    assert client.attributes is not None
    assert client.attributes["error.type"] == "cancelled"


async def test_calls_refused_before_going_upstream_have_only_the_server_span(
    traced: Traced,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await traced.stub.Complete(
            pb.CompleteRequest(model="no-such-model", messages=[user("hi")]), timeout=10
        )
    (server,) = traced.exporter.get_finished_spans()
    assert server.kind == SpanKind.SERVER
    assert server.attributes is not None
    assert server.attributes["error.type"] == "UNKNOWN_MODEL"


def test_url_attributes_never_hold_credentials() -> None:
    attributes = tracing._url_attributes("https://user:secret@api.example.test/v1/chat?key=abc")
    assert attributes == {
        "url.full": "https://REDACTED:REDACTED@api.example.test/v1/chat?key=REDACTED",
        "server.address": "api.example.test",
        "server.port": 443,
    }


def test_tracing_is_off_unless_asked_for() -> None:
    assert Settings.load({}).tracing == "off"
    assert tracing.Tracing.create("off") is None
    assert Settings.load({"LLMGATEWAY_TRACING": "OTLP"}).tracing == "otlp"
    assert Settings.load({"LLMGATEWAY_TRACING": "none"}).tracing == "off"
    with pytest.raises(ConfigError, match="LLMGATEWAY_TRACING"):
        Settings.load({"LLMGATEWAY_TRACING": "jaeger"})
    # Outside a traced call, providers make no spans.
    request = pb.CompleteRequest(model="zai/glm-4.7")
    assert tracing.upstream("zai", "http://x", request, "glm-4.7", stream=False) is None


def test_a_gateway_without_tracing_or_metrics_imports_neither() -> None:
    script = (
        "import sys, llmgateway.server.process.server, llmgateway.server.providers.openai_compatible.core, llmgateway.server.process.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'opentelemetry', 'prometheus_client'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def _spans_of(work: Callable[[tracing.CallTrace, CallRecord], None]) -> tuple[ReadableSpan, ...]:
    """The spans `work(call_trace)` makes, with an in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traced_calls = tracing.Tracing.create("off", provider)
    assert traced_calls is not None
    record = CallRecord(request_id="r1", method="Complete", requested_model="m", started_at=1.0)
    call = traced_calls.start_call(record, ())
    work(call, record)
    provider.shutdown()
    return exporter.get_finished_spans()


@pytest.mark.parametrize(
    ("provider_id", "name"),
    [
        ("openrouter", "openrouter"),
        ("zai", "z.ai"),
        ("openai", "openai"),
        ("anthropic", "anthropic"),
        ("gemini", "gcp.gemini"),
        ("groq", "groq"),
        ("ollama", "ollama"),
    ],
)
def test_every_provider_has_its_gen_ai_provider_name(provider_id: str, name: str) -> None:
    # The OpenTelemetry GenAI registry's values where it has one.
    def work(call: tracing.CallTrace, record: CallRecord) -> None:
        request = pb.CompleteRequest(
            model=f"{provider_id}/m", sampling=common.SamplingParams(max_tokens=77, top_p=0.9)
        )
        call.upstream(provider_id, "https://api.test/v1/x", request, "m", stream=False).end(None)
        record.provider = provider_id
        record.served_model = f"{provider_id}/m"
        call.finish(record)

    spans = _spans_of(work)
    (client,) = by_kind(spans, SpanKind.CLIENT)
    (server,) = by_kind(spans, SpanKind.SERVER)
    for span in (client, server):
        assert span.attributes is not None
        assert span.attributes["gen_ai.provider.name"] == name
        assert span.attributes["gen_ai.system"] == name
    # The request's settings come from the gateway's own request, whatever the wire.
    assert client.attributes is not None
    assert client.attributes["gen_ai.request.max_tokens"] == 77
    assert client.attributes["gen_ai.request.top_p"] == pytest.approx(0.9)


def test_cache_reads_and_writes_are_span_attributes_when_reported() -> None:
    def work(call: tracing.CallTrace, record: CallRecord) -> None:
        request = pb.CompleteRequest(model="anthropic/claude-sonnet-4-5")
        url = "https://api.anthropic.test/v1/messages"
        upstream = call.upstream("anthropic", url, request, "claude-sonnet-4-5", stream=False)
        usage = common.Usage(
            prompt_tokens=1532, completion_tokens=9, cached_tokens=1111, cache_write_tokens=418
        )
        upstream.answered("anthropic/claude-sonnet-4-5-20250929", "msg_1", "end_turn", usage)
        upstream.end(None)
        record.provider = "anthropic"
        record.served_model = "anthropic/claude-sonnet-4-5-20250929"
        record.prompt_tokens, record.completion_tokens = 1532, 9
        record.cached_tokens, record.cache_write_tokens = 1111, 418
        call.finish(record)

    spans = _spans_of(work)
    for span in spans:
        assert span.attributes is not None
        assert span.attributes["gen_ai.usage.input_tokens"] == 1532
        assert span.attributes["gen_ai.usage.cache_read.input_tokens"] == 1111
        assert span.attributes["gen_ai.usage.cache_creation.input_tokens"] == 418
    (client,) = by_kind(spans, SpanKind.CLIENT)
    assert client.attributes is not None
    assert client.attributes["gen_ai.response.model"] == "claude-sonnet-4-5-20250929"


def test_a_key_in_a_url_query_never_reaches_a_span() -> None:
    # No provider puts its key in a URL (Gemini's goes in x-goog-api-key), and
    # were one to, url.full keeps only the query's names.
    key = "AIzaFakeGeminiKey0000000000000000000000"

    def work(call: tracing.CallTrace, record: CallRecord) -> None:
        url = f"https://gemini.test/v1beta/models/g:generateContent?key={key}&alt=sse"
        call.upstream("gemini", url, pb.CompleteRequest(), "g", stream=True).end(None)
        call.finish(record)

    spans = _spans_of(work)
    (client,) = by_kind(spans, SpanKind.CLIENT)
    assert client.attributes is not None
    assert client.attributes["url.full"] == (
        "https://gemini.test/v1beta/models/g:generateContent?key=REDACTED&alt=REDACTED"
    )
    assert all(key not in str(v) for s in spans for v in (s.attributes or {}).values())


def test_a_routed_call_says_how_it_was_decided_on_its_server_span() -> None:
    def work(call: tracing.CallTrace, record: CallRecord) -> None:
        record.requested_model = "route/default"
        record.route = "route/default"
        record.task, record.task_source = "code", "rule:code-fences"
        record.route_rule, record.route_entry = "code-fences", "code"
        record.route_target = "zai/glm-4.7@coding"
        record.sticky, record.escalated = True, False
        record.route_skips = 2
        record.route_decision_us = 41.5
        call.finish(record)

    (server,) = _spans_of(work)
    assert server.attributes is not None
    routing = {k: v for k, v in server.attributes.items() if k.startswith("llmgateway.route")}
    assert routing == {
        "llmgateway.route": "route/default",
        "llmgateway.route.task": "code",
        "llmgateway.route.task_source": "rule:code-fences",
        "llmgateway.route.rule": "code-fences",
        "llmgateway.route.entry": "code",
        "llmgateway.route.target": "zai/glm-4.7@coding",
        "llmgateway.route.sticky": True,
        "llmgateway.route.escalated": False,
        "llmgateway.route.passed_over": 2,
        "llmgateway.route.decision_us": 41.5,
    }


def test_a_call_that_names_a_model_has_no_routing_attributes() -> None:
    def work(call: tracing.CallTrace, record: CallRecord) -> None:
        # The caller's own task on a named model is the ledger's label, not the span's.
        record.task, record.task_source = "code", "caller"
        call.finish(record)

    (server,) = _spans_of(work)
    assert server.attributes is not None
    assert not [k for k in server.attributes if k.startswith("llmgateway.route")]
