"""An httpx transport that sends requests with aiohttp.

httpx stays the API; this replaces what sits under it. httpcore's pool checks
every pooled connection on each request, which costs O(connections) per call
and grew to a third of the gateway's CPU under a few hundred concurrent
streams; aiohttp's connector and C-accelerated HTTP parser do not
(docs/performance.md has the figures). aiohttp's exceptions are mapped to
httpx's, most specific first, so the gateway's error mapping is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import urllib.request
from typing import TYPE_CHECKING

import aiohttp
import httpx

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Iterator

# aiohttp exception -> httpx exception; the first match wins, so subclasses come first.
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    # Writing to a connection the server is closing (the keep-alive race).
    (aiohttp.ClientConnectionResetError, httpx.WriteError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (aiohttp.ClientOSError, httpx.ReadError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.ClientError, httpx.TransportError),
)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except aiohttp.ClientError as exc:
        for source, target in _ERRORS:
            if isinstance(exc, source):
                raise target(str(exc) or type(exc).__name__) from exc
        raise  # pragma: no cover  # ClientError itself is the last row


@functools.cache
def _shared_ssl_context() -> ssl.SSLContext:
    """The same CA bundle and SSL_CERT_* handling as httpx's own transport, built
    once per process: loading the bundle costs about 50 ms of CPU, once per
    provider per gateway otherwise. A context is safe to share between
    connectors; the environment is read when the first session starts."""
    return httpx.create_ssl_context()


class _ResponseStream(httpx.AsyncByteStream):
    """The body as aiohttp delivers it: whatever has arrived, no fixed chunk size."""

    def __init__(self, response: aiohttp.ClientResponse, read_timeout: float | None) -> None:
        self._response = response
        self._read_timeout = read_timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        with _httpx_errors():
            while True:
                # Our own bound on every read: aiohttp's C parser stops its read
                # timer when the chunked framing is malformed and then never
                # wakes the reader, so its sock_read timeout alone can hang.
                try:
                    async with asyncio.timeout(self._read_timeout):
                        chunk = await content.readany()
                except TimeoutError:
                    raise httpx.ReadTimeout("no data within the read timeout") from None
                except RuntimeError as exc:
                    # aiohttp's word for a connection that closed under a
                    # reader (seen after malformed chunked framing).
                    raise httpx.RemoteProtocolError(f"the body broke off: {exc}") from exc
                if not chunk:
                    return
                yield chunk

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # read to the end: the connection is reusable
        else:
            self._response.close()  # unfinished: drop the connection, stopping the upstream


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (and connection pool), created on first use."""

    def __init__(self, *, max_connections: int, keepalive_expiry: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], str | None] = {}

    def _proxy_for(self, url: httpx.URL) -> str | None:
        """HTTP(S)_PROXY / NO_PROXY for this host, as httpx's own transport honours
        them; read from the environment once per host."""
        key = (url.scheme, url.host)
        if key not in self._proxies:
            proxy = None
            if not urllib.request.proxy_bypass(url.host):
                proxy = urllib.request.getproxies_environment().get(url.scheme)
            self._proxies[key] = proxy
        return self._proxies[key]

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                ssl=_shared_ssl_context(),
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_expiry,
                ttl_dns_cache=300,
            )
            # httpx decodes Content-Encoding itself; decoding twice would fail.
            # No trust_env: aiohttp would then scan the environment for proxies
            # on every request (it cost a third of unary throughput); proxies
            # are resolved once per host in _proxy_for instead.
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        with _httpx_errors():
            response = await self._session_now().request(
                request.method,
                str(request.url),
                headers=headers,
                data=request.content or None,
                allow_redirects=False,
                proxy=self._proxy_for(request.url),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        return httpx.Response(
            status_code=response.status,
            headers=[(k, v) for k, v in response.raw_headers],
            stream=_ResponseStream(response, timeout.get("read")),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
