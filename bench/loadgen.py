"""A load generator, run as its own process so it does not share a core's GIL
with what it measures. Prints one JSON object with raw figures.

Targets:
- direct:  HTTP straight to the fake upstream's OpenAI-compatible endpoint
- litellm: HTTP to LiteLLM's proxy (same wire as direct)
- gateway: gRPC to llmgateway
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import aiohttp
import grpc
import orjson

from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

PROMPT = "Say hello."
GATEWAY_MODEL = "openrouter/openai/gpt-4o-mini"


def upstream_chunks(text: str) -> int:
    """How many of the fake upstream's chunks ("tok " each) `text` holds; the
    gateway may merge chunks that arrived together into one message."""
    return max(1, text.count("tok "))


@dataclass
class Result:
    """Raw figures of one run; times in seconds."""

    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    chunks: int = 0
    wall: float = 0.0
    waves: int = 1

    def fail(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:300])


class Target:
    """One way to make a call."""

    async def unary(self) -> None:
        raise NotImplementedError

    async def stream(self) -> tuple[float, int]:
        """(seconds to the first content chunk, content chunks)."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class HttpTarget(Target):
    """OpenAI-compatible HTTP: the fake upstream itself, or LiteLLM in front of it.

    aiohttp, not httpx's default transport, so the direct baseline is not
    slowed by its client (httpcore's pool costs O(connections) per call).
    """

    def __init__(self, url: str, key: str, model: str, connections: int) -> None:
        self._url = url
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        messages = [{"role": "user", "content": PROMPT}]
        self._unary_body = orjson.dumps({"model": model, "messages": messages})
        self._stream_body = orjson.dumps(
            {
                "model": model,
                "messages": messages,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        )
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._connections)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=120)
            )
        return self._session

    async def unary(self) -> None:
        async with self._client().post(
            self._url, data=self._unary_body, headers=self._headers
        ) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
        payload = orjson.loads(body)
        if not payload["choices"][0]["message"]["content"]:
            raise RuntimeError("empty answer")

    async def stream(self) -> tuple[float, int]:
        started = time.perf_counter()
        first = 0.0
        chunks = 0
        done = False
        async with self._client().post(
            self._url, data=self._stream_body, headers=self._headers
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            async for raw in response.content:  # one line at a time
                if not raw.startswith(b"data: "):
                    continue
                data = raw[6:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                chunk = orjson.loads(data)
                choices = chunk.get("choices") or []
                text = choices[0].get("delta", {}).get("content") if choices else None
                if text:
                    chunks += upstream_chunks(text)
                    if not first:
                        first = time.perf_counter() - started
        if not done:
            raise RuntimeError("stream ended without [DONE]")
        return first, chunks

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class GatewayTarget(Target):
    """gRPC to llmgateway over several channels (one TCP connection each), so
    connections spread over the gateway's worker processes as real clients' would."""

    def __init__(
        self,
        address: str,
        channels: int,
        metadata: Sequence[tuple[str, str]] = (),
        model: str = GATEWAY_MODEL,
    ) -> None:
        if channels < 1:
            raise ValueError("channels must be at least 1")
        options = [("grpc.use_local_subchannel_pool", 1)]
        self._channels = [
            grpc.aio.insecure_channel(address, options=options) for _ in range(channels)
        ]
        self._stubs = [pb_grpc.CompletionServiceStub(c) for c in self._channels]
        self._next = 0
        # Sent on every call, e.g. ("authorization", "Bearer <key>") for a keyed gateway.
        self._metadata = tuple(metadata)
        message = common.ChatMessage(role=common.ROLE_USER, content=PROMPT)
        self._unary = pb.CompleteRequest(model=model, messages=[message])
        self._stream = pb.StreamCompleteRequest(model=model, messages=[message])

    def _stub(self) -> pb_grpc.CompletionServiceAsyncStub:
        self._next = (self._next + 1) % len(self._stubs)
        return self._stubs[self._next]

    async def unary(self) -> None:
        response = await self._stub().Complete(self._unary, timeout=120, metadata=self._metadata)
        if not response.content:
            raise RuntimeError("empty answer")

    async def stream(self) -> tuple[float, int]:
        started = time.perf_counter()
        first = 0.0
        chunks = 0
        done = False
        call = self._stub().StreamComplete(self._stream, timeout=120, metadata=self._metadata)
        async for event in call:
            kind = event.WhichOneof("event")
            if kind == "content_delta":
                chunks += upstream_chunks(event.content_delta.text)
                if not first:
                    first = time.perf_counter() - started
            elif kind == "done":
                done = True
        if not done:
            raise RuntimeError("stream ended without done")
        return first, chunks

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


async def run_unary(target: Target, concurrency: int, requests: int, duration: float) -> Result:
    """`concurrency` callers in a loop, for `requests` calls or `duration` seconds."""
    result = Result()
    deadline = time.perf_counter() + duration if duration else None
    remaining = requests

    async def caller() -> None:
        nonlocal remaining
        while True:
            if deadline is not None:
                if time.perf_counter() >= deadline:
                    return
            else:
                if remaining <= 0:
                    return
                remaining -= 1
            started = time.perf_counter()
            try:
                await target.unary()
            except Exception as exc:  # noqa: BLE001  # every failure is counted
                result.fail(f"{type(exc).__name__}: {exc}")
                continue
            result.latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    result.wall = time.perf_counter() - started
    return result


async def run_streams(target: Target, concurrency: int, waves: int) -> Result:
    """`waves` times, `concurrency` streams started together."""
    result = Result(waves=waves)

    async def one() -> None:
        started = time.perf_counter()
        try:
            first, chunks = await target.stream()
        except Exception as exc:  # noqa: BLE001  # every failure is counted
            result.fail(f"{type(exc).__name__}: {exc}")
            return
        if first:  # a stream without content has no time to first token
            result.ttfts.append(first)
        result.latencies.append(time.perf_counter() - started)
        result.chunks += chunks

    for _ in range(waves):
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        result.wall += time.perf_counter() - started
    return result


async def _warm_up(call: Callable[[], Awaitable[object]], times: int) -> None:
    for _ in range(times):
        await call()


async def main_async(args: argparse.Namespace) -> Result:
    target: Target
    if args.target == "gateway":
        target = GatewayTarget(args.address, args.channels, args.metadata, args.gateway_model)
    else:
        target = HttpTarget(args.url, args.key, args.model, max(args.concurrency, 1))
    try:
        await _warm_up(target.unary if args.mode == "unary" else target.stream, 20)
        if args.mode == "unary":
            return await run_unary(target, args.concurrency, args.requests, args.duration)
        return await run_streams(target, args.concurrency, args.waves)
    finally:
        await target.close()


def metadata_pair(text: str) -> tuple[str, str]:
    """`--metadata K=V` as gRPC metadata: the key lower-cased (gRPC requires it),
    the value as given (it may itself hold `=`)."""
    key, sep, value = text.partition("=")
    key = key.strip().lower()
    if not sep or not key:
        # Not echoed: the value may be a caller key.
        raise argparse.ArgumentTypeError("expected K=V with a non-empty K")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", choices=["direct", "litellm", "gateway"], required=True)
    parser.add_argument("--mode", choices=["unary", "stream"], required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=0)
    parser.add_argument("--duration", type=float, default=0.0)
    parser.add_argument("--waves", type=int, default=1)
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument(
        "--channels", type=int, default=8, help="gRPC channels (TCP connections) to the gateway"
    )
    parser.add_argument(
        "--metadata",
        type=metadata_pair,
        action="append",
        default=[],
        metavar="K=V",
        help="gRPC metadata sent on every gateway call (repeatable)",
    )
    parser.add_argument("--gateway-model", default=GATEWAY_MODEL)
    parser.add_argument("--url", default="")
    parser.add_argument("--key", default="")
    parser.add_argument("--model", default="openai/gpt-4o-mini")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: python -m bench.loadgen ..."""
    args = build_parser().parse_args(argv)
    if args.channels < 1:
        raise SystemExit("--channels must be at least 1")
    result = asyncio.run(main_async(args))
    json.dump(asdict(result), sys.stdout)


if __name__ == "__main__":
    main()
