"""Workers on one port through SO_REUSEPORT, shared by the reference servers.

The parent starts `--workers` copies of the program (each `--worker-ready FD`),
waits until every one listens, prints one "serving" line (what the benchmark
waits for, so no load starts with half the workers up and all its connections
on the others), then forwards SIGTERM/SIGINT and waits for them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

READY_LINE = "serving"


def parser(description: str) -> argparse.ArgumentParser:
    """The options every reference server takes."""
    options = argparse.ArgumentParser(description=description)
    options.add_argument("--port", type=int, required=True)
    options.add_argument("--host", default="127.0.0.1")
    options.add_argument("--workers", type=int, default=1, help="processes on the port")
    options.add_argument("--worker-ready", type=int, default=None, help=argparse.SUPPRESS)
    return options


def main(
    module: str,
    args: argparse.Namespace,
    add_services: Callable[[grpc.aio.Server], Awaitable[Callable[[], Awaitable[None]]]],
) -> int:
    """Run as the parent (start the workers) or, with --worker-ready, as one worker.

    `add_services` registers the servicers in a worker's loop and returns what
    to await once the server stopped (closing its client sessions)."""
    if args.worker_ready is not None:
        asyncio.run(_worker(args, add_services))
        return 0
    return _parent(module, args)


async def _worker(
    args: argparse.Namespace,
    add_services: Callable[[grpc.aio.Server], Awaitable[Callable[[], Awaitable[None]]]],
) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    close = await add_services(server)
    server.add_insecure_port(f"{args.host}:{args.port}")
    await server.start()
    os.write(args.worker_ready, b"1")
    os.close(args.worker_ready)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(0.5)
    await close()


def without_workers(argv: list[str]) -> list[str]:
    """The parent's arguments for a worker: all but --workers (each worker is one)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            kept.append(arg)
    return kept


def _parent(module: str, args: argparse.Namespace) -> int:
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", module, *without_workers(sys.argv[1:])]
    children = [
        subprocess.Popen(  # noqa: S603  # this same program
            [*command, "--worker-ready", str(write_end)], pass_fds=(write_end,)
        )
        for _ in range(max(1, args.workers))
    ]
    os.close(write_end)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    ready = 0
    while ready < len(children):
        if any(child.poll() is not None for child in children):
            forward(signal.SIGTERM, None)
            break
        readable, _, _ = select.select([read_end], [], [], 0.2)
        if readable:
            ready += len(os.read(read_end, 64))
    os.close(read_end)
    if ready == len(children):
        print(f"{READY_LINE} on {args.host}:{args.port} with {ready} workers", flush=True)
    codes = [child.wait() for child in children]
    return 1 if ready < len(children) else max(codes, default=0)
