"""The usage ledger: one row per call, written in batches off the call's path.

Calls hand their record to `Ledger.call_finished`, which only queues it; a
background task writes what has queued up in one transaction, so a busy
gateway makes a few database writes a second, not one per call. `close()`
writes what is left. Reading is `usage()`: aggregates by key, model or day.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Sequence

    from service.observe import CallRecord
    from service.state.db import Database, Row, Tx

logger = logging.getLogger(__name__)

Grouping = Literal["key", "model", "day"]
_BATCH = 500
_FLUSH_EVERY = 0.2
# Beyond this many unwritten records (a database down for long), the oldest
# are dropped and counted rather than growing memory without bound.
_MAX_QUEUED = 100_000
# Where cost_usd sits in a queued row (see _row).
_COST_COLUMN = 10
_INSERT = (
    "INSERT INTO usage_records (request_id, key_id, method, requested_model, served_model, "
    "provider, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, cost_usd, "
    "latency_ms, ttft_ms, status, reason, attempts, fallbacks, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Aggregated usage of one group of calls."""

    group: str
    calls: int
    failed_calls: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_usd: float


class Ledger:
    """Records every call; a CallObserver."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._queue: list[tuple[object, ...]] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.dropped = 0
        # Costs found for rows that were in flight to the database at the time.
        self._late_costs: dict[str, float] = {}

    def start(self) -> None:
        """Start the background writer (on the running event loop)."""
        self._writer = asyncio.get_running_loop().create_task(self._write_forever())

    def call_started(self, record: CallRecord) -> None:
        """Nothing to record until the call ends."""
        del record

    def call_finished(self, record: CallRecord) -> None:
        """Queue the call's row. Calls refused for want of a valid key are left
        to the logs and metrics: anyone who can reach the port could otherwise
        grow the ledger without bound."""
        if record.status == "UNAUTHENTICATED":
            return
        if len(self._queue) >= _MAX_QUEUED:
            self._queue.pop(0)
            self.dropped += 1
        self._queue.append(_row(record))
        if len(self._queue) >= _BATCH:
            self._wakeup.set()

    async def amend_cost(self, request_id: str, cost_usd: float) -> None:
        """Set the cost of a recorded call (found after the call ended)."""
        for index, row in enumerate(self._queue):
            if row[0] == request_id:
                self._queue[index] = (*row[:_COST_COLUMN], cost_usd, *row[_COST_COLUMN + 1 :])
                return
        changed = await self._db.run(lambda tx: _set_cost(tx, request_id, cost_usd))
        if not changed:
            # The row is in a batch being written right now: set it after that.
            self._late_costs[request_id] = cost_usd

    async def flush(self) -> None:
        """Write every queued row now."""
        while self._queue:
            batch, self._queue = self._queue[:_BATCH], self._queue[_BATCH:]
            try:
                await self._db.run(functools.partial(_insert, rows=batch))
            except Exception:
                # Keep the rows for the next try; the database may be back by then.
                self._queue[:0] = batch
                raise
        if self._late_costs:
            late, self._late_costs = self._late_costs, {}
            for request_id, cost_usd in late.items():
                await self._db.run(
                    functools.partial(_set_cost, request_id=request_id, cost_usd=cost_usd)
                )

    async def close(self) -> None:
        """Stop the writer and write what is left."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        try:
            await self.flush()
        except Exception:
            logger.exception("could not write %d usage records at shutdown", len(self._queue))

    async def _write_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_FLUSH_EVERY):
                    await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self.flush()
            except Exception:
                logger.exception("writing the usage ledger failed; will retry")
                await asyncio.sleep(1.0)


def _row(r: CallRecord) -> tuple[object, ...]:
    return (
        r.request_id,
        r.key_id,
        r.method,
        r.requested_model,
        r.served_model,
        r.provider,
        r.prompt_tokens,
        r.completion_tokens,
        r.cached_tokens,
        r.reasoning_tokens,
        r.cost_usd,
        r.latency * 1000.0,
        None if r.time_to_first_token is None else r.time_to_first_token * 1000.0,
        r.status,
        r.reason,
        r.attempts,
        r.fallbacks,
        r.started_at,
    )


def _set_cost(tx: Tx, request_id: str, cost_usd: float) -> int:
    return tx.execute(
        "UPDATE usage_records SET cost_usd = ? WHERE request_id = ?", (cost_usd, request_id)
    )


def _insert(tx: Tx, rows: list[tuple[object, ...]]) -> None:
    for row in rows:
        tx.execute(_INSERT, row)


def usage_query(
    by: Grouping, since: float, until: float, key_ids: Sequence[str] | None, dialect: str
) -> tuple[str, tuple[object, ...]]:
    """The aggregate query and its parameters."""
    if by == "key":
        group = "key_id"
    elif by == "model":
        group = "requested_model"
    elif dialect == "postgresql":
        group = "to_char(to_timestamp(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    else:
        group = "strftime('%Y-%m-%d', created_at, 'unixepoch')"
    where = "created_at >= ? AND created_at < ?"
    params: tuple[object, ...] = (since, until)
    if key_ids is not None:
        where += f" AND key_id IN ({', '.join('?' * len(key_ids))})"
        params += tuple(key_ids)
    sql = (
        f"SELECT {group} AS grp, COUNT(*), "  # noqa: S608  # fixed text, values are parameters
        "SUM(CASE WHEN status = 'OK' THEN 0 ELSE 1 END), "
        "SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), "
        "SUM(reasoning_tokens), COALESCE(SUM(cost_usd), 0) "
        f"FROM usage_records WHERE {where} GROUP BY grp ORDER BY grp"
    )
    return sql, params


async def usage(
    db: Database, by: Grouping, since: float, until: float, key_ids: Sequence[str] | None = None
) -> list[UsageRow]:
    """Aggregated usage of calls started in [since, until), of some keys or all."""
    sql, params = usage_query(by, since, until, key_ids, db.dialect)
    rows = await db.run(lambda tx: tx.fetchall(sql, params), write=False)
    return [_usage_row(row) for row in rows]


def usage_sync(
    db: Database, by: Grouping, since: float, until: float, key_ids: Sequence[str] | None = None
) -> list[UsageRow]:
    """The same, blocking: for the command line."""
    sql, params = usage_query(by, since, until, key_ids, db.dialect)
    rows = db.run_sync(lambda tx: tx.fetchall(sql, params), write=False)
    return [_usage_row(row) for row in rows]


def _usage_row(row: Row) -> UsageRow:
    return UsageRow(
        group=str(row[0]),
        calls=int(row[1]),
        failed_calls=int(row[2]),
        prompt_tokens=int(row[3]),
        completion_tokens=int(row[4]),
        cached_tokens=int(row[5]),
        reasoning_tokens=int(row[6]),
        cost_usd=float(row[7]),
    )


def parse_since(text: str, now: float) -> float:
    """`7d`, `24h`, `30m`, or an ISO date/time (UTC unless it says otherwise)."""
    units = {"d": 86400.0, "h": 3600.0, "m": 60.0}
    if text and text[-1] in units and text[:-1].isdigit():
        return now - int(text[:-1]) * units[text[-1]]
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        msg = f"--since {text!r}: use 7d, 24h, 30m or an ISO date such as 2026-11-01"
        raise ValueError(msg) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()
