"""A bare grpc.aio server with the gateway's contract and no upstream.

python -m bench.reference.bare --port N [--workers W] [--chunks C] [--chunk-delay S]

Complete answers at once with a CompleteResponse like the gateway's (content,
model, provider, finish reason, usage); StreamComplete sends C content_delta
events S seconds apart on a timer, then a done event with usage, as the
gateway does for the fake upstream's streams. What a gateway row costs above
this is not gRPC's: this is gRPC's own ceiling in Python on the machine.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

from bench.reference import serving
from bench.reference.contract import CompletionsOnly
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    import grpc

MODEL = "openai/gpt-4o-mini"
CHUNK = "tok "  # the fake upstream's chunk, which the load generators count


class BareServicer(CompletionsOnly):
    """Complete and StreamComplete, answered from memory."""

    def __init__(self, chunks: int, delay: float) -> None:
        self._chunks = chunks
        self._delay = delay

    async def Complete(  # noqa: N802  # gRPC's method name
        self, request: pb.CompleteRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.CompleteResponse:
        """The answer at once (built per call, as any server builds its own)."""
        return pb.CompleteResponse(
            id="gen-bare",
            model=MODEL,
            provider=common.PROVIDER_OPENROUTER,
            upstream_provider="OpenAI",
            content="Hello from the bare server.",
            finish_reason=common.FINISH_REASON_STOP,
            native_finish_reason="stop",
            usage=common.Usage(prompt_tokens=6, completion_tokens=8, total_tokens=14),
            attempts=1,
        )

    async def StreamComplete(  # noqa: N802  # gRPC's method name
        self, request: pb.StreamCompleteRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        """`chunks` deltas on a timer, then done with usage."""
        for _ in range(self._chunks):
            await asyncio.sleep(self._delay)
            yield pb.StreamCompleteResponse(content_delta=pb.ContentDelta(text=CHUNK))
        yield pb.StreamCompleteResponse(
            done=pb.CompletionDone(
                id="gen-bare",
                model=MODEL,
                provider=common.PROVIDER_OPENROUTER,
                upstream_provider="OpenAI",
                finish_reason=common.FINISH_REASON_STOP,
                native_finish_reason="stop",
                usage=common.Usage(
                    prompt_tokens=6, completion_tokens=self._chunks, total_tokens=6 + self._chunks
                ),
                attempts=1,
            )
        )


def main() -> int:
    """Entry point."""
    options = serving.parser(__doc__ or "")
    options.add_argument("--chunks", type=int, default=50, help="content events per stream")
    options.add_argument("--chunk-delay", type=float, default=0.005, help="seconds between them")
    args = options.parse_args()

    async def add(server: grpc.aio.Server) -> Callable[[], Awaitable[None]]:
        pb_grpc.add_CompletionServiceServicer_to_server(
            BareServicer(args.chunks, args.chunk_delay), server
        )

        async def close() -> None:
            return None

        return close

    return serving.main("bench.reference.bare", args, add)


if __name__ == "__main__":
    sys.exit(main())
