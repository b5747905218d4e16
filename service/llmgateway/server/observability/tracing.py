"""OpenTelemetry tracing: a span per gRPC call, and one per upstream HTTP attempt.

Off by default: without LLMGATEWAY_TRACING=otlp (or console) no SDK is set
up, no span is made and OpenTelemetry is not even imported. With it:

- `chat {requested model}` (SERVER): the Complete or StreamComplete call,
  child of the caller's W3C `traceparent` metadata when it sends one.
  Attributes: rpc.*, gen_ai.operation.name, gen_ai.request.* (model,
  max_tokens, temperature, top_p), gen_ai.provider.name and gen_ai.system,
  gen_ai.response.model, gen_ai.usage.* (input and output tokens; the
  cache_read and cache_creation input tokens, part of the input, when
  reported), error.type, llmgateway.* (request
  id, attempts, fallbacks, cost, caller key id).
- `chat {upstream model}` (CLIENT), its child, per upstream attempt (so a
  retried call has several): http.request.method, server.address,
  server.port, url.full (credentials and query values redacted),
  http.response.status_code, gen_ai.* for the upstream request and answer
  (the request's from the gateway's own request, whatever the provider's
  wire), error.type.

Prompts, answers and keys never go into a span: only names, numbers and
reasons.
"""

from __future__ import annotations

import asyncio
import functools
import urllib.parse
from contextvars import ContextVar
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterable, Mapping

    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider
    from opentelemetry.util.types import AttributeValue

    from llmgateway.server.observability.observe import CallRecord
    from llmgateway.server.providers.openai_compatible.wire import AnyCompletionRequest
    from llmgateway.v1 import completion_pb2 as common
    from llmgateway.v1 import completion_service_pb2 as pb

TRACING_MODES = ("off", "otlp", "console")
RPC_SERVICE = "llmgateway.v1.CompletionService"
# gen_ai.provider.name (and the older gen_ai.system) for our provider ids: the
# OpenTelemetry GenAI registry's well-known values where it has one (openai,
# anthropic, gcp.gemini, groq); the others are not registered, and take the
# lower-case name the convention asks for (openrouter, z.ai, ollama).
PROVIDER_NAMES = {
    "openrouter": "openrouter",
    "zai": "z.ai",
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "groq": "groq",
    "ollama": "ollama",
}
# Per the gRPC semantic conventions, a server span is an error only for these;
# the caller's mistakes (INVALID_ARGUMENT, NOT_FOUND, ...) leave it unset.
_SERVER_ERRORS = frozenset(
    ("UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS")
)
_GRPC_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}

# The traced call the current task serves; None when tracing is off.
_CURRENT: ContextVar[CallTrace | None] = ContextVar("llmgateway_call_trace", default=None)


class Tracing:
    """Starts the span of each call with one tracer."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    @classmethod
    def create(cls, mode: str, provider: TracerProvider | None = None) -> Tracing | None:
        """Tracing for `mode` ("off", "otlp", "console"); `provider` (tests)
        overrides the mode. None when off."""
        if provider is None:
            if mode == "off":
                return None
            provider = _sdk_provider(mode)
        return cls(provider.get_tracer("llmgateway"))

    def start_call(
        self, record: CallRecord, metadata: Iterable[tuple[str, str | bytes]]
    ) -> CallTrace:
        """The call's SERVER span, begun when the call arrived, under the
        caller's trace if its metadata carries one; current for this task."""
        from opentelemetry import propagate
        from opentelemetry.context import Context
        from opentelemetry.trace import SpanKind

        fields = propagate.get_global_textmap().fields
        carrier = {k: v for k, v in metadata if k in fields and isinstance(v, str)}
        parent = propagate.extract(carrier, context=Context()) if carrier else Context()
        attributes: dict[str, AttributeValue] = {
            "rpc.system": "grpc",
            "rpc.service": RPC_SERVICE,
            "rpc.method": record.method,
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": record.requested_model,
            "llmgateway.request_id": record.request_id,
        }
        span = self._tracer.start_span(
            f"chat {record.requested_model[:128]}".rstrip(),
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=int(record.started_at * 1e9),
        )
        call = CallTrace(self._tracer, span)
        _CURRENT.set(call)
        return call


