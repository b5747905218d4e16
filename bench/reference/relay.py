"""A minimal relay: the gateway's contract over the same fake upstream, nothing else.

python -m bench.reference.relay --port N [--workers W]
(upstream from OPENROUTER_BASE_URL and OPENROUTER_API_KEY, as the gateway reads them)

Each worker holds one pooled aiohttp ClientSession; a call posts an OpenAI
chat body to OpenRouter's endpoint; Complete returns the answer's content,
model and usage; StreamComplete splits the SSE body on blank lines, orjson-
decodes each data line and writes one gRPC message per content delta, then a
done event with the usage. No validation, bookkeeping, deadlines or error
mapping (an upstream failure is a bare exception, UNKNOWN to the caller): the
ceiling for any Python gateway that reads an upstream.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from bench.reference import serving
from bench.reference.contract import CompletionsOnly
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    import grpc

ROLES = {
    common.ROLE_SYSTEM: "system",
    common.ROLE_USER: "user",
    common.ROLE_ASSISTANT: "assistant",
    common.ROLE_TOOL: "tool",
}
PREFIX = "openrouter/"
# As many pooled connections as the gateway allows per provider by default.
CONNECTIONS = 1000


def body(request: pb.CompleteRequest | pb.StreamCompleteRequest, *, stream: bool) -> bytes:
    """The OpenAI chat body for `request` (model without the gateway's provider prefix)."""
    payload: dict[str, Any] = {
        "model": request.model.removeprefix(PREFIX),
        "messages": [
            {"role": ROLES.get(m.role, "user"), "content": m.content} for m in request.messages
        ],
    }
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return orjson.dumps(payload)


def usage(raw: dict[str, Any] | None) -> common.Usage:
    """The upstream's usage object as the contract's Usage."""
    raw = raw or {}
    return common.Usage(
        prompt_tokens=raw.get("prompt_tokens", 0),
        completion_tokens=raw.get("completion_tokens", 0),
        total_tokens=raw.get("total_tokens", 0),
    )


def events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The data payloads of the complete SSE events in `buffer`, and the rest."""
    *complete, rest = buffer.split(b"\n\n")
    return [e[6:] for e in complete if e.startswith(b"data: ")], rest


class RelayServicer(CompletionsOnly):
    """Complete and StreamComplete, relayed to the upstream."""

    def __init__(self, base_url: str, key: str) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The worker's one pooled session (made in its loop, on first use)."""
        if self._session is None:
            # No cookie jar: a relay has no use for an upstream's cookies, and
            # a jar costs every request a look-up.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=CONNECTIONS),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        """Close the session, if one was made."""
        if self._session is not None:
            await self._session.close()

    async def Complete(  # noqa: N802  # gRPC's method name
        self, request: pb.CompleteRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.CompleteResponse:
        """One upstream call, its answer as the contract's."""
        async with self.session().post(
            self._url, data=body(request, stream=False), headers=self._headers
        ) as response:
            answer = orjson.loads(await response.read())
        choice = answer["choices"][0]
        return pb.CompleteResponse(
            id=answer.get("id", ""),
            model=answer.get("model", ""),
            provider=common.PROVIDER_OPENROUTER,
            upstream_provider=answer.get("provider") or "",
            content=choice["message"].get("content") or "",
            finish_reason=common.FINISH_REASON_STOP,
            native_finish_reason=choice.get("native_finish_reason") or "",
            usage=usage(answer.get("usage")),
            attempts=1,
        )

    async def StreamComplete(  # noqa: N802  # gRPC's method name
        self, request: pb.StreamCompleteRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        """One gRPC message per upstream content delta, then done with the usage."""
        last: dict[str, Any] = {}
        buffer = b""
        async with self.session().post(
            self._url, data=body(request, stream=True), headers=self._headers
        ) as response:
            async for data in response.content.iter_any():
                found, buffer = events(buffer + data)
                for payload in found:
                    if payload == b"[DONE]":
                        break
                    chunk = orjson.loads(payload)
                    last = chunk
                    choices = chunk.get("choices")
                    text = choices[0]["delta"].get("content") if choices else None
                    if text:
                        yield pb.StreamCompleteResponse(content_delta=pb.ContentDelta(text=text))
        yield pb.StreamCompleteResponse(
            done=pb.CompletionDone(
                id=last.get("id", ""),
                model=last.get("model", ""),
                provider=common.PROVIDER_OPENROUTER,
                upstream_provider=last.get("provider") or "",
                finish_reason=common.FINISH_REASON_STOP,
                usage=usage(last.get("usage")),
                attempts=1,
            )
        )


def main() -> int:
    """Entry point."""
    args = serving.parser(__doc__ or "").parse_args()

    async def add(server: grpc.aio.Server) -> Callable[[], Awaitable[None]]:
        servicer = RelayServicer(
            os.environ["OPENROUTER_BASE_URL"], os.environ["OPENROUTER_API_KEY"]
        )
        pb_grpc.add_CompletionServiceServicer_to_server(servicer, server)
        return servicer.close

    return serving.main("bench.reference.relay", args, add)


if __name__ == "__main__":
    sys.exit(main())
