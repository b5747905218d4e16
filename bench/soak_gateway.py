"""The gateway under soak: one gateway process that also answers questions
about itself on its stdin and stdout, so the soak can see inside it without a
debug hook in service/.

Started by `python -m bench.soak` with the environment of a gateway pointed at
the fake upstream. It prints one JSON line, {"port": N}, once it serves; then,
for each line it reads:
- `tasks`: {"tasks": N}, the asyncio tasks not yet done (cheap, any time);
- `census`: the same after a full garbage collection, with the number of live
  Python objects and the commonest types (pauses the loop: only when quiet).
At the end of its stdin it drains and stops the gateway, and exits.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import logging
import os
import sys
from typing import Any

from service.config import Settings
from service.server import start_gateway

# How many of the commonest object types a census reports.
CENSUS_TYPES = 40


def snapshot(*, census: bool) -> dict[str, Any]:
    """What this process can say about itself, and no one else can."""
    if not census:
        return {"tasks": len(asyncio.all_tasks())}
    gc.collect()
    objects = gc.get_objects()
    types = collections.Counter(type(o).__qualname__ for o in objects)
    return {
        "tasks": len(asyncio.all_tasks()),
        "objects": len(objects),
        "types": dict(types.most_common(CENSUS_TYPES)),
    }


async def serve() -> None:
    """Run the gateway until stdin closes, answering on stdout."""
    gateway = await start_gateway(Settings.load(os.environ), address="127.0.0.1:0")
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(commands), os.fdopen(0, "rb", buffering=0)
    )
    _reply({"port": gateway.port})
    while line := await commands.readline():
        command = line.strip().decode()
        if command in ("tasks", "census"):
            _reply(snapshot(census=command == "census"))
        else:
            _reply({"error": f"unknown command {command!r}"})
    await gateway.stop(grace=5)


def _reply(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def main() -> None:
    """Entry point: python -m bench.soak_gateway (normally started by bench.soak)."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve())


if __name__ == "__main__":
    main()
