"""The completion calls' HTTP client: aiohttp, used directly.

Completions (unary and streamed) go straight to aiohttp: httpx's request
building, cookie handling, URL model and response wrappers cost about a fifth
of a worker's CPU per unary call on top of aiohttp's own work
(docs/performance.md). httpx stays for the catalogue and cost look-ups
(`get_json`/`post_json`), over the same aiohttp session and pool
(aiohttp_transport.py). aiohttp's exceptions are named as httpx's
(`httpx_error_type`), so both paths map to the same gateway errors.
"""

from __future__ import annotations

import functools
import urllib.request
from typing import TYPE_CHECKING

import aiohttp
import httpx
from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD
from aiohttp.http_exceptions import ContentEncodingError
from yarl import URL

if TYPE_CHECKING:
    import asyncio
    import ssl
    from collections.abc import Mapping

# The Accept-Encoding of completions: what aiohttp decodes in this process.
# httpx's default names what httpx could decode, which is not the same set
# (httpx's zstd comes from `zstandard`, aiohttp's from backports.zstd before
# Python 3.14): installing one without the other would otherwise invite an
# answer no call could read. Today: gzip, deflate, as httpx sends.
ACCEPT_ENCODING = ", ".join(
    ["gzip", "deflate", *(["br"] if HAS_BROTLI else []), *(["zstd"] if HAS_ZSTD else [])]
)

# aiohttp exception -> httpx exception; the first match wins, so subclasses come first.
_ERRORS: tuple[tuple[type[BaseException], type[httpx.HTTPError]], ...] = (
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


def httpx_error_type(exc: aiohttp.ClientError) -> type[httpx.HTTPError]:
    """The httpx exception class that means what `exc` means. A body whose
    Content-Encoding does not decode is httpx's DecodingError: aiohttp reports
    a body that breaks mid-way as a payload error, and an encoding it has no
    decoder for (`br` without Brotli, `zstd` without backports.zstd) as a
    response error at the headers, each caused by a ContentEncodingError."""
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError) and (
        _decoding_failed(exc)
    ):
        return httpx.DecodingError
    for source, target in _ERRORS:
        if isinstance(exc, source):
            return target
    return httpx.TransportError  # pragma: no cover  # ClientError is the last row


def _decoding_failed(exc: BaseException) -> bool:
    # At the headers the chain is ClientResponseError <- HttpProcessingError
    # (aiohttp's protocol re-wraps what its C parser raised) <- ContentEncodingError.
    seen: BaseException | None = exc
    for _ in range(6):  # the cause chain is short; never loop on a cycle
        if seen is None:
            return False
        if isinstance(seen, ContentEncodingError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class UpstreamStatusError(Exception):
    """A look-up answered with a status other than 2xx."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """The same CA bundle and SSL_CERT_* handling as httpx's own transport, built
    once per process: loading the bundle costs about 50 ms of CPU, once per
    provider per gateway otherwise. A context is safe to share between
    connectors; the environment is read when the first session starts."""
    return httpx.create_ssl_context()


class UpstreamSession:
    """One aiohttp session (and connection pool) per provider, created on first use."""

    def __init__(self, *, max_connections: int, keepalive_expiry: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], str | None] = {}

    def proxy_for(self, scheme: str, host: str) -> str | None:
        """HTTP(S)_PROXY / NO_PROXY for this host, as httpx's own transport honours
        them; read from the environment once per host."""
        key = (scheme, host)
        try:
            return self._proxies[key]
        except KeyError:
            pass
        proxy = None
        if not urllib.request.proxy_bypass(host):
            proxy = urllib.request.getproxies_environment().get(scheme)
        self._proxies[key] = proxy
        return proxy

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session, made on first use (it needs a running loop)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                ssl=shared_ssl_context(),
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_expiry,
                ttl_dns_cache=300,
            )
            # No trust_env: aiohttp would then scan the environment for proxies
            # on every request (it cost a third of unary throughput); proxies
            # are resolved once per host in proxy_for instead. Content-Encoding
            # is decoded per request: here for completions, by httpx for the
            # requests that go through aiohttp_transport.
            # No cookie jar: the session serves every caller, so a cookie an
            # upstream set during one call would ride on every later one, and
            # aiohttp's jar keeps whatever it is sent, without a bound (a
            # cookie per response would grow every request's headers until the
            # upstream refuses them all). API upstreams authenticate by key.
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109  # aiohttp's per-phase limits, not one deadline
    ) -> aiohttp.ClientResponse:
        """POST `body`; the response once its headers have arrived (raises aiohttp's errors)."""
        parsed = _url(url)
        return await self.session.request(
            "POST",
            parsed,
            headers=headers,
            data=body,
            allow_redirects=False,
            proxy=self.proxy_for(parsed.scheme, parsed.host or ""),
            timeout=timeout,
        )

    async def get(
        self,
        url: str,
        headers: Mapping[str, str],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109  # as in post
    ) -> aiohttp.ClientResponse:
        """GET; the response once its headers have arrived (raises aiohttp's errors)."""
        parsed = URL(url)  # not cached: look-up URLs differ every time
        return await self.session.request(
            "GET",
            parsed,
            headers=headers,
            allow_redirects=False,
            proxy=self.proxy_for(parsed.scheme, parsed.host or ""),
            timeout=timeout,
        )

    async def aclose(self) -> None:
        """Close the pool."""
        if self._session is not None:
            await self._session.close()


@functools.lru_cache(maxsize=256)
def _url(url: str) -> URL:
    """A provider's URLs repeat (one per wire and model): parse each once."""
    return URL(url)


class IdleWatch:
    """Fails a body read that waits longer than `idle` seconds for data, with
    one timer per response moved forward lazily, rather than a timer per read.

    It replaces aiohttp's own read timer (re-armed on every packet) once the
    headers are in, and is also the bound that aiohttp's alone is not: its C
    parser stops that timer on malformed chunked framing and then never wakes
    the reader. The timer fires at most once per `idle` while reads keep
    coming; a read pending `idle` seconds gets aiohttp's SocketTimeoutError,
    as aiohttp's own timer would raise it.
    """

    __slots__ = ("_content", "_handle", "_idle", "_loop", "_started")

    def __init__(
        self, response: aiohttp.ClientResponse, idle: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._content = response.content
        self._idle = idle
        self._loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self._started: float | None = None
        connection = response.connection
        if connection is not None and connection.protocol is not None:
            connection.protocol.read_timeout = None

    async def read(self) -> bytes:
        """Whatever has arrived (waiting for some), b"" at the end of the body."""
        started = self._started = self._loop.time()
        if self._handle is None:
            self._handle = self._loop.call_at(started + self._idle, self._check)
        try:
            chunk = await self._content.readany()
        except RuntimeError as exc:
            # aiohttp's word for a connection that closed under a reader (seen
            # after malformed chunked framing).
            raise aiohttp.ClientPayloadError(f"the body broke off: {exc}") from exc
        self._started = None
        return chunk

    def _check(self) -> None:
        self._handle = None
        started = self._started
        if started is None:
            return  # no read waiting; the next one re-arms the timer
        due = started + self._idle
        # The loop runs a timer up to its clock resolution early.
        if self._loop.time() >= due - 0.001:
            self._content.set_exception(
                aiohttp.SocketTimeoutError("no data within the read timeout")
            )
        else:
            self._handle = self._loop.call_at(due, self._check)

    def close(self) -> None:
        """Stop the timer (the response is done with, or handed to a drain)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
