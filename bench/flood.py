"""A legitimate caller's latency with and without an unauthenticated flood.

python -m bench.flood [--calls N] [--rate R] [--concurrency C] [--workers W] [--kinds ...]

Starts the fake upstream and the gateway (`serve`, INFO logging to a file, as
in production) on loopback with one caller key issued. Then, in turn:

1. baseline: the legitimate caller alone makes N sequential unary calls;
2. for each flood kind, a separate process floods the gateway with
   Complete calls that must be refused (`repeated`: one wrong key over and
   over, as a misconfigured client does; `random`: a fresh well-formed random
   key per call, as an attacker does; `garbage`: tokens that cannot be keys;
   `none`: no key at all), while the legitimate caller makes its N calls again.

With `--rate` the flood is offered that many calls a second whatever the
gateway's pace (open loop, as an attacker sends); without, it sends as fast
as `--concurrency` calls in flight allow, so the gateway is always saturated
and a cheaper refusal shows as more refusals a second.

Prints, per phase, the legitimate caller's p50 and p99, the flood's refused
calls per second, and the bytes of log and the CPU time the gateway spent
per refused call (the legitimate calls' share, measured alone, taken out;
CPU time, unlike latency, barely depends on what else the machine runs). A
benchmark, not a test: it judges nothing, and every phase stops by itself
(after N calls, or after `--flood-seconds` at most).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench import processes as procs
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

MODEL = "openrouter/openai/gpt-4o-mini"
FLOOD_KINDS = ("repeated", "random", "garbage", "none")
CALL_TIMEOUT = 10.0


def _request() -> pb.CompleteRequest:
    return pb.CompleteRequest(
        model=MODEL, messages=[common.ChatMessage(role=common.ROLE_USER, content="hi")]
    )


# -- the flooding process -------------------------------------------------------------


def _flood_token(kind: str, fixed: str) -> str | None:
    if kind == "repeated":
        return fixed
    if kind == "random":
        return "lgw_" + secrets.token_urlsafe(32)
    if kind == "garbage":
        return secrets.token_hex(8)
    return None


async def _flood(
    address: str, kind: str, concurrency: int, seconds: float, rate: float
) -> dict[str, Any]:
    """Refused calls from `concurrency` loops, at `rate` calls/s in all (0:
    as fast as they can), until stdin closes or `seconds` pass."""
    statuses: Counter[str] = Counter()
    fixed = "lgw_" + secrets.token_urlsafe(32)
    request = _request()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The parent closes our stdin when its measurement is done.
    loop.add_reader(sys.stdin.fileno(), stop.set)
    loop.call_later(seconds, stop.set)

    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.CompletionServiceStub(channel)

        # Open loop: each worker keeps its own schedule, so a slower gateway
        # is offered the same load rather than less.
        interval = concurrency / rate if rate > 0 else 0.0

        async def worker(offset: float) -> None:
            due = loop.time() + offset
            while not stop.is_set():
                if interval:
                    due += interval
                    delay = due - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                token = _flood_token(kind, fixed)
                metadata = (("authorization", f"Bearer {token}"),) if token else ()
                try:
                    await stub.Complete(request, metadata=metadata, timeout=CALL_TIMEOUT)
                    statuses["OK"] += 1
                except grpc.aio.AioRpcError as error:
                    statuses[error.code().name] += 1

        print("flooding", flush=True)
        started = time.monotonic()
        await asyncio.gather(*(worker(i * interval / concurrency) for i in range(concurrency)))
        elapsed = time.monotonic() - started
    loop.remove_reader(sys.stdin.fileno())
    return {"statuses": dict(statuses), "seconds": elapsed}


# -- the legitimate caller -----------------------------------------------------------------


async def _legitimate(address: str, key: str, calls: int, warmup: int) -> list[float]:
    """Seconds per call of `calls` sequential unary calls (after `warmup`)."""
    metadata = (("authorization", f"Bearer {key}"),)
    request = _request()
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.CompletionServiceStub(channel)
        for i in range(warmup + calls):
            started = time.perf_counter()
            await stub.Complete(request, metadata=metadata, timeout=CALL_TIMEOUT)
            if i >= warmup:
                latencies.append(time.perf_counter() - started)
    return latencies


@dataclass
class Phase:
    """One measurement: the legitimate caller's figures, and the flood's."""

    name: str
    p50_ms: float
    p99_ms: float
    refused_per_second: float = 0.0
    refused: int = 0
    other_statuses: str = ""
    log_bytes_per_refusal: float | None = None
    # Gateway CPU time per refused call (the legitimate calls' share taken out).
    cpu_us_per_refusal: float | None = None


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its descendants so far."""
    total, queue = 0.0, [pid]
    while queue:
        current = queue.pop()
        with contextlib.suppress(OSError):
            # Fields 14 and 15 (utime, stime), after the parenthesised name.
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            children = Path(f"/proc/{current}/task/{current}/children").read_text()
            queue.extend(int(child) for child in children.split())
    return total


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass(frozen=True)
class Gateway:
    """The running gateway: where it listens, its process, its log, and what
    one legitimate call costs it (log bytes, CPU seconds), to take out."""

    address: str
    pid: int
    log: Path
    log_bytes_per_call: float = 0.0
    cpu_per_call: float = 0.0


