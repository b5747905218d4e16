"""What tolerant decoding (service/llmgateway/server/call_path/decoding.py) costs a call.

python -m bench.decode_overhead [--rounds 5] [--calls 3000] [--streams 300]

A bare grpc.aio server runs a trivial CompletionService (an instant unary
answer; a stream of 50 events) registered either the generated way or
through `TolerantRegistrar`, alternately, round after round; a load
generator in another process sends the same calls to each. Prints the
median server CPU time per call (process time, so a busy machine skews it
less than wall time) of each, and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import TYPE_CHECKING, Any

import grpc

from llmgateway.server.call_path.decoding import TolerantRegistrar
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

EVENTS = 50


class _Trivial(pb_grpc.CompletionServiceServicer):
    async def Complete(self, request: pb.CompleteRequest, context: Any) -> pb.CompleteResponse:  # noqa: N802
        return pb.CompleteResponse(model=request.model, content="hello")

    async def StreamComplete(  # noqa: N802
        self, request: pb.StreamCompleteRequest, context: Any
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        for _ in range(EVENTS):
            yield pb.StreamCompleteResponse(content_delta=pb.ContentDelta(text="tok "))

    async def ListModels(  # noqa: N802
        self, request: pb.ListModelsRequest, context: Any
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse()

    async def GetUsage(self, request: pb.GetUsageRequest, context: Any) -> pb.GetUsageResponse:  # noqa: N802
        return pb.GetUsageResponse()

    async def ExplainRoute(  # noqa: N802
        self, request: pb.ExplainRouteRequest, context: Any
    ) -> pb.ExplainRouteResponse:
        return pb.ExplainRouteResponse()


async def _serve(tolerant: bool) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    target: Any = TolerantRegistrar(server) if tolerant else server
    pb_grpc.add_CompletionServiceServicer_to_server(_Trivial(), target)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def _load(port: int, calls: int, streams: int, mode: str) -> None:
    """Client side: `calls` unary calls 32 at a time, or `streams` streams at once."""
    message = common.ChatMessage(role=common.ROLE_USER, content="Say hello.")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.CompletionServiceStub(channel)
        unary = pb.CompleteRequest(model="zai/glm-4.7", messages=[message])
        stream = pb.StreamCompleteRequest(model="zai/glm-4.7", messages=[message])
        if mode == "unary":
            await _unary(stub, unary, calls)
        else:
            await asyncio.gather(*(_stream(stub, stream) for _ in range(streams)))


async def _unary(stub: Any, unary: pb.CompleteRequest, calls: int) -> None:
    remaining = calls

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await stub.Complete(unary)

    await asyncio.gather(*(caller() for _ in range(32)))


async def _stream(stub: Any, stream: pb.StreamCompleteRequest) -> None:
    async for _ in stub.StreamComplete(stream):
        pass


async def _round(tolerant: bool, calls: int, streams: int, mode: str) -> float:
    """Server CPU seconds per call (or stream) of one round."""
    server, port = await _serve(tolerant)
    try:
        warm = await _client(port, 50, 5, mode)
        await warm.communicate()
        started = time.process_time()
        client = await _client(port, calls, streams, mode)
        await client.communicate()
        spent = time.process_time() - started
    finally:
        await server.stop(0)
    return spent / (calls if mode == "unary" else streams)


async def _client(port: int, calls: int, streams: int, mode: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.decode_overhead",
        "--client",
        str(port),
        "--calls",
        str(calls),
        "--streams",
        str(streams),
        "--mode",
        mode,
    )


async def _main(args: argparse.Namespace) -> None:
    figures: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for mode in ("unary", "stream"):
            for name in ("generated", "tolerant"):
                spent = await _round(name == "tolerant", args.calls, args.streams, mode)
                figures.setdefault((mode, name), []).append(spent * 1e6)
    for mode, unit in (("unary", "call"), ("stream", f"stream of {EVENTS} events")):
        plain = statistics.median(figures[mode, "generated"])
        tolerant = statistics.median(figures[mode, "tolerant"])
        print(
            f"{mode:>6}: server CPU per {unit}: generated {plain:7.1f} us, tolerant "
            f"{tolerant:7.1f} us; tolerant/generated {tolerant / plain:.3f} (medians of "
            f"{args.rounds} alternating rounds)"
        )
        for name in ("generated", "tolerant"):
            print(f"        {name}: {', '.join(f'{r:.0f}' for r in figures[mode, name])}")


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="unary", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(_load(args.client, args.calls, args.streams, args.mode))
        return
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
