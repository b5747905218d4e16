"""The gateway under soak: one gateway process that also answers questions
about itself on its stdin and stdout, so the soak can see inside it without a
debug hook in service/.

Started by `python -m bench.soak` with the environment of a gateway pointed at
the fake upstream. It prints one JSON line, {"port": N}, once it serves; then,
for each line it reads:
- `tasks`: {"tasks": N, "blocks": M}, the asyncio tasks not yet done and the
  blocks Python's allocator holds, garbage included (cheap, any time);
- `census`: the same after a full garbage collection, with the number of live
  Python objects (those the collector tracks), the commonest types, and the
  blocks Python's allocator holds (every object, strings and bytes included);
  pauses the loop, so only when quiet;
- `mark` and `growth`, when started with `-X tracemalloc=N`: remember the
  Python heap now; later, where it grew most since (by allocating traceback).
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
import tracemalloc
from typing import Any

from llmgateway.server.config import Settings
from llmgateway.server.process.server import start_gateway

# How many of the commonest object types a census reports.
CENSUS_TYPES = 40
# How many places of heap growth `growth` reports.
GROWTH_PLACES = 8


def snapshot(*, census: bool) -> dict[str, Any]:
    """What this process can say about itself, and no one else can."""
    if not census:
        return {"tasks": len(asyncio.all_tasks()), "blocks": sys.getallocatedblocks()}
    gc.collect()
    objects = gc.get_objects()
    types = collections.Counter(type(o).__qualname__ for o in objects)
    found = {
        "tasks": len(asyncio.all_tasks()),
        "objects": len(objects),
        "types": dict(types.most_common(CENSUS_TYPES)),
        "blocks": sys.getallocatedblocks(),
    }
    if tracemalloc.is_tracing():
        found["traced_mb"] = tracemalloc.get_traced_memory()[0] / 2**20
    return found


class HeapTracker:
    """Where the Python heap grew between `mark` and `growth` (tracemalloc)."""

    def __init__(self) -> None:
        self._mark: tracemalloc.Snapshot | None = None

    def mark(self) -> dict[str, Any]:
        """Remember the heap as it is now."""
        if not tracemalloc.is_tracing():
            return {"error": "not tracing: start with -X tracemalloc=N"}
        self._mark = _heap()
        return {"marked": True}

    def growth(self) -> dict[str, Any]:
        """The places that grew most since `mark`, each with its traceback."""
        if self._mark is None:
            return {"error": "no mark"}
        stats = [s for s in _heap().compare_to(self._mark, "traceback") if s.size_diff > 0]
        stats.sort(key=lambda stat: stat.size_diff, reverse=True)
        return {
            "growth": [
                {
                    "kb": stat.size_diff / 1024,
                    "blocks": stat.count_diff,
                    "where": [f"{f.filename}:{f.lineno}" for f in stat.traceback],
                }
                for stat in stats[:GROWTH_PLACES]
            ]
        }


def _heap() -> tracemalloc.Snapshot:
    gc.collect()
    return tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(inclusive=False, filename_pattern=tracemalloc.__file__)]
    )


async def serve() -> None:
    """Run the gateway until stdin closes, answering on stdout."""
    gateway = await start_gateway(Settings.load(os.environ), address="127.0.0.1:0")
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(commands), os.fdopen(0, "rb", buffering=0)
    )
    _reply({"port": gateway.port})
    heap = HeapTracker()
    while line := await commands.readline():
        command = line.strip().decode()
        if command in ("tasks", "census"):
            _reply(snapshot(census=command == "census"))
        elif command == "mark":
            _reply(heap.mark())
        elif command == "growth":
            _reply(heap.growth())
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
