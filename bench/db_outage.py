"""Calls across a PostgreSQL restart: python -m bench.db_outage [--calls N].

Starts a throwaway PostgreSQL server (tests/postgres.py), the fake upstream
and a gateway on that database, issues a key with a budget (so every call
reserves and settles), and sends streaming calls at a steady rate. A quarter
of the way in, PostgreSQL restarts: `pg_ctl stop -m fast` (sessions are
ended by the administrator), `--down` seconds during which connections are
refused, then `pg_ctl start`.
Prints how the calls ended by status and reason (INTERNAL must be 0), the
tracebacks and warnings the gateway logged, and whether every reservation
was settled to what its call used once the database was back. Exits non-zero
when a call got INTERNAL, a traceback was logged or the reservations do not
add up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc

from llmgateway.server.config import Settings
from llmgateway.server.process.server import start_gateway
from llmgateway.server.state.db import Database
from llmgateway.server.state.keys import KeyStore
from llmgateway.server.state.schema import migrate
from llmgateway.testing.fake_upstream import FakeUpstream
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from tests.postgres import PostgresServer, fresh_database, throwaway_server


@dataclass
class Outcome:
    """How the calls ended, and what the gateway logged meanwhile."""

    statuses: Counter[str] = field(default_factory=Counter)
    tracebacks: int = 0
    warnings: list[str] = field(default_factory=list)
    settlements_waited: int = 0
    reservations: int = 0
    unsettled_reservations: int = 0
    reserved_tokens: int = 0
    used_tokens: int = 0
    reserved_usd: float = 0.0
    used_usd: float = 0.0

    @property
    def internal(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.startswith("INTERNAL"))

    @property
    def adds_up(self) -> bool:
        return (
            self.unsettled_reservations == 0
            and self.reserved_tokens == self.used_tokens
            and abs(self.reserved_usd - self.used_usd) < 1e-9
        )


class _Counting(logging.Handler):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__(logging.WARNING)
        self._outcome = outcome

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self._outcome.tracebacks += 1
        self._outcome.warnings.append(f"{record.levelname} {record.getMessage()}")


async def measure(
    server: PostgresServer, *, calls: int, rate: float, down: float, db_timeout: float
) -> Outcome:
    """Send `calls` streaming calls at `rate` a second, restarting PostgreSQL
    a quarter of the way in; how they ended."""
    outcome = Outcome()
    url = fresh_database(server.url, "outage")
    db = Database(url)
    try:
        migrate(db)
        _, key = KeyStore(db).create("outage", budget_usd=1000.0, budget_period="day")
    finally:
        db.close()
    handler = _Counting(outcome)
    logging.getLogger().addHandler(handler)
    try:
        async with FakeUpstream(chunk_delay=0.02, stream_chunks=8) as fake:
            settings = Settings.load(
                {
                    **fake.environment(),
                    "LLMGATEWAY_DB": url,
                    "LLMGATEWAY_DB_TIMEOUT": str(db_timeout),
                }
            )
            gateway = await start_gateway(settings, address="127.0.0.1:0")
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
                    stub = pb_grpc.CompletionServiceStub(channel)
                    await _run_calls(stub, key, server, outcome, calls=calls, rate=rate, down=down)
                assert gateway.state is not None  # noqa: S101  # started with a database
                limiter = gateway.state.limiter
                await gateway.calls.aclose()  # calls' own settlements, first try
                outcome.settlements_waited = limiter.settlements_waited
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(60.0):
                        await limiter.drain()
            finally:
                await gateway.stop(grace=1.0)
        _count_reservations(url, outcome)
    finally:
        logging.getLogger().removeHandler(handler)
    return outcome


async def _run_calls(
    stub: pb_grpc.CompletionServiceAsyncStub,
    key: str,
    server: PostgresServer,
    outcome: Outcome,
    *,
    calls: int,
    rate: float,
    down: float,
) -> None:
    started = time.monotonic()

    async def one(index: int) -> None:
        await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
        request = pb.StreamCompleteRequest(model="zai/glm-4.7", messages=[_user(f"call {index}")])
        call = stub.StreamComplete(
            request, metadata=(("authorization", f"Bearer {key}"),), timeout=60
        )
        try:
            async for event in call:
                if event.HasField("done") and event.done.HasField("usage"):
                    usage = event.done.usage
                    outcome.used_tokens += usage.prompt_tokens + usage.completion_tokens
                    outcome.used_usd += usage.cost_usd
        except grpc.aio.AioRpcError as error:
            outcome.statuses[f"{error.code().name} {_reason(error)}".strip()] += 1
        else:
            outcome.statuses["OK"] += 1

    async def restart() -> None:
        await asyncio.sleep(calls / rate / 4)
        await asyncio.to_thread(server.stop, "fast")
        await asyncio.sleep(down)
        await asyncio.to_thread(server.start)

    await asyncio.gather(restart(), *(one(i) for i in range(calls)))


def _user(text: str) -> common.ChatMessage:
    return common.ChatMessage(role=common.ROLE_USER, content=text)


def _reason(error: grpc.aio.AioRpcError) -> str:
    from google.rpc import error_details_pb2, status_pb2

    for name, value in error.trailing_metadata() or ():
        if name == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason)
    return ""


def _count_reservations(url: str, outcome: Outcome) -> None:
    db = Database(url)
    try:
        rows = db.run_sync(
            lambda tx: tx.fetchall("SELECT tokens, cost_usd, settled FROM reservations")
        )
    finally:
        db.close()
    outcome.reservations = len(rows)
    outcome.unsettled_reservations = sum(1 for row in rows if not row[2])
    outcome.reserved_tokens = sum(int(row[0]) for row in rows)
    outcome.reserved_usd = sum(float(row[1]) for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.db_outage", description=__doc__)
    parser.add_argument("--calls", type=int, default=1024)
    parser.add_argument("--rate", type=float, default=256.0, help="calls started per second")
    parser.add_argument("--down", type=float, default=1.0, help="seconds PostgreSQL stays down")
    parser.add_argument("--db-timeout", type=float, default=5.0, help="LLMGATEWAY_DB_TIMEOUT")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with throwaway_server() as server:
        if server is None:
            print("PostgreSQL is not installed here", file=sys.stderr)
            return 2
        outcome = asyncio.run(
            measure(
                server,
                calls=args.calls,
                rate=args.rate,
                down=args.down,
                db_timeout=args.db_timeout,
            )
        )
    print(
        f"\n{args.calls} streaming calls at {args.rate:g}/s across a PostgreSQL restart "
        f"(down {args.down:g} s)"
    )
    for status, count in sorted(outcome.statuses.items(), key=lambda item: -item[1]):
        print(f"  {status:<45} {count:>5}")
    print(f"  {'INTERNAL (must be 0)':<45} {outcome.internal:>5}")
    print(f"tracebacks logged: {outcome.tracebacks}")
    print(f"warning lines logged: {len(outcome.warnings)}")
    for line in outcome.warnings[:20]:
        print(f"  {line[:160]}")
    print(f"settlements that waited for the database: {outcome.settlements_waited}")
    print(
        f"reservations: {outcome.reservations}, unsettled {outcome.unsettled_reservations}; "
        f"tokens reserved {outcome.reserved_tokens} / used {outcome.used_tokens}; "
        f"USD reserved {outcome.reserved_usd:.6f} / used {outcome.used_usd:.6f}: "
        + ("adds up" if outcome.adds_up else "DOES NOT ADD UP")
    )
    failed = outcome.internal or outcome.tracebacks or not outcome.adds_up
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
