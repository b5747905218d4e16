"""The provider core every wire shares: HTTP, deadlines, size bounds, error mapping, the loops.

UpstreamProvider sends the request, bounds every wait and every byte, turns
transport failures and HTTP errors into gateway errors, and runs the unary and
streaming loops. What differs between wires (URL, auth, body, the unary parser,
the frame decoder and stream assembler, the shape of an error body) comes from
hooks that a dialect overrides: openai_compatible/core.py is one.
One aiohttp session per provider keeps connections pooled: completions use it
directly (upstream_http.py), the catalogue and cost look-ups through httpx
(aiohttp_transport.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.cookiejar
import logging
from typing import TYPE_CHECKING, ClassVar, TypedDict, Unpack

import aiohttp
import grpc
import httpx
import orjson
from multidict import CIMultiDict

from llmgateway.server.errors import FieldViolation, GatewayError
from llmgateway.server.observability import tracing
from llmgateway.server.providers import upstream_errors as ue
from llmgateway.server.providers.aiohttp_transport import AiohttpTransport
from llmgateway.server.providers.assembly import SpanAnnotating, coalesce
from llmgateway.server.providers.redaction import Redactor
from llmgateway.server.providers.sse import SSEDecoder
from llmgateway.server.providers.upstream_http import (
    ACCEPT_ENCODING,
    IdleWatch,
    UpstreamSession,
    UpstreamStatusError,
    httpx_error_type,
)
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterator, Mapping

    from llmgateway.server.config import Secret, Timeouts
    from llmgateway.server.providers.assembly import Assembler, FrameDecoder
    from llmgateway.server.providers.openai_compatible.wire import AnyCompletionRequest, JSONObject
    from llmgateway.server.routing.router import Route

logger = logging.getLogger(__name__)

# Error bodies are small; a provider that sends megabytes with a 4xx is not
# worth buffering in full.
_MAX_ERROR_BODY = 64 * 1024
# The largest answer (unary body, or one stream event) the gateway accepts by
# default: gRPC's default limit on a message a caller's channel receives, so
# anything larger could not reach a default client anyway.
DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024
# How much of an error body that is not JSON (a proxy's HTML page) the caller sees.
_MAX_TEXT_ERROR = 200
# Upstream time budgets end this long before the caller's deadline.
_DEADLINE_MARGIN = 0.05
# How long to wait for the end of a body after the stream's end before dropping the connection.
_DRAIN_TIMEOUT = 1.0


class ProviderLimits(TypedDict, total=False):
    """What every provider is built with beyond its settings and timeouts
    (`**limits` of each provider's constructor; tests leave them out)."""

    max_connections: int
    max_response_bytes: int
    # A test seam for the requests that go through httpx (get_json, post_json:
    # the catalogue and cost look-ups); default: the provider's aiohttp session.
    # Completions always use that session directly.
    transport: httpx.AsyncBaseTransport | None


class UpstreamProvider:
    """One upstream provider behind the gateway's single provider interface."""

    kind: ClassVar[common.Provider.ValueType]
    provider_id: ClassVar[str]
    display_name: ClassVar[str]
    key_env: ClassVar[str]
    base_url_env: ClassVar[str]

    def __init__(
        self,
        api_key: Secret | None,
        timeouts: Timeouts,
        **limits: Unpack[ProviderLimits],
    ) -> None:
        max_connections = limits.get("max_connections", 1000)
        transport = limits.get("transport")
        self._api_key = api_key
        self._timeouts = timeouts
        self._max_response = limits.get("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES)
        self._http = UpstreamSession(max_connections=max_connections)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeouts.request, connect=timeouts.connect),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport or AiohttpTransport(self._http),
            # Upstream base URLs come from configuration; redirects would only
            # hide a misconfiguration (and could leak the key to another host).
            # Completions do not follow them either (upstream_http.py).
            follow_redirects=False,
            # Keeps no cookies, as the completions' session keeps none
            # (upstream_http.py says why).
            cookies=_no_cookie_jar(),
        )
        # What httpx sent on every request before completions left it (Accept,
        # Connection, User-Agent): upstreams see the same request as before.
        # Accept-Encoding names what aiohttp decodes (upstream_http.py), today
        # gzip and deflate, as httpx's did.
        self._base_headers = CIMultiDict(self._client.headers.items())
        self._base_headers["Content-Type"] = "application/json"
        self._base_headers["Accept-Encoding"] = ACCEPT_ENCODING
        # Every string this provider passes on goes through it (see redaction.py).
        self._redactor = Redactor((api_key.value,) if api_key else ())
        self._drains: set[asyncio.Task[None]] = set()

    # -- hooks: the request ---------------------------------------------------

    def url(self, request: AnyCompletionRequest, route: Route, *, stream: bool) -> str:
        """The URL for this request (some wires stream from a different one)."""
        raise NotImplementedError

    def auth_headers(self) -> dict[str, str]:
        """How this provider takes its key: a Bearer token unless overridden."""
        if self._api_key is None:
            return {}
        return {"Authorization": f"Bearer {self._api_key.value}"}

    def extra_headers(self) -> dict[str, str]:
        """Headers beyond auth and content type."""
        return {}

    def body(self, request: AnyCompletionRequest, route: Route, *, stream: bool) -> JSONObject:
        """The JSON body for this request."""
        raise NotImplementedError

    def check(self, request: AnyCompletionRequest) -> list[FieldViolation]:
        """What this provider cannot accept in an otherwise valid request."""
        del request
        return []

    # -- hooks: the answer ----------------------------------------------------

    def parse_unary(
        self, payload: object, route: Route, include_reasoning: bool
    ) -> pb.CompleteResponse:
        """The answer in a 200 unary body, already parsed as JSON. `object`, not a
        dict: some wires wrap a body in an array."""
        raise NotImplementedError

    def frame_decoder(self) -> FrameDecoder:
        """What splits a stream body into frames."""
        return SSEDecoder()

    def stream_assembler(self, route: Route, include_reasoning: bool) -> Assembler:
        """What turns this stream's frames into the gateway's events. One that is
        also assembly.SpanAnnotating adds its span_attributes() to the upstream
        trace span once the stream is complete."""
        raise NotImplementedError

    def stream_content_type_ok(self, content_type: str) -> bool:
        """Whether a 200's content type says the body is a stream of this wire."""
        return "text/event-stream" in content_type

    def non_stream_body(self, content: bytes, route: Route) -> GatewayError:
        """The error for a 200 to a stream request whose body is not a stream
        (usually a JSON body holding only an error)."""
        raise NotImplementedError

    def in_band_error(self, error: object, route: Route) -> GatewayError:
        """An error the provider sent inside a 200 response or stream."""
        raise NotImplementedError

    def finish_reason(self, native: str, route: Route) -> common.FinishReason.ValueType:
        """Our enum for a provider finish reason (unknown ones become OTHER)."""
        raise NotImplementedError

    def usage(self, usage: JSONObject) -> common.Usage:
        """Our Usage from the provider's usage object."""
        raise NotImplementedError

    def unary_span_attributes(self, payload: object) -> dict[str, int | str]:
        """Attributes of this wire's own (timings, counts the contract has no
        field for) for the upstream trace span, from a 200 unary body that
        parse_unary accepted; asked only when tracing is on. Names and numbers
        only, never answer text (string values are scrubbed as metadata)."""
        del payload
        return {}

    # -- hooks: the catalogue -------------------------------------------------

    async def catalogue(self, within: float) -> list[pb.ModelInfo]:
        """This provider's models for ListModels, from its own list endpoint
        (through `get_json`) or a built-in table, within `within` seconds.
        Raises (anything) when the list cannot be had: routing/catalog.py
        caches what it returns and reports the provider as incomplete when it
        raises. Every string copied out of a fetched document goes through
        `self.redactor.text`; `available` is `self.configured`."""
        del within
        raise NotImplementedError

    # -- hooks: errors --------------------------------------------------------

    def failure_from_error_body(
        self, status: int | None, payload: object, content: bytes
    ) -> ue.UpstreamFailure:
        """What an error response says. `payload` is the body parsed as JSON, or
        None when it is not JSON. This default (for a body of no known shape: a
        proxy's page, or plain text) keeps the start of the text, redacted before
        it is cut to a useful length, as every upstream string is."""
        del payload
        return ue.UpstreamFailure(
            status,
            None,
            self._redactor.bounded(content.decode("utf-8", "replace").strip(), _MAX_TEXT_ERROR),
        )

    def request_id_from(self, headers: Mapping[str, str]) -> str | None:
        """The upstream's id for a failed request from its response headers, for
        an error body that names none (a proxy's page); None when this wire has
        no such header. Redacted and bounded by ue.build_error."""
        del headers
        return None

    def retry_after_from(
        self, failure: ue.UpstreamFailure, headers: Mapping[str, str]
    ) -> float | None:
        """How long the provider asked callers to wait, from the response headers."""
        del failure
        return ue.parse_retry_after(headers.get("retry-after"))

    def classify(self, failure: ue.UpstreamFailure) -> ue.Reason:
        """The reason for an upstream failure."""
        if failure.http_status is not None:
            return ue.reason_for_http_status(failure.http_status)
        return pb.ERROR_REASON_UPSTREAM_UNAVAILABLE

    def hint(self, failure: ue.UpstreamFailure) -> str | None:
        """Advice to add to the message for a provider error, if any."""
        del failure
        return None

    # -- hooks: routing -------------------------------------------------------

    @property
    def circuit_names(self) -> tuple[str, ...]:
        """Every circuit breaker this provider's calls go through."""
        return (self.provider_id,)

    def circuit_name(self, request: AnyCompletionRequest, route: Route) -> str:
        """The circuit breaker for this request: one per provider by default."""
        del request, route
        return self.provider_id

    def served_endpoint(
        self, request: AnyCompletionRequest, route: Route
    ) -> common.ZaiEndpoint.ValueType:
        """The Z.AI endpoint this request goes to; unspecified elsewhere."""
        del request, route
        return common.ZAI_ENDPOINT_UNSPECIFIED

    def include_reasoning(self, request: AnyCompletionRequest) -> bool:
        """Whether reasoning text goes back to the caller."""
        return not request.reasoning.exclude

    # -- public API -----------------------------------------------------------

    @property
    def redactor(self) -> Redactor:
        """What scrubs provider keys from everything this provider passes on."""
        return self._redactor

    def redact_as(self, redactor: Redactor) -> None:
        """Scrub with `redactor` (one that removes other providers' keys as well
        as this one's: a proxy in front of several could quote any of them)."""
        self._redactor = redactor

    @property
    def configured(self) -> bool:
        """True when the gateway has an API key for this provider."""
        return self._api_key is not None

    def not_configured_error(self, route: Route) -> GatewayError:
        """FAILED_PRECONDITION naming the variable to set."""
        return GatewayError(
            grpc.StatusCode.FAILED_PRECONDITION,
            pb.ERROR_REASON_PROVIDER_NOT_CONFIGURED,
            f"{self.display_name} is not configured on this gateway: set {self.key_env} "
            f"and restart it to use {route.requested!r}",
            metadata={
                "provider": self.provider_id,
                "model": route.requested,
                "variable": self.key_env,
            },
        )

    async def complete(
        self, request: AnyCompletionRequest, route: Route, deadline: float | None
    ) -> pb.CompleteResponse:
        """One non-streaming completion."""
        url = self.url(request, route, stream=False)
        trace = tracing.upstream(self.provider_id, url, request, route.upstream_model, stream=False)
        if trace is None:
            return await self._complete(request, route, deadline, url, None)
        async with trace:
            answer = await self._complete(request, route, deadline, url, trace)
            trace.answered(answer.model, answer.id, answer.native_finish_reason, answer.usage)
            return answer

    def stream(
        self, request: AnyCompletionRequest, route: Route, deadline: float | None
    ) -> AsyncGenerator[pb.StreamCompleteResponse, None]:
        """Stream a completion. Closing the generator closes the upstream response."""
        url = self.url(request, route, stream=True)
        trace = tracing.upstream(self.provider_id, url, request, route.upstream_model, stream=True)
        events = self._stream(request, route, deadline, url, trace)
        return events if trace is None else trace.wrap(events)

    async def _complete(
        self,
        request: AnyCompletionRequest,
        route: Route,
        deadline: float | None,
        url: str,
        trace: tracing.UpstreamTrace | None,
    ) -> pb.CompleteResponse:
        """The answer scrubbed of provider keys before anything (the trace, the
        caller, the ledger) sees it. Its errors need nothing more: every one is
        made by ue.build_error or ue.local_error, which redact as they build."""
        body = orjson.dumps(self.body(request, route, stream=False))
        budget = self._budget(self._timeouts.request, deadline)
        # No read timer: `budget` bounds the whole call, every read included
        # (and a read timer of `budget` would always fire after it).
        timeout = self._aiohttp_timeout(budget, None)
        try:
            async with asyncio.timeout(budget):
                with self._transport_errors(route):
                    response = await self._http.post(url, body, self._completion_headers(), timeout)
                    try:
                        content = await self._read_bounded(response, route)
                    finally:
                        _close(response)
        except TimeoutError:
            raise self._timeout_error(route, budget) from None
        if trace is not None:
            trace.http_status(response.status)
        if response.status != 200:
            raise self._http_error(response.status, content, response.headers, route)
        try:
            payload = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise self.malformed("the response body is not JSON", route) from None
        with self._parse_errors(route):
            answer = self.parse_unary(payload, route, self.include_reasoning(request))
            if trace is not None:
                self._annotate(trace, self.unary_span_attributes(payload))
        return self._redactor.response(answer)

    async def _stream(
        self,
        request: AnyCompletionRequest,
        route: Route,
        deadline: float | None,
        url: str,
        trace: tracing.UpstreamTrace | None,
    ) -> AsyncGenerator[pb.StreamCompleteResponse, None]:
        # Its events are scrubbed of provider keys as the assembler makes them
        # (see openai_compatible/stream.py), where their strings are still at
        # hand (one more pass over every event would cost more than assembling
        # it); its errors as they are built (ue.build_error, ue.local_error),
        # before anything sees them.
        body = orjson.dumps(self.body(request, route, stream=True))
        budget = self._budget(self._timeouts.stream_total, deadline)
        first_byte = self._budget(self._timeouts.first_byte, deadline)
        loop = asyncio.get_running_loop()
        now = loop.time()
        give_up_at = now + budget
        first_byte_at = now + first_byte
        idle = min(self._timeouts.stream_idle, budget)
        # aiohttp's read timer bounds the wait for the headers; IdleWatch
        # replaces it for the body.
        timeout = self._aiohttp_timeout(budget, idle)
        try:
            async with asyncio.timeout_at(first_byte_at):
                with self._transport_errors(route):
                    response = await self._http.post(url, body, self._completion_headers(), timeout)
        except TimeoutError:
            raise self._first_byte_error(route, first_byte) from None
        if trace is not None:
            trace.http_status(response.status)
        watch = IdleWatch(response, idle, loop)
        handed_off = False
        try:
            if response.status != 200:
                content = await self._read_capped(watch, route)
                raise self._http_error(response.status, content, response.headers, route)
            if not self.stream_content_type_ok(response.headers.get("content-type", "")):
                content = await self._read_capped(watch, route)
                raise self.non_stream_body(content, route)
            assembler = self.stream_assembler(route, self.include_reasoning(request))
            decoder = self.frame_decoder()
            with self._transport_errors(route, mid_stream=True), self._parse_errors(route):
                raw = await self._first_chunk_by(first_byte_at, watch, route, first_byte)
                while raw:
                    batch: list[pb.StreamCompleteResponse] = []
                    try:
                        for event in decoder.feed(raw):
                            batch.extend(assembler.on_event(event))
                    except Exception:
                        # What arrived before the error still reaches the caller.
                        for out in coalesce(batch):
                            yield out
                        raise
                    for out in coalesce(batch):
                        yield out
                    if assembler.done:
                        break
                    if decoder.buffered > self._max_response:
                        # One event that never ends would otherwise grow without bound.
                        raise self._too_large(route, "one stream event")
                    if loop.time() > give_up_at:
                        # Keep-alive comments reset the idle timer, so the
                        # whole stream needs a bound of its own.
                        raise self._timeout_error(route, budget, "the stream did not end")
                    raw = await watch.read()
                else:
                    # End of body before the wire said it was over: the
                    # assembler judges what the decoder still held.
                    assembler.on_end(decoder.end())
                final = assembler.finish()
                if trace is not None and isinstance(assembler, SpanAnnotating):
                    self._annotate(trace, assembler.span_attributes())
            for out in final:
                yield out
            watch.close()
            if response.content.at_eof():
                # The chunked terminator came with the last event (the usual
                # case): the connection goes back to the pool now.
                response.release()
            else:
                # Reading the rest of the body returns the connection to the
                # pool; doing it in the background lets the call end now.
                self._drain_in_background(response)
            handed_off = True
        finally:
            if not handed_off:
                # Also runs when the caller cancels: closing an unfinished
                # response drops the connection, which stops upstream generation.
                watch.close()
                _close(response)

    async def get_json(
        self,
        path: str,
        base_url: str,
        within: float,
        params: dict[str, str] | None = None,
    ) -> object:
        """GET a JSON document from the provider (catalogue look-ups), as sent:
        NOT redacted. Whoever copies a string out of it passes it through
        `redactor.text` (service/llmgateway/server/routing/catalog.py does for ids and names); scrubbing
        every string of a 1 MB catalogue would stall the event loop for 0.1 s.
        The key goes in the headers (`auth_headers`), never in `params`: a URL
        ends up in traces and proxies' logs.
        Raises httpx.HTTPError, or ValueError for a body that is not JSON."""
        response = await self._client.get(
            f"{base_url}{path}", headers=self._headers(), params=params, timeout=within
        )
        response.raise_for_status()
        return orjson.loads(response.content)

    async def post_json(self, path: str, base_url: str, within: float, body: JSONObject) -> object:
        """POST a JSON body and read a JSON document back (Ollama's /api/show),
        as sent: NOT redacted (see get_json). Raises as get_json does."""
        response = await self._client.post(
            f"{base_url}{path}", headers=self._headers(), content=orjson.dumps(body), timeout=within
        )
        response.raise_for_status()
        return orjson.loads(response.content)

    async def lookup_json(self, path: str, base_url: str, within: float) -> object:
        """GET a small JSON document on the completions' aiohttp session, as
        sent: NOT redacted (see get_json). For look-ups made after calls
        (OpenRouter's generation records, a few per call), where httpx's
        request machinery cost more than the rest of the look-up; get_json
        stays for catalogues. The body is bounded as a unary answer is.
        Raises upstream_http.UpstreamStatusError for a status other than 2xx,
        aiohttp.ClientError or TimeoutError when no answer came within
        `within` s, ValueError for a body that is not JSON or passed
        max_response_bytes (no such document is the one asked for)."""
        async with asyncio.timeout(within):
            response = await self._http.get(
                f"{base_url}{path}", self._completion_headers(), self._aiohttp_timeout(within, None)
            )
            try:
                if not 200 <= response.status < 300:
                    raise UpstreamStatusError(response.status)
                content = await self._read_body(response)
            except _TooLargeError:
                raise ValueError(f"the body passed {self._max_response} bytes") from None
            finally:
                _close(response)
        return orjson.loads(content)

    async def aclose(self) -> None:
        """Close pooled connections (after the background drains, which end within a second)."""
        if self._drains:
            await asyncio.gather(*self._drains, return_exceptions=True)
        await self._client.aclose()
        await self._http.aclose()

    def _drain_in_background(self, response: aiohttp.ClientResponse) -> None:
        task = asyncio.create_task(_drain_and_close(response))
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    # -- error construction (used by the stream assemblers too) ---------------

    def error_context(self, route: Route) -> ue.ErrorContext:
        """Who failed, for messages and ErrorInfo metadata."""
        return ue.ErrorContext(
            provider_name=self.display_name,
            provider_id=self.provider_id,
            key_env=self.key_env,
            model=route.requested,
            redactor=self._redactor,
        )

    def malformed(self, detail: str, route: Route) -> GatewayError:
        """The upstream broke its own wire format."""
        return ue.local_error(
            pb.ERROR_REASON_UPSTREAM_MALFORMED_RESPONSE, detail, self.error_context(route)
        )

    def truncated(self, detail: str, route: Route) -> GatewayError:
        """The upstream stream ended before it was complete."""
        return ue.local_error(
            pb.ERROR_REASON_UPSTREAM_STREAM_TRUNCATED, detail, self.error_context(route)
        )

    # -- internals ------------------------------------------------------------

    def _annotate(self, trace: tracing.UpstreamTrace, attributes: dict[str, int | str]) -> None:
        """A wire's own span attributes; their strings came from the upstream,
        so they are scrubbed as its other metadata is."""
        if attributes:
            text = self._redactor.text
            trace.annotate(
                {name: text(v) if isinstance(v, str) else v for name, v in attributes.items()}
            )

    def _headers(self) -> dict[str, str]:
        """get_json's and post_json's headers (httpx adds its own defaults)."""
        return {"Content-Type": "application/json", **self.extra_headers(), **self.auth_headers()}

    def _completion_headers(self) -> CIMultiDict[str]:
        """A completion's headers: httpx's defaults, then the wire's (merged
        case-insensitively, as httpx did: a configured User-Agent replaces it)."""
        headers = self._base_headers.copy()
        headers.update(self.extra_headers())
        headers.update(self.auth_headers())
        return headers

    @staticmethod
    def _budget(limit: float, deadline: float | None) -> float:
        if deadline is None:
            return limit
        # End a little before the caller's deadline, so the caller gets the
        # gateway's UPSTREAM_TIMEOUT (with details) rather than a race between
        # it and gRPC's own DEADLINE_EXCEEDED for a call gRPC already closed.
        remaining = deadline - asyncio.get_running_loop().time() - _DEADLINE_MARGIN
        return max(0.001, min(limit, remaining))

    def _aiohttp_timeout(self, budget: float, read: float | None) -> aiohttp.ClientTimeout:
        """What httpx.Timeout(connect=, read=, pool=budget) was: `connect`
        bounds each connection attempt, `budget` the wait for a pooled one."""
        return aiohttp.ClientTimeout(
            total=None,
            connect=budget,
            sock_connect=min(self._timeouts.connect, budget),
            sock_read=read,
        )

    def _timeout_error(
        self, route: Route, budget: float, what: str = "no complete answer"
    ) -> GatewayError:
        return ue.local_error(
            pb.ERROR_REASON_UPSTREAM_TIMEOUT,
            f"{what} within {budget:.3g} s",
            self.error_context(route),
        )

    async def _read_bounded(self, response: aiohttp.ClientResponse, route: Route) -> bytes:
        """The whole body, or UPSTREAM_RESPONSE_TOO_LARGE past the limit: the
        gateway's memory per call must not be the upstream's choice."""
        try:
            return await self._read_body(response)
        except _TooLargeError:
            raise self._too_large(route, "the answer") from None

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        """The whole body; _TooLargeError past max_response_bytes."""
        content = response.content
        parts: list[bytes] = []
        size = 0
        try:
            while chunk := await content.readany():
                size += len(chunk)
                if size > self._max_response:
                    raise _TooLargeError
                parts.append(chunk)
        except RuntimeError as exc:
            # aiohttp's word for a connection that closed under a reader.
            raise aiohttp.ClientPayloadError(f"the body broke off: {exc}") from exc
        if not parts:
            return b""
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _read_capped(self, watch: IdleWatch, route: Route) -> bytes:
        """The start of an error body (or of a 200 that is not a stream)."""
        parts: list[bytes] = []
        size = 0
        with self._transport_errors(route):
            while chunk := await watch.read():
                parts.append(chunk)
                size += len(chunk)
                if size >= _MAX_ERROR_BODY:
                    break
        return b"".join(parts)[:_MAX_ERROR_BODY]

    def _too_large(self, route: Route, what: str) -> GatewayError:
        return ue.local_error(
            pb.ERROR_REASON_UPSTREAM_RESPONSE_TOO_LARGE,
            f"{what} passed {self._max_response} bytes",
            self.error_context(route),
        )

    def _first_byte_error(self, route: Route, first_byte: float) -> GatewayError:
        return self._timeout_error(route, first_byte, "the response had not begun")

    async def _first_chunk_by(
        self, when: float, watch: IdleWatch, route: Route, first_byte: float
    ) -> bytes:
        """The body's first bytes, failing if they have not arrived by loop
        time `when`: an upstream that accepted the request but never starts is
        stuck."""
        try:
            async with asyncio.timeout_at(when):
                return await watch.read()
        except aiohttp.ServerTimeoutError:
            # The idle bound (IdleWatch, or aiohttp's read timer still armed
            # from the headers): a TimeoutError subclass too, but not this
            # deadline; _transport_errors names it.
            raise
        except TimeoutError:
            raise self._first_byte_error(route, first_byte) from None

    @contextlib.contextmanager
    def _parse_errors(self, route: Route) -> Iterator[None]:
        """A response of the wrong shape (a number where a list belongs, an
        out-of-range count) is the upstream's fault, not an internal error."""
        try:
            yield
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
            raise self.malformed(
                f"a field has an unexpected type or value ({type(exc).__name__})", route
            ) from None

    @contextlib.contextmanager
    def _transport_errors(self, route: Route, *, mid_stream: bool = False) -> Iterator[None]:
        """aiohttp's exceptions as gateway errors, by the httpx exception that
        names each (upstream_http.httpx_error_type), most specific first."""
        try:
            yield
        except aiohttp.ClientError as exc:
            raise self._transport_error(
                httpx_error_type(exc), route, mid_stream=mid_stream
            ) from None

    def _transport_error(
        self, kind: type[httpx.HTTPError], route: Route, *, mid_stream: bool
    ) -> GatewayError:
        """The gateway error for a transport failure named as httpx names it."""
        ctx = self.error_context(route)
        if issubclass(kind, httpx.ConnectTimeout):
            return ue.local_error(
                pb.ERROR_REASON_UPSTREAM_UNREACHABLE,
                "connecting timed out (or every pooled connection stayed busy; the gateway "
                "allows max_connections_per_provider at once)",
                ctx,
            )
        if issubclass(kind, httpx.TimeoutException):
            what = "no data within the stream idle timeout" if mid_stream else kind.__name__
            return ue.local_error(pb.ERROR_REASON_UPSTREAM_TIMEOUT, what, ctx)
        if issubclass(kind, httpx.ConnectError):
            return ue.local_error(
                pb.ERROR_REASON_UPSTREAM_UNREACHABLE, "the connection failed", ctx
            )
        if issubclass(kind, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
            reason = (
                pb.ERROR_REASON_UPSTREAM_STREAM_TRUNCATED
                if mid_stream
                else pb.ERROR_REASON_UPSTREAM_UNREACHABLE
            )
            return ue.local_error(reason, f"the connection broke ({kind.__name__})", ctx)
        if issubclass(kind, httpx.DecodingError):
            return ue.local_error(
                pb.ERROR_REASON_UPSTREAM_MALFORMED_RESPONSE, "the body could not be decoded", ctx
            )
        return ue.local_error(pb.ERROR_REASON_UPSTREAM_UNREACHABLE, kind.__name__, ctx)

    def _http_error(
        self, status: int, content: bytes, headers: Mapping[str, str], route: Route
    ) -> GatewayError:
        try:
            payload: object = orjson.loads(content)
        except orjson.JSONDecodeError:
            payload = None
        failure = self.failure_from_error_body(status, payload, content)
        if not failure.request_id:
            # The body's own id, when it names one, is the one to quote.
            request_id = self.request_id_from(headers)
            if request_id:
                failure = dataclasses.replace(failure, request_id=request_id)
        retry_after = self.retry_after_from(failure, headers)
        if retry_after is not None:
            failure = dataclasses.replace(failure, retry_after=retry_after)
        hint = self.hint(failure)
        if 300 <= status < 400:
            hint = f"the upstream redirected the request; check {self.base_url_env}"
        return ue.build_error(self.classify(failure), failure, self.error_context(route), hint)


def _no_cookie_jar() -> http.cookiejar.CookieJar:
    """A jar whose policy accepts no cookie from any domain: httpx always has
    a jar, and this one stays empty."""
    return http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


class _TooLargeError(Exception):
    """A body passed max_response_bytes."""


async def _drain_and_close(response: aiohttp.ClientResponse) -> None:
    """Read what follows the end of the stream, then close.

    A response read to its end goes back to the pool; one closed early costs
    a new connection on the next call.
    """
    try:
        with contextlib.suppress(aiohttp.ClientError, RuntimeError, TimeoutError):
            async with asyncio.timeout(_DRAIN_TIMEOUT):
                while await response.content.readany():
                    pass
    finally:
        _close(response)


def _close(response: aiohttp.ClientResponse) -> None:
    """Release a response read to its end (its connection is reusable); close
    an unfinished one (dropping its connection, which stops the upstream)."""
    if response.content.at_eof():
        response.release()
    else:
        response.close()
