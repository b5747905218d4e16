"""An httpx transport that sends requests with aiohttp.

Completions call aiohttp directly (upstream_http.py); httpx stays the API of
the catalogue and cost look-ups (`UpstreamProvider.get_json`/`post_json`), and
this puts them on the provider's one aiohttp session and pool. httpcore's
own pool checks every pooled connection on each request, which costs
O(connections) per call (docs/performance.md has the figures). aiohttp's
exceptions are re-raised as httpx's, so callers of get_json see httpx errors.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import aiohttp
import httpx

from llmgateway.server.providers.upstream_http import UpstreamSession, httpx_error_type

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except aiohttp.ClientError as exc:
        raise httpx_error_type(exc)(str(exc) or type(exc).__name__) from exc


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
    """httpx requests sent on `upstream`'s session."""

    def __init__(self, upstream: UpstreamSession) -> None:
        self._upstream = upstream

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        with _httpx_errors():
            response = await self._upstream.session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=request.content or None,
                allow_redirects=False,
                proxy=self._upstream.proxy_for(request.url.scheme, request.url.host),
                # httpx decodes Content-Encoding itself; decoding twice would fail.
                auto_decompress=False,
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
        # The session belongs to the provider, which closes it after httpx's client.
        return
