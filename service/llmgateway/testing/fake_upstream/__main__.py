"""Run the fake upstream on its own: python -m llmgateway.testing.fake_upstream [--port N]."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from llmgateway.testing.fake_upstream.app import FakeUpstream


async def _main(args: argparse.Namespace) -> None:
    fake = FakeUpstream(chunk_delay=args.chunk_delay, stream_chunks=args.stream_chunks)
    fake.record = not args.no_record
    await fake.start(args.host, args.port)
    print("fake upstream listening; point the gateway at it with:", flush=True)
    for name, value in fake.environment().items():
        print(f"  export {name}={value}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument(
        "--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks (default 0)"
    )
    parser.add_argument(
        "--stream-chunks", type=int, help="make every streamed answer exactly this many chunks"
    )
    parser.add_argument(
        "--no-record", action="store_true", help="keep no log of requests (long benchmark runs)"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
