"""Run the fake upstream on its own: python -m fake_upstream [--port N]."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from fake_upstream.app import FakeUpstream


async def _main(host: str, port: int, chunk_delay: float) -> None:
    fake = FakeUpstream(chunk_delay=chunk_delay)
    await fake.start(host, port)
    print("fake upstream listening; point the gateway at it with:")
    for name, value in fake.environment().items():
        print(f"  export {name}={value}")
    await asyncio.Event().wait()


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument(
        "--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks (default 0)"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.host, args.port, args.chunk_delay))


if __name__ == "__main__":
    main()
