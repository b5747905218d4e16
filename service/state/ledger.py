"""The usage ledger: one row per call, written in batches off the call's path.

A call's row is written when the call is admitted, with status IN_FLIGHT,
before it goes upstream: `Ledger.call_admitted` waits for it. Admissions
are group-committed: one transaction writes whatever has queued up while the
previous one ran, so a busy gateway still makes a few writes a second, not one
per call, and an idle one adds one short transaction to a call's start. When
the call ends, `call_finished` queues its completed row (an update of the
in-flight row, or a new row for a call refused before admission), written
in the background every `_FLUSH_EVERY` seconds. So no call that went
upstream is missing from the ledger, whatever happens to the process: the
rows a dead process left IN_FLIGHT are reaped as LOST (service/state/reaper.py).

`close()` writes what is left, within the shutdown grace, and says in the
log how many rows it could not write. Reading is `usage()`: aggregates by
key, model or day.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from service.state.db import StateUnavailableError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from service.observe import CallRecord
    from service.state.db import Database, Row, Tx

logger = logging.getLogger(__name__)

Grouping = Literal["key", "model", "day"]
# Statuses of rows that are not a gRPC status code: a call still running,
# and one whose process died before it could say how the call ended.
IN_FLIGHT = "IN_FLIGHT"
LOST = "LOST"
_BATCH = 500
_FLUSH_EVERY = 0.2
# After a failed write, background rows wait this long before the next try.
_RETRY_EVERY = 1.0
# Failed-write warnings, at most this often (a database down for long).
_WARN_EVERY = 30.0
# Beyond this many unwritten records (a database down for long), the oldest
# are dropped and counted rather than growing memory without bound.
_MAX_QUEUED = 100_000
_COLUMNS = (
    "request_id, key_id, method, requested_model, served_model, provider, prompt_tokens, "
    "completion_tokens, cached_tokens, reasoning_tokens, cost_usd, latency_ms, ttft_ms, "
    "status, reason, attempts, fallbacks, created_at, instance_id, reservation_id"
)
_INSERT = (
    f"INSERT INTO usage_records ({_COLUMNS}) "  # noqa: S608  # constants
    f"VALUES ({', '.join('?' * len(_COLUMNS.split(',')))})"
)
# A finished call's fields, all but its id: what completing a row sets.
_FINISHED_COLUMNS = _COLUMNS.split(", ")[1:18]
_COMPLETE = (
    "UPDATE usage_records SET "  # noqa: S608  # constants
    f"{', '.join(f'{c} = ?' for c in _FINISHED_COLUMNS)} WHERE request_id = ?"
)
# Where cost_usd sits among a finished call's fields.
_COST_FIELD = _FINISHED_COLUMNS.index("cost_usd")


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


@dataclass(slots=True)
class _Admitted:
    """A call's IN_FLIGHT row, and the future its admission waits on."""

    row: tuple[object, ...]
    written: asyncio.Future[None]


@dataclass(slots=True)
class _Finished:
    """A call's completed row."""

    request_id: str
    fields: list[object]


@dataclass(slots=True)
class _CostFound:
    """A cost found after the call's row was written."""

    request_id: str
    cost_usd: float


@dataclass(slots=True)
class _Barrier:
    """flush() waits on this: written once everything queued before it is."""

    written: asyncio.Future[None]


_Op = _Admitted | _Finished | _CostFound | _Barrier