def _baseline(gateway: Gateway, key: str, args: argparse.Namespace) -> tuple[Phase, Gateway]:
    """The legitimate caller alone; and the gateway with its per-call costs."""
    log_before, cpu_before = gateway.log.stat().st_size, _cpu_seconds(gateway.pid)
    latencies = asyncio.run(_legitimate(gateway.address, key, args.calls, args.warmup))
    time.sleep(0.3)  # the gateway's last log lines reach the file
    calls = args.calls + args.warmup
    measured = dataclasses.replace(
        gateway,
        log_bytes_per_call=(gateway.log.stat().st_size - log_before) / calls,
        cpu_per_call=(_cpu_seconds(gateway.pid) - cpu_before) / calls,
    )
    phase = Phase(
        "baseline", statistics.median(latencies) * 1000, _percentile(latencies, 0.99) * 1000
    )
    return phase, measured


def _flooded(name: str, gateway: Gateway, key: str, args: argparse.Namespace) -> Phase:
    """The legitimate caller's calls with a flood of kind `name` running."""
    command = [
        sys.executable,
        "-m",
        "bench.flood",
        "--flood",
        name,
        "--address",
        gateway.address,
        "--concurrency",
        str(args.concurrency),
        "--flood-seconds",
        str(args.flood_seconds),
        "--rate",
        str(args.rate),
    ]
    log_before, cpu_before = gateway.log.stat().st_size, _cpu_seconds(gateway.pid)
    flood = subprocess.Popen(  # noqa: S603  # our own module
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert flood.stdout is not None  # noqa: S101  # piped above
        if flood.stdout.readline().strip() != "flooding":
            raise RuntimeError("the flood process did not start")
        time.sleep(0.5)  # let the flood reach its pace
        latencies = asyncio.run(_legitimate(gateway.address, key, args.calls, args.warmup))
        # Closing its stdin (communicate does) stops the flood.
        output, _ = flood.communicate(timeout=args.flood_seconds + 30)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
    time.sleep(0.3)  # the gateway's last log lines reach the file
    result = json.loads(output)
    statuses: dict[str, int] = result["statuses"]
    refused = statuses.pop("UNAUTHENTICATED", 0)
    calls = args.calls + args.warmup
    flood_bytes = gateway.log.stat().st_size - log_before - gateway.log_bytes_per_call * calls
    flood_cpu = _cpu_seconds(gateway.pid) - cpu_before - gateway.cpu_per_call * calls
    return Phase(
        name,
        statistics.median(latencies) * 1000,
        _percentile(latencies, 0.99) * 1000,
        refused_per_second=refused / result["seconds"],
        refused=refused,
        other_statuses=", ".join(f"{k}={v}" for k, v in sorted(statuses.items())),
        log_bytes_per_refusal=max(0.0, flood_bytes) / refused if refused else None,
        cpu_us_per_refusal=max(0.0, flood_cpu) / refused * 1e6 if refused else None,
    )


def run(args: argparse.Namespace) -> list[Phase]:
    """Start the fake upstream and the gateway, run every phase, stop them."""
    fake_port, gateway_port = procs.free_port(), procs.free_port()
    env = procs.fake_environment(fake_port)
    key = procs.issue_caller_key(env["LLMGATEWAY_DB"], "bench-flood-caller")
    address = f"127.0.0.1:{gateway_port}"
    # INFO: the phases read the access log.
    command = procs.gateway_command(gateway_port, args.workers, log_level="INFO")
    phases: list[Phase] = []
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        log = scratch / "gateway.log"
        fake = stack.enter_context(
            procs.running(procs.fake_upstream_command(fake_port, 1, 0.0), log=scratch / "fake.log")
        )
        process = stack.enter_context(procs.running(command, env=env, log=log))
        procs.wait_for_port(fake_port, fake)
        procs.wait_for_port(gateway_port, process)
        print("baseline...", file=sys.stderr, flush=True)
        phase, gateway = _baseline(Gateway(address, process.pid, log), key, args)
        phases.append(phase)
        for kind in args.kinds:
            print(f"flood: {kind}...", file=sys.stderr, flush=True)
            phases.append(_flooded(kind, gateway, key, args))
    return phases


def table(phases: list[Phase]) -> str:
    """The figures, one row per phase."""
    header = (
        f"{'flood':<10} {'p50 ms':>8} {'p99 ms':>8} {'refused/s':>10} {'refused':>8} "
        f"{'log B/refusal':>14} {'CPU us/refusal':>15}  other"
    )
    lines = [header, "-" * len(header)]
    for p in phases:
        log_bytes = "" if p.log_bytes_per_refusal is None else f"{p.log_bytes_per_refusal:.1f}"
        cpu = "" if p.cpu_us_per_refusal is None else f"{p.cpu_us_per_refusal:.0f}"
        lines.append(
            f"{p.name:<10} {p.p50_ms:>8.2f} {p.p99_ms:>8.2f} {p.refused_per_second:>10.0f} "
            f"{p.refused:>8} {log_bytes:>14} {cpu:>15}  {p.other_statuses}"
        )
    return "\n".join(lines)


def main() -> None:
    """Entry point (also the flooding process, with --flood)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.flood",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=500, help="legitimate calls per phase")
    parser.add_argument("--warmup", type=int, default=50, help="legitimate calls not measured")
    parser.add_argument(
        "--flood-seconds", type=float, default=60.0, help="the longest a flood runs"
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="flood calls in flight, at most"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="flood calls per second offered (default 0: as fast as the gateway answers)",
    )
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    parser.add_argument(
        "--kinds",
        nargs="+",
        choices=FLOOD_KINDS,
        default=list(FLOOD_KINDS),
        help="which floods to run (default: all)",
    )
    parser.add_argument("--flood", choices=FLOOD_KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        result = asyncio.run(
            _flood(args.address, args.flood, args.concurrency, args.flood_seconds, args.rate)
        )
        print(json.dumps(result), flush=True)
        return
    phases = run(args)
    offered = f"{args.rate:g} calls/s offered" if args.rate else "closed loop"
    print(
        f"gateway workers: {args.workers}; flood concurrency: {args.concurrency} ({offered}); "
        f"legitimate calls per phase: {args.calls} (sequential, unary, {MODEL})"
    )
    print(table(phases))


if __name__ == "__main__":
    main()
