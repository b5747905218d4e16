"""Overload: N streams at once against `llmgateway serve` with its default
settings. python -m bench.overload [--streams 3000] [--workers N] [--max-concurrent-upstream N]

Prints how every stream ended (OK, or status and ErrorInfo reason) and how
many access lines the gateway wrote: every call the caller sees must have
been a call the gateway knew of (an access line), so a bare CANCELLED that
gRPC itself produced shows up as a stream without a reason and a missing line.
A benchmark, not a test: tests/test_server.py holds the test of the same thing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc
from google.rpc import error_details_pb2, status_pb2

from bench import processes as procs
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

MODEL = "openrouter/openai/gpt-4o-mini"


def outcome(error: grpc.aio.AioRpcError) -> str:
    """STATUS REASON (the reason from ErrorInfo, or `(no reason)`)."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    reason = "(no reason)"
    if isinstance(raw, bytes):
        for detail in status_pb2.Status.FromString(raw).details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                reason = info.reason
    return f"{error.code().name} {reason}"


async def drive(address: str, streams: int, channels: int) -> Counter[str]:
    """`streams` StreamComplete calls started together over `channels` connections."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    opened = [grpc.aio.insecure_channel(address, options=options) for _ in range(channels)]
    stubs = [pb_grpc.CompletionServiceStub(c) for c in opened]
    request = pb.StreamCompleteRequest(
        model=MODEL, messages=[common.ChatMessage(role=common.ROLE_USER, content="Say hello.")]
    )
    outcomes: Counter[str] = Counter()

    async def one(i: int) -> None:
        try:
            async for _ in stubs[i % channels].StreamComplete(request, timeout=120):
                pass
        except grpc.aio.AioRpcError as error:
            outcomes[outcome(error)] += 1
        else:
            outcomes["OK"] += 1

    try:
        for stub in stubs:  # connected and warm before the burst
            async for _ in stub.StreamComplete(request, timeout=30):
                pass
        await asyncio.gather(*(one(i) for i in range(streams)))
    finally:
        for channel in opened:
            await channel.close()
    return outcomes


def _client_main(args: argparse.Namespace) -> None:
    counts = asyncio.run(drive(args.address, args.streams, args.channels))
    json.dump(dict(counts), sys.stdout)


def main() -> int:
    """Start a fake upstream and a gateway, burst, report; the exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=3000)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument(
        "--max-concurrent-upstream",
        type=int,
        default=None,
        help="LLMGATEWAY_MAX_CONCURRENT_UPSTREAM for the gateway (default: its own)",
    )
    parser.add_argument("--client", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        args.address = args.client
        _client_main(args)
        return 0
    fake_port, gateway_port = procs.free_port(), procs.free_port()
    env = procs.fake_environment(fake_port)
    if args.max_concurrent_upstream is not None:
        env["LLMGATEWAY_MAX_CONCURRENT_UPSTREAM"] = str(args.max_concurrent_upstream)
    command = procs.gateway_command(gateway_port, args.workers)
    command[command.index("--log-level") + 1] = "INFO"
    command += ["--log-format", "json"]
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "gateway.log"
        with (
            procs.running(procs.fake_upstream_command(fake_port, 50, 0.005)) as fake,
            procs.running(command, env=env, log=log) as gateway,
        ):
            procs.wait_for_port(fake_port, fake)
            procs.wait_for_port(gateway_port, gateway)
            started = time.monotonic()
            done = subprocess.run(  # noqa: S603  # our own module
                [
                    sys.executable,
                    "-m",
                    "bench.overload",
                    "--client",
                    f"127.0.0.1:{gateway_port}",
                    "--streams",
                    str(args.streams),
                    "--channels",
                    str(args.channels),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            seconds = time.monotonic() - started
            time.sleep(1.0)  # the last access lines
        lines = log.read_text(errors="replace").splitlines()
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return 1
    counts = Counter(json.loads(done.stdout))
    access = sum('"message":"call finished"' in line for line in lines)
    levels = Counter(json.loads(line).get("level", "?") for line in lines if line.startswith("{"))
    others = [line for line in lines if not line.startswith("{")]
    warm_up = args.channels
    print(f"{args.streams} streams at once, {args.channels} connections; {seconds:.1f} s")
    for name, count in counts.most_common():
        print(f"  {count:>6}  {name}")
    unexplained = sum(n for name, n in counts.items() if name != "OK" and "(no reason)" in name)
    print(
        f"access lines: {access - warm_up} for {args.streams} streams; streams ended without "
        f"a reason: {unexplained}"
    )
    print(f"gateway log: {dict(levels)}; {len(others)} lines not from its logger")
    for line in [*(x for x in lines if '"level":"ERROR"' in x), *others][:5]:
        print(f"  {line[:300]}")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
