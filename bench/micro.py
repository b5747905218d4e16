"""Per-chunk costs of the gateway's own streaming code, in microseconds.

python -m bench.micro. Each figure is the median of several timed loops over a
realistic OpenRouter chunk; they show how much of a streamed chunk's cost is
ours (decode, parse, translate) next to what gRPC and the network cost.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import timeit

import orjson

from llmgateway.server.config import OpenRouterSettings, Secret, Timeouts
from llmgateway.server.providers.openai_compatible.stream import StreamAssembler
from llmgateway.server.providers.openrouter import OpenRouterProvider
from llmgateway.server.providers.sse import ServerSentEvent, SSEDecoder
from llmgateway.server.routing.router import Route
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

CHUNK = (
    b'data: {"id":"gen-1739458867-kUKFjpDGCEBBvK6V46PX","provider":"OpenAI",'
    b'"model":"openai/gpt-4o-mini","object":"chat.completion.chunk","created":1739458867,'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"},'
    b'"finish_reason":null,"native_finish_reason":null,"logprobs":null}],'
    b'"system_fingerprint":"fp_72ed7ab54c"}\n\n'
)
PAYLOAD = CHUNK[len(b"data: ") : -2]
ROUTE = Route(common.PROVIDER_OPENROUTER, "openai/gpt-4o-mini", "openrouter/openai/gpt-4o-mini")


def per_call_us(statement: object, number: int = 20000) -> float:
    """Median microseconds per call over five loops."""
    timer = timeit.Timer(statement)  # type: ignore[arg-type]  # a zero-argument callable
    return statistics.median(timer.repeat(5, number)) / number * 1e6


async def measure() -> dict[str, float]:
    provider = OpenRouterProvider(OpenRouterSettings(api_key=Secret("sk-or-v1-micro")), Timeouts())
    decoder = SSEDecoder()
    assembler = StreamAssembler(provider, ROUTE, include_reasoning=True)
    event = ServerSentEvent(data=PAYLOAD)
    message = pb.StreamCompleteResponse(content_delta=pb.ContentDelta(text="Hello"))
    figures = {
        "SSE decode (one event, one read)": per_call_us(lambda: decoder.feed(CHUNK)),
        "JSON parse, orjson": per_call_us(lambda: orjson.loads(PAYLOAD)),
        "JSON parse, stdlib json": per_call_us(lambda: json.loads(PAYLOAD)),
        "chunk -> event (assembler, incl. orjson)": per_call_us(lambda: assembler.on_event(event)),
        "build the proto event": per_call_us(
            lambda: pb.StreamCompleteResponse(content_delta=pb.ContentDelta(text="Hello"))
        ),
        "serialize the proto event": per_call_us(message.SerializeToString),
    }
    await provider.aclose()
    return figures


def main() -> None:
    """Print the table."""
    figures = asyncio.run(measure())
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        print(f"{name.ljust(width)}  {value:6.2f} us")


if __name__ == "__main__":
    main()
