"""`llmgateway demo`: the whole path on one machine, no keys needed.

Starts the fake upstream on loopback, a gateway pointed at it, and streams a
completion through a real gRPC channel into the terminal: from each model asked
for, then from `route/default`, whose decision (which entry, which target, what
was passed over and why) is printed after the answer.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import tempfile
from pathlib import Path
from typing import TextIO

import grpc

from llmgateway.client.render import StreamPrinter, decision_lines, dim
from llmgateway.server.config import Settings
from llmgateway.server.process.server import start_gateway
from llmgateway.testing.fake_upstream import FakeUpstream
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from llmgateway.v1 import routing_pb2 as rpb

# The demo gateway's aliases and routes: the README's example config from its
# [aliases] on (tests/test_server.py keeps them equal), so the README's alias
# and Routes examples run against a kept demo as printed.
DEMO_CONFIG = """\
[aliases]
fast = "zai/glm-4.5-flash"
smart = ["openrouter/anthropic/claude-sonnet-4.5", "openrouter/openai/gpt-4o"]
# The hybrid approach: the direct provider first, the same model through OpenRouter, then GLM.
sonnet = ["anthropic/claude-sonnet-4-5", "openrouter/anthropic/claude-sonnet-4.5", "zai/glm-4.7"]

[aliases.coding]
targets = [
  { model = "zai/glm-4.7", zai_endpoint = "coding" },
  "openrouter/z-ai/glm-4.7",
  "openrouter/anthropic/claude-sonnet-4.5",
]
# Optional; the default is below.
fallback_on = ["UPSTREAM_RATE_LIMITED", "UPSTREAM_OVERLOADED", "UPSTREAM_UNAVAILABLE"]

# Callers send model "route/default"; the gateway picks the entry by task (docs/routing.md).
[routes.default]
default = "fast"
code = "coding"
agent = "sonnet"
vision = ["gemini/gemini-2.5-flash", "openai/gpt-4o"]
extraction = { targets = ["openai/gpt-4o-mini", "gemini/gemini-2.5-flash"], cost_tier = { high = "openai/gpt-4o" } }
summarization = "gemini/gemini-2.5-flash"
translation = "smart"
chinese = "zai/glm-4.7"

[routes.cheap]
default = ["groq/llama-3.3-70b-versatile", "ollama/llama3.2"]
"""
# Code fences: the rules infer a coding task, so the `code` entry serves.
ROUTED_PROMPT = "Why does this loop never end?\n```python\nwhile i < 10:\n    print(i)\n```"


async def run_demo(prompt: str, models: list[str], address: str, keep_running: bool) -> int:
    """Stream `prompt` from each model; returns the exit code."""
    # The demo's calls go to a state database of its own, not the user's, and
    # the gateway runs open: no need to say so loudly here.
    logging.getLogger("llmgateway.server.process.server").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="llmgateway-demo-") as state:
        async with FakeUpstream(chunk_delay=0.03) as fake:
            db = f"{state}/state.db"
            config = Path(state, "demo.toml")
            await asyncio.to_thread(config.write_text, DEMO_CONFIG, encoding="utf-8")
            settings = Settings.load({**fake.environment(), "LLMGATEWAY_DB": db}, config)
            gateway = await start_gateway(settings, address=address)
            target = f"127.0.0.1:{gateway.port}"
            print(f"fake upstream on {fake.base_url}; gateway on {target}\n")
            failures = 0
            try:
                async with grpc.aio.insecure_channel(target) as channel:
                    stub = pb_grpc.CompletionServiceStub(channel)
                    for model in models:
                        failures += await _stream_one(stub, model, prompt, sys.stdout)
                    failures += await _stream_one(stub, "route/default", ROUTED_PROMPT, sys.stdout)
                if keep_running:
                    # SIGTERM (a script's `kill`, a supervisor) stops it as Ctrl-C
                    # does: the gateway drains and the demo's state folder goes.
                    # Installed before saying it runs, so no SIGTERM comes too early.
                    stopped = asyncio.Event()
                    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
                    print(
                        f"gateway still running on {target}; try:\n"
                        f'  grpcurl -plaintext -d \'{{"model": "zai/glm-4.7", "messages": '
                        f'[{{"role": "ROLE_USER", "content": "hi"}}]}}\' {target} '
                        "llmgateway.v1.CompletionService/StreamComplete\n"
                        f"  llmgateway chat --target {target} route/default "
                        '"Translate good night into French" --explain\nCtrl-C stops it.'
                    )
                    await stopped.wait()
            finally:
                await gateway.stop(grace=1.0)
    return 1 if failures else 0


async def _stream_one(
    stub: pb_grpc.CompletionServiceAsyncStub, model: str, prompt: str, out: TextIO
) -> int:
    """Print one streamed completion; 1 if it failed."""
    out.write(f"$ StreamComplete model={model}\n")
    request = pb.StreamCompleteRequest(
        model=model, messages=[common.ChatMessage(role=common.ROLE_USER, content=prompt)]
    )
    if model.startswith("route/"):
        out.write(f"{dim(prompt, out)}\n")
        request.routing.CopyFrom(rpb.RoutingHints(explain=True))
    printer = StreamPrinter(out, out)
    try:
        async for event in stub.StreamComplete(request, timeout=30):
            printer.show(event)
        printer.end()
        done = printer.done
        if done is not None:
            usage = done.usage
            cost = f", cost ${usage.cost_usd:.6f}" if usage.HasField("cost_usd") else ""
            summary = (
                f"[done] served by {done.model} via "
                f"{done.upstream_provider or common.Provider.Name(done.provider)}, "
                f"finish {common.FinishReason.Name(done.finish_reason)}, "
                f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion "
                f"tokens{cost}"
            )
            out.write(f"\n{dim(summary, out)}\n")
            if done.HasField("routing"):
                lines = decision_lines(done.routing)
                out.writelines(f"{dim('[route] ' + line, out)}\n" for line in lines)
            out.write("\n")
            out.flush()
    except grpc.aio.AioRpcError as error:
        printer.end()
        out.write(f"\nerror: {error.code().name}: {error.details()}\n\n")
        return 1
    return 0