class Ledger:
    """Records every call; a CallObserver."""

    def __init__(
        self, db: Database, instance_id: str | None = None, close_grace: float = 30.0
    ) -> None:
        self._db = db
        # The gateway process (service/state/reaper.py) whose calls these are.
        self._instance_id = instance_id
        self._close_grace = close_grace
        self._queue: list[_Op] = []
        # Queued ops someone waits on (admissions, flushes): written at once.
        self._waited = 0
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        # The batch being written now.
        self._batch: list[_Op] = []
        self._stopping = False
        self._closed = False
        # When close() gives up (event-loop time).
        self._give_up = 0.0
        self._last_warning = 0.0
        self.dropped = 0
        self.unwritten_at_close = 0

    def start(self) -> None:
        """Start the background writer (on the running event loop)."""
        self._writer = asyncio.get_running_loop().create_task(self._write_forever())

    def call_started(self, record: CallRecord) -> None:
        """Nothing: `call_admitted` records the start (and is awaited)."""
        del record

    async def call_admitted(self, record: CallRecord, reservation_id: int | None) -> None:
        """Write the call's IN_FLIGHT row; returns once it is committed, with the
        rows of calls admitted meanwhile. Raises StateUnavailableError when it
        cannot be written: a call the ledger cannot record is not admitted."""
        if self._closed:
            raise StateUnavailableError("the usage ledger is closed: the gateway is stopping")
        admitted = _Admitted(
            (
                record.request_id,
                *_fields(record, IN_FLIGHT),
                self._instance_id,
                reservation_id,
            ),
            asyncio.get_running_loop().create_future(),
        )
        self._push(admitted, waited=True)
        if self._writer is None:
            await self._write_queued()
        # Shielded: the future is the batch's, not this call's to cancel.
        await asyncio.shield(admitted.written)

    def call_finished(self, record: CallRecord) -> None:
        """Queue the call's completed row. Calls refused for want of a valid key are
        left to the logs and metrics: anyone who can reach the port could otherwise
        grow the ledger without bound."""
        if record.status == "UNAUTHENTICATED":
            return
        if self._closed:
            self.unwritten_at_close += 1
            logger.error(
                "call %s ended after the usage ledger closed; its row is not written",
                record.request_id,
            )
            return
        self._push(_Finished(record.request_id, _fields(record, record.status)))

    async def amend_cost(self, request_id: str, cost_usd: float) -> None:
        """Set the cost of a recorded call (found after the call ended)."""
        for op in self._queue:
            if isinstance(op, _Finished) and op.request_id == request_id:
                op.fields[_COST_FIELD] = cost_usd
                return
        # Written, or being written: set it after that, in queue order.
        self._push(_CostFound(request_id, cost_usd))

    async def flush(self) -> None:
        """Write every queued row now (raises if the database cannot take them)."""
        if not self._queue and not self._batch and self._writer is not None:
            return
        barrier = _Barrier(asyncio.get_running_loop().create_future())
        self._push(barrier, waited=True)
        if self._writer is None:
            # Not started (or closed): write here.
            await self._write_queued()
        await asyncio.shield(barrier.written)

    async def close(self) -> bool:
        """Write what is left, trying for up to the close grace, then stop;
        whether every row was written. A write in progress is never abandoned
        (its transaction would commit unseen); rows still unwritten at the end
        are counted in the log."""
        self._give_up = asyncio.get_running_loop().time() + self._close_grace
        self._stopping = True
        self._wakeup.set()
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer
        else:
            await self._drain()
        self._closed = True
        unwritten = sum(isinstance(op, _Finished) for op in self._queue)
        costs = sum(isinstance(op, _CostFound) for op in self._queue)
        for op in self._queue:
            if isinstance(op, _Admitted | _Barrier) and not op.written.done():
                op.written.set_exception(
                    StateUnavailableError("the usage ledger closed before writing it")
                )
        self._queue.clear()
        if unwritten or costs:
            self.unwritten_at_close += unwritten
            logger.error(
                "the usage ledger could not write %d row(s) (and %d cost update(s)) within "
                "the shutdown grace of %.1f s: those calls stay IN_FLIGHT, to be reaped as "
                "LOST, or are missing if they were refused before admission",
                unwritten,
                costs,
                self._close_grace,
            )
        return not (unwritten or costs or self.unwritten_at_close)

    @property
    def pending(self) -> int:
        """Rows (and cost updates) not yet written, the batch being written included."""
        return len(self._queue) + len(self._batch)

    def _push(self, op: _Op, *, waited: bool = False) -> None:
        if len(self._queue) >= _MAX_QUEUED:
            for index, queued in enumerate(self._queue):
                if isinstance(queued, _Finished | _CostFound):
                    del self._queue[index]
                    self.dropped += 1
                    break
        self._queue.append(op)
        if waited:
            self._waited += 1
        if waited or len(self._queue) >= _BATCH:
            self._wakeup.set()

    async def _write_forever(self) -> None:
        wait = _FLUSH_EVERY
        while not self._stopping:
            if not self._waited:
                try:
                    async with asyncio.timeout(wait):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass
            self._wakeup.clear()
            if self._stopping:
                break
            wait = _FLUSH_EVERY if await self._write_queued() else _RETRY_EVERY
        await self._drain()

    async def _drain(self) -> None:
        """At close: write until the queue is empty or the close grace has passed."""
        loop = asyncio.get_running_loop()
        while self._queue and not await self._write_queued():
            if loop.time() + _RETRY_EVERY > self._give_up:
                return
            await asyncio.sleep(_RETRY_EVERY)

    async def _write_queued(self) -> bool:
        """Write the queue, a batch per transaction; whether it all went in."""
        while self._queue:
            batch, self._queue = self._queue[:_BATCH], self._queue[_BATCH:]
            waited = [op for op in batch if isinstance(op, _Admitted | _Barrier)]
            self._waited -= len(waited)
            self._batch = batch
            try:
                await self._db.run(
                    functools.partial(_write, ops=batch, instance_id=self._instance_id)
                )
            except BaseException as exc:
                # Admissions fail now (their calls are refused); flushes learn of
                # it; finished rows wait for the next try, in order.
                self._queue[:0] = [op for op in batch if isinstance(op, _Finished | _CostFound)]
                for op in waited:
                    if not op.written.done():
                        op.written.set_exception(_unavailable(exc))
                if not isinstance(exc, Exception):
                    raise
                self._warn(exc)
                return False
            finally:
                self._batch = []
            for op in waited:
                if not op.written.done():
                    op.written.set_result(None)
        return True

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            logger.warning(
                "writing the usage ledger failed (%d row(s) waiting); will retry: %s",
                sum(isinstance(op, _Finished) for op in self._queue),
                exc,
            )