class CallTrace:
    """The span of one gRPC call."""

    __slots__ = ("_context", "_tracer", "span")

    def __init__(self, tracer: Tracer, span: Span) -> None:
        from opentelemetry.trace import set_span_in_context

        self._tracer = tracer
        self.span = span
        self._context: Context = set_span_in_context(span)

    def request(self, request: AnyCompletionRequest) -> None:
        """The sampling settings the caller chose (never the messages)."""
        self.span.set_attributes(_sampling_attributes(request))

    def finish(self, record: CallRecord) -> None:
        """End the span with how the call ended."""
        from opentelemetry.trace import Status, StatusCode

        span = self.span
        attributes: dict[str, AttributeValue] = {
            "rpc.grpc.status_code": _GRPC_CODES.get(record.status, 2),
            "llmgateway.attempts": record.attempts,
            "llmgateway.fallbacks": record.fallbacks,
        }
        if record.provider:
            name = PROVIDER_NAMES.get(record.provider, record.provider)
            attributes["gen_ai.provider.name"] = name
            attributes["gen_ai.system"] = name
        if record.served_model:
            attributes["gen_ai.response.model"] = record.served_model
            attributes["gen_ai.usage.input_tokens"] = record.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = record.completion_tokens
            attributes.update(_cache_attributes(record.cached_tokens, record.cache_write_tokens))
        if record.cost_usd is not None:
            attributes["llmgateway.cost_usd"] = record.cost_usd
        if record.key_id:
            attributes["llmgateway.key_id"] = record.key_id
        if record.route:
            attributes.update(_route_attributes(record))
        if record.status != "OK":
            attributes["error.type"] = record.reason or record.status
            if record.status in _SERVER_ERRORS:
                span.set_status(Status(StatusCode.ERROR, record.reason or record.status))
        span.set_attributes(attributes)
        span.end()

    def upstream(
        self,
        provider_id: str,
        url: str,
        request: AnyCompletionRequest,
        upstream_model: str,
        *,
        stream: bool,
    ) -> UpstreamTrace:
        """A CLIENT span for one upstream HTTP attempt, child of the call's."""
        from opentelemetry.trace import SpanKind

        name = PROVIDER_NAMES.get(provider_id, provider_id)
        attributes = {
            **_url_attributes(url),
            **_sampling_attributes(request),
            "http.request.method": "POST",
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": name,
            "gen_ai.system": name,
            "gen_ai.request.model": upstream_model,
            "llmgateway.stream": stream,
        }
        span = self._tracer.start_span(
            f"chat {upstream_model}",
            context=self._context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        return UpstreamTrace(span)


class UpstreamTrace:
    """The span of one upstream HTTP attempt."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def http_status(self, status: int) -> None:
        """The response's status line arrived."""
        self.span.set_attribute("http.response.status_code", status)

    def answered(self, model: str, response_id: str, finish: str, usage: common.Usage) -> None:
        """What the upstream answered with (names and counts only)."""
        # Our model names carry a provider prefix; the upstream's do not.
        attributes: dict[str, AttributeValue] = {
            "gen_ai.response.model": model.split("/", 1)[-1],
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            **_cache_attributes(usage.cached_tokens, usage.cache_write_tokens),
        }
        if response_id:
            attributes["gen_ai.response.id"] = response_id
        if finish:
            attributes["gen_ai.response.finish_reasons"] = (finish,)
        self.span.set_attributes(attributes)

    def annotate(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Attributes one wire alone has (Ollama's timings): names and numbers only."""
        self.span.set_attributes(attributes)

    def end(self, error: BaseException | None) -> None:
        """End the span; an error sets error.type (a reason name, never a message)."""
        if error is not None:
            from opentelemetry.trace import Status, StatusCode

            kind = error_type(error)
            self.span.set_attribute("error.type", kind)
            self.span.set_status(Status(StatusCode.ERROR, kind))
        self.span.end()

    async def wrap(
        self, events: AsyncGenerator[pb.StreamCompleteResponse, None]
    ) -> AsyncGenerator[pb.StreamCompleteResponse, None]:
        """`events`, with the span around them; closing this closes `events`."""
        failure: BaseException | None = None
        try:
            async for event in events:
                if event.HasField("done"):
                    done = event.done
                    self.answered(done.model, done.id, done.native_finish_reason, done.usage)
                yield event
        except BaseException as exc:
            failure = exc
            raise
        finally:
            await events.aclose()
            self.end(failure)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        self.end(exc)


def upstream(
    provider_id: str, url: str, request: AnyCompletionRequest, upstream_model: str, *, stream: bool
) -> UpstreamTrace | None:
    """The span for an upstream attempt of the call this task serves; None
    when tracing is off (or outside a call)."""
    call = _CURRENT.get()
    if call is None:
        return None
    return call.upstream(provider_id, url, request, upstream_model, stream=stream)


def error_type(error: BaseException) -> str:
    """error.type: the ErrorReason name of a gateway error, `cancelled`, or the class."""
    from llmgateway.server.errors import GatewayError, reason_name

    if isinstance(error, GatewayError):
        return reason_name(error.reason)
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    return type(error).__qualname__


def _route_attributes(record: CallRecord) -> dict[str, AttributeValue]:
    """How a `route/<name>` call was decided (never the session id: it may
    identify a user)."""
    return {
        "llmgateway.route": record.route,
        "llmgateway.route.task": record.task,
        "llmgateway.route.task_source": record.task_source,
        "llmgateway.route.rule": record.route_rule,
        "llmgateway.route.entry": record.route_entry,
        "llmgateway.route.target": record.route_target,
        "llmgateway.route.sticky": record.sticky,
        "llmgateway.route.escalated": record.escalated,
        "llmgateway.route.passed_over": record.route_skips,
        "llmgateway.route.decision_us": record.route_decision_us,
    }


def _cache_attributes(cached: int, cache_write: int) -> dict[str, AttributeValue]:
    """The prompt-cache counts (both part of input_tokens), when the provider
    reported any: most report no cache writes, many no cache reads."""
    attributes: dict[str, AttributeValue] = {}
    if cached:
        attributes["gen_ai.usage.cache_read.input_tokens"] = cached
    if cache_write:
        attributes["gen_ai.usage.cache_creation.input_tokens"] = cache_write
    return attributes


def _sampling_attributes(request: AnyCompletionRequest) -> dict[str, AttributeValue]:
    sampling = request.sampling
    attributes: dict[str, AttributeValue] = {}
    if sampling.HasField("max_tokens"):
        attributes["gen_ai.request.max_tokens"] = sampling.max_tokens
    if sampling.HasField("temperature"):
        attributes["gen_ai.request.temperature"] = sampling.temperature
    if sampling.HasField("top_p"):
        attributes["gen_ai.request.top_p"] = sampling.top_p
    return attributes


@functools.lru_cache(maxsize=64)
def _url_attributes(url: str) -> dict[str, AttributeValue]:
    """url.full without credentials or query values, server.address and server.port."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    if parts.username is not None or parts.password is not None:
        netloc = f"REDACTED:REDACTED@{netloc}"
    query = "&".join(
        f"{name}=REDACTED"
        for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    )
    full = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    default_port = 443 if parts.scheme == "https" else 80
    return {
        "url.full": full,
        "server.address": host,
        "server.port": parts.port or default_port,
    }


@functools.cache
def _sdk_provider(mode: str) -> TracerProvider:
    """The process's SDK tracer provider for `mode`, made once and set global.
    The OTLP exporter reads the standard OTEL_EXPORTER_OTLP_* variables;
    OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES name the service
    (default `llmgateway`), OTEL_TRACES_SAMPLER chooses the sampling."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    if mode not in ("otlp", "console"):
        raise ValueError(f"tracing must be one of {TRACING_MODES}, got {mode!r}")
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "llmgateway"}))
    provider = SdkTracerProvider(resource=resource)
    if mode == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider
