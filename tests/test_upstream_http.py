"""The completions' direct aiohttp client (providers/upstream_http.py) against a
real local HTTP server: what upstreams are sent, Content-Encoding, the idle
timer that replaced a timer per read, the error it names, and OpenRouter's
cost look-up on the same session."""

from __future__ import annotations

import asyncio
import gzip
from typing import TYPE_CHECKING, Protocol

import aiohttp
import httpx
import orjson
import pytest
from aiohttp import web

from llmgateway.server.config import OpenAISettings, OpenRouterSettings, Secret, Timeouts
from llmgateway.server.errors import GatewayError
from llmgateway.server.providers import openrouter, upstream_http
from llmgateway.server.providers.openai import OpenAIProvider
from llmgateway.server.providers.openrouter import OpenRouterProvider
from llmgateway.server.providers.upstream_http import IdleWatch, httpx_error_type
from llmgateway.server.routing.router import Route
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

KEY = "sk-proj-testkeyfortheupstreamhttp0000"
ROUTE = Route(common.PROVIDER_OPENAI, "gpt-5", "openai/gpt-5")
ANSWER = {
    "id": "chatcmpl-1",
    "model": "gpt-5",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


class Serve(Protocol):
    """The `serve` fixture: an OpenAI provider pointed at a local server running `handler`."""

    def __call__(
        self,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        headers: dict[str, str] | None = None,
        **timeouts: float,
    ) -> Awaitable[OpenAIProvider]: ...


def request() -> pb.CompleteRequest:
    return pb.CompleteRequest(
        model="openai/gpt-5", messages=[common.ChatMessage(role=common.ROLE_USER, content="Hi")]
    )


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """serve(handler, **timeouts): an OpenAI provider pointed at a local server."""
    runners: list[web.AppRunner] = []
    providers: list[OpenAIProvider] = []

    async def start(
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        headers: dict[str, str] | None = None,
        **timeouts: float,
    ) -> OpenAIProvider:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        provider = OpenAIProvider(
            OpenAISettings(
                api_key=Secret(KEY),
                base_url=f"http://127.0.0.1:{port}/v1",
                headers=headers or {},
            ),
            Timeouts(**timeouts),
        )
        providers.append(provider)
        return provider

    yield start
    for provider in providers:
        await provider.aclose()
    for runner in runners:
        await runner.cleanup()


async def test_upstreams_get_the_headers_httpx_sent(serve: Serve) -> None:
    seen: list[tuple[web.Request, bytes]] = []

    async def handler(req: web.Request) -> web.Response:
        seen.append((req, await req.read()))
        return web.json_response(ANSWER)

    provider = await serve(handler, headers={"X-Team": "search"})
    answer = await provider.complete(request(), ROUTE, None)
    assert answer.content == "hello"
    sent = seen[0][0].headers
    assert sent["Authorization"] == f"Bearer {KEY}"
    assert sent["Content-Type"] == "application/json"
    assert sent["X-Team"] == "search"
    assert sent["User-Agent"] == f"python-httpx/{httpx.__version__}"
    assert sent["Accept-Encoding"] == "gzip, deflate"
    assert orjson.loads(seen[0][1])["model"] == "gpt-5"


async def test_a_configured_user_agent_replaces_the_default_once(serve: Serve) -> None:
    seen: list[list[str]] = []

    async def handler(req: web.Request) -> web.Response:
        seen.append(req.headers.getall("User-Agent"))
        return web.json_response(ANSWER)

    provider = await serve(handler, headers={"user-agent": "team-search/1"})
    await provider.complete(request(), ROUTE, None)
    assert seen == [["team-search/1"]]


async def test_completions_ask_only_for_encodings_aiohttp_decodes(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    # httpx's default Accept-Encoding follows what httpx can decode: with
    # `zstandard` installed it names zstd, which aiohttp here cannot decode
    # (that needs backports.zstd). Completions are read by aiohttp, so they
    # must not ask for it, or a zstd-answering upstream fails every call.
    monkeypatch.setattr(httpx._client, "ACCEPT_ENCODING", "gzip, deflate, br, zstd")
    seen: list[str] = []

    async def handler(req: web.Request) -> web.Response:
        seen.append(req.headers["Accept-Encoding"])
        return web.json_response(ANSWER)

    provider = await serve(handler)
    await provider.complete(request(), ROUTE, None)
    assert seen == [upstream_http.ACCEPT_ENCODING]
    assert seen == ["gzip, deflate"]  # neither Brotli nor backports.zstd here


async def test_a_gzip_answer_is_decoded(serve: Serve) -> None:
    async def handler(req: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(orjson.dumps(ANSWER)),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    provider = await serve(handler)
    assert (await provider.complete(request(), ROUTE, None)).content == "hello"


async def test_a_gzip_stream_is_decoded(serve: Serve) -> None:
    chunk = {
        "id": "c1",
        "model": "gpt-5",
        "choices": [{"index": 0, "delta": {"content": "hel"}, "finish_reason": None}],
    }
    last = {
        "id": "c1",
        "model": "gpt-5",
        "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}],
    }
    body = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in (chunk, last))

    async def handler(req: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(body + b"data: [DONE]\n\n"),
            headers={"Content-Encoding": "gzip", "Content-Type": "text/event-stream"},
        )

    provider = await serve(handler)
    events = [e async for e in provider.stream(request(), ROUTE, None)]
    text = "".join(e.content_delta.text for e in events if e.HasField("content_delta"))
    assert text == "hello"
    assert events[-1].HasField("done")


async def test_a_body_that_does_not_decode_is_malformed(serve: Serve) -> None:
    async def handler(req: web.Request) -> web.Response:
        return web.Response(
            body=b"this is not gzip at all",
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    provider = await serve(handler)
    with pytest.raises(GatewayError) as caught:
        await provider.complete(request(), ROUTE, None)
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_MALFORMED_RESPONSE
    assert "could not be decoded" in caught.value.message


@pytest.mark.parametrize("encoding", ["br", "zstd"])
@pytest.mark.parametrize("streamed", [False, True])
async def test_an_encoding_with_no_decoder_is_malformed(
    serve: Serve, encoding: str, streamed: bool
) -> None:
    # Never asked for (Accept-Encoding says gzip, deflate), and aiohttp here has
    # no decoder for either: it fails at the headers, which must still read as
    # the upstream's malformed answer, not as a connection that broke
    # (UNREACHABLE would send the call to a fallback as if the host were down).
    async def handler(req: web.Request) -> web.Response:
        return web.Response(
            body=b"\x1b\x03\x00\xf8\xa5\x40\x02",
            headers={
                "Content-Encoding": encoding,
                "Content-Type": "text/event-stream" if streamed else "application/json",
            },
        )

    provider = await serve(handler)
    with pytest.raises(GatewayError) as caught:
        if streamed:
            _ = [e async for e in provider.stream(request(), ROUTE, None)]
        else:
            await provider.complete(request(), ROUTE, None)
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_MALFORMED_RESPONSE
    assert "could not be decoded" in caught.value.message


async def test_an_idle_bound_shorter_than_the_first_byte_one_is_named_idle(serve: Serve) -> None:
    # Headers, then silence: the 0.3 s idle bound ends it, and the message must
    # say so, not that the response had not begun within the 5 s first-byte
    # bound (aiohttp's read timeout is a TimeoutError too).
    async def handler(req: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(req)
        await asyncio.sleep(2)
        return response

    provider = await serve(handler, stream_idle=0.3, first_byte=5.0)
    started = asyncio.get_running_loop().time()
    with pytest.raises(GatewayError) as caught:
        _ = [e async for e in provider.stream(request(), ROUTE, None)]
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_TIMEOUT
    assert "no data within the stream idle timeout" in caught.value.message
    assert asyncio.get_running_loop().time() - started < 2.0


async def test_no_cookie_an_upstream_sets_is_sent_again() -> None:
    # One session serves every caller: a cookie set during one call must not
    # ride on the next (anyone's), nor pile up. `localhost`, not 127.0.0.1:
    # aiohttp's jar ignores cookies from IP addresses.
    seen: list[str | None] = []

    async def answer(req: web.Request) -> web.StreamResponse:
        seen.append(req.headers.get("Cookie"))
        if req.method == "GET":
            response: web.StreamResponse = web.json_response({"data": []})
        elif (await req.json()).get("stream"):
            end = {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            response = web.Response(
                body=b"data: " + orjson.dumps(end) + b"\n\ndata: [DONE]\n\n",
                headers={"Content-Type": "text/event-stream"},
            )
        else:
            response = web.json_response(ANSWER)
        response.set_cookie(f"c{len(seen)}", "v", path="/")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    app.router.add_get("/v1/models", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "localhost", 0).start()
    base = f"http://localhost:{runner.addresses[0][1]}/v1"
    provider = OpenAIProvider(OpenAISettings(api_key=Secret(KEY), base_url=base), Timeouts())
    try:
        for _ in range(3):
            await provider.complete(request(), ROUTE, None)
            events = [e async for e in provider.stream(request(), ROUTE, None)]
            assert events[-1].HasField("done")
            await provider.get_json("/models", base, 5.0)
    finally:
        await provider.aclose()
        await runner.cleanup()
    assert seen == [None] * 9


def sse_stream(gaps: list[float]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A stream that sends a chunk after each gap (seconds), then its end and [DONE]."""

    async def handler(req: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(req)
        for gap in gaps:
            await asyncio.sleep(gap)
            delta = {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}
            await response.write(b"data: " + orjson.dumps({"id": "c", **delta}) + b"\n\n")
        end = {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await response.write(b"data: " + orjson.dumps(end) + b"\n\ndata: [DONE]\n\n")
        await response.write_eof()
        return response

    return handler


async def test_a_stream_with_short_gaps_outlives_the_idle_timeout(serve: Serve) -> None:
    # 12 gaps of 0.05 s: 0.6 s in all, three times the idle timeout, never idle that long.
    provider = await serve(sse_stream([0.05] * 12), stream_idle=0.2)
    events = [e async for e in provider.stream(request(), ROUTE, None)]
    assert "".join(e.content_delta.text for e in events if e.HasField("content_delta")) == "x" * 12


async def test_a_gap_longer_than_the_idle_timeout_ends_the_stream(serve: Serve) -> None:
    provider = await serve(sse_stream([0.0, 0.0, 1.0]), stream_idle=0.3)
    received: list[pb.StreamCompleteResponse] = []
    started = asyncio.get_running_loop().time()
    with pytest.raises(GatewayError) as caught:
        async for event in provider.stream(request(), ROUTE, None):
            received.append(event)
    waited = asyncio.get_running_loop().time() - started
    assert caught.value.reason == pb.ERROR_REASON_UPSTREAM_TIMEOUT
    assert "no data within the stream idle timeout" in caught.value.message
    assert received  # what came before the silence reached the caller
    assert 0.3 <= waited < 1.0


class _Content:
    """A body reader that answers when told to."""

    def __init__(self) -> None:
        self.exception: BaseException | None = None
        self.waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def readany(self) -> bytes:
        return await self.waiter

    def set_exception(self, exc: BaseException) -> None:
        self.exception = exc
        if not self.waiter.done():
            self.waiter.set_exception(exc)


class _Response:
    def __init__(self) -> None:
        self.content = _Content()
        self.connection = None


class _CountingLoop:
    """The running loop, counting the timers scheduled through it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.timers = 0

    def time(self) -> float:
        return self._loop.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        self.timers += 1
        return self._loop.call_at(when, callback)


async def test_the_idle_watch_uses_one_timer_for_many_reads() -> None:
    loop = _CountingLoop(asyncio.get_running_loop())
    response = _Response()
    watch = IdleWatch(response, 10.0, loop)  # type: ignore[arg-type]
    for _ in range(100):
        pending = asyncio.ensure_future(watch.read())
        await asyncio.sleep(0)
        response.content.waiter.set_result(b"data")
        assert await pending == b"data"
        response.content.waiter = asyncio.get_running_loop().create_future()
    watch.close()
    assert loop.timers == 1


async def test_the_idle_watch_fails_a_read_that_waits_too_long() -> None:
    response = _Response()
    watch = IdleWatch(response, 0.05, asyncio.get_running_loop())  # type: ignore[arg-type]
    with pytest.raises(aiohttp.SocketTimeoutError):
        await watch.read()
    assert httpx_error_type(aiohttp.SocketTimeoutError()) is httpx.ReadTimeout


async def test_the_idle_watch_counts_from_the_start_of_each_read() -> None:
    # The first read returns at once; a second, started 0.08 s later, must get
    # its own 0.1 s, not what was left of the first one's.
    response = _Response()
    loop = asyncio.get_running_loop()
    watch = IdleWatch(response, 0.1, loop)  # type: ignore[arg-type]
    response.content.waiter.set_result(b"one")
    assert await watch.read() == b"one"
    await asyncio.sleep(0.08)
    response.content.waiter = loop.create_future()
    loop.call_later(0.07, response.content.waiter.set_result, b"two")
    assert await watch.read() == b"two"
    watch.close()


@pytest.mark.parametrize(
    ("statuses", "tries", "cost"),
    [
        ([404, 200], 2, 0.25),  # not there yet, then found
        ([500, 429, 200], 3, 0.25),  # the upstream's passing trouble: tried again
        ([401], 1, None),  # a refusal: no point in trying again
    ],
)
async def test_the_cost_look_up_reads_the_record_on_the_completions_session(
    monkeypatch: pytest.MonkeyPatch, statuses: list[int], tries: int, cost: float | None
) -> None:
    monkeypatch.setattr(openrouter, "GENERATION_LOOKUP_DELAYS", (0.0, 0.0, 0.0))
    seen: list[tuple[str, str]] = []
    answers = iter(statuses)

    async def record(req: web.Request) -> web.Response:
        seen.append((req.query["id"], req.headers["Authorization"]))
        status = next(answers)
        if status != 200:
            return web.json_response({"error": {"message": "no"}}, status=status)
        return web.json_response({"data": {"id": req.query["id"], "total_cost": 0.25}})

    app = web.Application()
    app.router.add_get("/api/v1/generation", record)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    provider = OpenRouterProvider(
        OpenRouterSettings(api_key=Secret(KEY), base_url=f"http://127.0.0.1:{port}/api/v1"),
        Timeouts(),
    )
    try:
        assert await provider.generation_cost("gen-123") == cost
    finally:
        await provider.aclose()
        await runner.cleanup()
    assert seen == [("gen-123", f"Bearer {KEY}")] * tries


async def test_a_cost_record_past_the_size_bound_is_unreadable_not_an_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The look-up reads its body bounded as a unary answer is; a body past the
    # bound is a page that is not the record (counted and logged once as one
    # that is not JSON), never an exception out of the call's after-work.
    monkeypatch.setattr(openrouter, "GENERATION_LOOKUP_DELAYS", (0.0, 0.0))
    tries = 0

    async def record(req: web.Request) -> web.Response:
        nonlocal tries
        tries += 1
        return web.Response(body=b"x" * 5000, content_type="text/html")

    app = web.Application()
    app.router.add_get("/api/v1/generation", record)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    provider = OpenRouterProvider(
        OpenRouterSettings(api_key=Secret(KEY), base_url=f"http://127.0.0.1:{port}/api/v1"),
        Timeouts(),
        max_response_bytes=1000,
    )
    try:
        assert await provider.generation_cost("gen-123") is None
    finally:
        await provider.aclose()
        await runner.cleanup()
    assert tries == 2
    assert "was not JSON in 2 of 2 tries" in caplog.text