def _unavailable(exc: BaseException) -> StateUnavailableError:
    if isinstance(exc, StateUnavailableError):
        return exc
    if not isinstance(exc, Exception):
        return StateUnavailableError("writing the usage ledger was interrupted")
    return StateUnavailableError(f"writing the usage ledger failed: {exc}")


def _fields(r: CallRecord, status: str) -> list[object]:
    """A call's fields in _FINISHED_COLUMNS order."""
    return [
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
        status,
        r.reason,
        r.attempts,
        r.fallbacks,
        r.started_at,
    ]


def _write(tx: Tx, ops: list[_Op], instance_id: str | None = None) -> None:
    """One batch, in order: a call's IN_FLIGHT row comes before its completion."""
    for op in ops:
        if isinstance(op, _Admitted):
            tx.execute(_INSERT, op.row)
        elif isinstance(op, _Finished):
            if not tx.execute(_COMPLETE, (*op.fields, op.request_id)):
                # Refused before admission (or its in-flight row never made it).
                tx.execute(_INSERT, (op.request_id, *op.fields, instance_id, None))
        elif isinstance(op, _CostFound):
            tx.execute(
                "UPDATE usage_records SET cost_usd = ? WHERE request_id = ?",
                (op.cost_usd, op.request_id),
            )


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
        # Calls in flight are calls, but have not failed (yet); LOST ones have.
        f"SUM(CASE WHEN status IN ('OK', '{IN_FLIGHT}') THEN 0 ELSE 1 END), "
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
