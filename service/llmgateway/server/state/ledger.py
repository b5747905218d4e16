"""The usage ledger: one row per call, written in batches off the call's path.

A call's row is written when the call is admitted, with status IN_FLIGHT,
before it goes upstream: `Ledger.call_admitted` waits for it. Admissions
are group-committed: one transaction writes whatever has queued up while the
previous one ran, so a busy gateway still makes a few writes a second, not one
per call. An admission that finds nothing queued or being written is
committed at once on the event loop instead, when SQLite's lock is free
(`Database.try_now`, state/loop_writes.py): the hop to the database thread
and back cost more than the row. When the call ends, `call_finished` queues
its completed row (an update of the in-flight row, or a new row for a call
refused before admission), written in the background every `_FLUSH_EVERY`
seconds. So no call that went upstream is missing from the ledger, whatever happens to the process: the
rows a dead process left IN_FLIGHT are reaped as LOST (service/llmgateway/server/state/reaper.py).

An admission waits at most the database timeout, whatever the batch it is
in is doing, and fails at once while the database is known to be
unavailable and a batch is already trying it: a stalled database holds no
call longer than the timeout. A batch that commits after its calls were
refused leaves their rows IN_FLIGHT for a moment only: each refused call's
completion waits for that batch and overwrites its row.

`close()` writes what is left, by the shutdown deadline, and says in the
log how many rows it could not write. Reading is `usage()`: aggregates by
key, model, day, route or task.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from llmgateway.server.state.db import StateUnavailableError
from llmgateway.server.state.threads import consume_outcome

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from llmgateway.server.observability.observe import CallRecord
    from llmgateway.server.state.db import Database, Row, Tx

logger = logging.getLogger(__name__)

Grouping = Literal["key", "model", "day", "route", "task"]
# Statuses of rows that are not a gRPC status code: a call still running,
# and one whose process died before it could say how the call ended.
IN_FLIGHT = "IN_FLIGHT"
LOST = "LOST"
_BATCH = 500
# An admission written on the event loop (see above), at most this often.
_WRITE_HERE_EVERY = 0.001
_FLUSH_EVERY = 0.2
# After a failed write, background rows wait this long before the next try.
_RETRY_EVERY = 1.0
# Failed-write warnings, at most this often (a database down for long).
_WARN_EVERY = 30.0
# At shutdown, a write is given at least this long, even past the deadline.
_MIN_WITHIN = 0.1
# Beyond this many unwritten records (a database down for long), the oldest
# are dropped and counted rather than growing memory without bound.
_MAX_QUEUED = 100_000
_COLUMNS = (
    "request_id, key_id, method, requested_model, served_model, provider, prompt_tokens, "
    "completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost_usd, "
    "latency_ms, ttft_ms, status, reason, attempts, fallbacks, created_at, route, task, "
    "task_source, instance_id, reservation_id"
)
_INSERT = (
    f"INSERT INTO usage_records ({_COLUMNS}) "  # noqa: S608  # constants
    f"VALUES ({', '.join('?' * len(_COLUMNS.split(',')))})"
)
# A finished call's fields, all but its id: what completing a row sets (not
# the instance and reservation, which the admission wrote).
_FINISHED_COLUMNS = _COLUMNS.split(", ")[1:-2]
_COMPLETE = (
    "UPDATE usage_records SET "  # noqa: S608  # constants
    f"{', '.join(f'{c} = ?' for c in _FINISHED_COLUMNS)} WHERE request_id = ?"
)
# Admissions per INSERT statement: 41 rows of 24 values (984) stays under
# SQLite's oldest limit of 999 parameters (45 rows, right for 21 values, would
# be 1,080). Recompute when _COLUMNS grows.
_ROWS_PER_INSERT = 41
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
    # Prompt tokens written to the provider's cache (part of prompt_tokens).
    cache_write_tokens: int


@dataclass(slots=True)
class _Admitted:
    """A call's IN_FLIGHT row, and the future its admission waits on."""

    row: tuple[object, ...]
    written: asyncio.Future[None]


@dataclass(slots=True)
class _Finished:
    """A call's completed row; written only once its admission's write is
    over (`after`), so the completion never lands before the in-flight row."""

    request_id: str
    fields: list[object]
    after: asyncio.Future[None] | None = None


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


class _Writer:
    """One queue of ledger writes and the task that writes it, as many as have
    queued up per transaction. `eager`: write as soon as something is queued
    (admissions, which calls wait on); else every _FLUSH_EVERY seconds, or at
    once for a flush or a full batch (completions)."""

    def __init__(self, db: Database, write: Callable[..., None], *, eager: bool) -> None:
        self.queue: list[_Op] = []
        # The batch being written now.
        self.batch: list[_Op] = []
        self._db = db
        self._write = write
        self._eager = eager
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Whether some write failed for want of the database since the last that went in.
        self.failing = False
        self._stopping = False
        self._give_up = 0.0
        self.last_error: Exception | None = None
        self._last_warning = 0.0

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._write_forever())

    def push(self, op: _Op, *, now: bool = False) -> None:
        self.queue.append(op)
        if now or self._eager or len(self.queue) >= _BATCH:
            self._wakeup.set()

    def withdraw(self, op: _Op) -> bool:
        """Take `op` out of the queue if no write has taken it yet; whether it was."""
        for index, queued in enumerate(self.queue):
            if queued is op:
                del self.queue[index]
                return True
        return False

    async def stop(self, give_up: float) -> None:
        """Write what is queued, trying until `give_up` (loop time), then stop.
        A write in progress is never abandoned: its transaction would commit
        unseen. Writes begun while stopping are bounded by what is left until
        `give_up` (at least _MIN_WITHIN)."""
        self._give_up = give_up
        self._stopping = True
        self._wakeup.set()
        task, self._task = self._task, None
        if task is not None:
            await task
        else:
            await self._drain()

    async def write_now(self) -> None:
        """Write what is queued here and now (the writer is not running)."""
        await self.write_queued()

    async def _write_forever(self) -> None:
        wait = _FLUSH_EVERY
        while not self._stopping:
            try:
                async with asyncio.timeout(None if self._eager else wait):
                    await self._wakeup.wait()
            except TimeoutError:
                pass
            self._wakeup.clear()
            if self._stopping:
                break
            wait = _FLUSH_EVERY if await self.write_queued() else _RETRY_EVERY
        await self._drain()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self.queue and loop.time() < self._give_up:
            if await self.write_queued():
                return
            await asyncio.sleep(min(_RETRY_EVERY, max(0.0, self._give_up - loop.time())))

    async def write_queued(self) -> bool:
        """Write the queue, a batch per transaction; whether it went in (all of
        it that was ready to go)."""
        while self.queue:
            ready = 0
            for op in self.queue[:_BATCH]:
                if isinstance(op, _Finished) and op.after is not None and not op.after.done():
                    break
                ready += 1
            if not ready:
                return True
            batch, self.queue = self.queue[:ready], self.queue[ready:]
            self.batch = batch
            try:
                writes = [op for op in batch if not isinstance(op, _Barrier)]
                if writes:
                    await self._db.run(
                        functools.partial(self._write, ops=writes), within=self._within()
                    )
            except BaseException as exc:
                # Admissions fail now (their calls are refused), flushes learn
                # of it; completed rows wait for the next try, in order.
                self.queue[:0] = [op for op in batch if isinstance(op, _Finished | _CostFound)]
                for op in batch:
                    if isinstance(op, _Admitted | _Barrier) and not op.written.done():
                        op.written.set_exception(_unavailable(exc))
                if not isinstance(exc, Exception):
                    raise
                self.last_error = exc
                self.failing = isinstance(exc, StateUnavailableError)
                self._warn(exc)
                return False
            finally:
                self.batch = []
            self.last_error = None
            self.failing = False
            for op in batch:
                if isinstance(op, _Admitted | _Barrier) and not op.written.done():
                    op.written.set_result(None)
        return True

    def _within(self) -> float | None:
        """The bound on a write: the database's timeout, but while stopping no
        later than the deadline (at least _MIN_WITHIN)."""
        if not self._stopping:
            return None
        left = self._give_up - asyncio.get_running_loop().time()
        return max(_MIN_WITHIN, min(self._db.timeout, left))

    def _warn(self, exc: Exception) -> None:
        # At most every _WARN_EVERY seconds: a database down for long fails every write.
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            logger.warning(
                "writing the usage ledger failed (%d row(s) waiting); will retry: %s",
                sum(isinstance(op, _Finished) for op in self.queue),
                exc,
            )


class Ledger:
    """Records every call; a CallObserver."""

    def __init__(
        self, db: Database, instance_id: str | None = None, close_grace: float = 30.0
    ) -> None:
        # The gateway process (service/llmgateway/server/state/reaper.py) whose calls these are.
        self._instance_id = instance_id
        self._db = db
        self._close_grace = close_grace
        # Two writers, so admissions (which calls wait on) never queue behind
        # a batch of completions (which nobody waits on).
        self._admissions = _Writer(db, _insert_admitted, eager=True)
        self._completions = _Writer(
            db, functools.partial(_write_finished, instance_id=instance_id), eager=False
        )
        # Loop time before which an admission is queued, not written here,
        # and whether one was written here in this turn of the loop.
        self._write_here_after = 0.0
        self._wrote_here_this_turn = False
        # Request id -> its admission's write, while that is pending.
        self._admitting: dict[str, asyncio.Future[None]] = {}
        self._closed = False
        self.dropped = 0
        self.unwritten_at_close = 0

    def start(self) -> None:
        """Start the background writers (on the running event loop)."""
        self._admissions.start()
        self._completions.start()

    def call_started(self, record: CallRecord) -> None:
        """Nothing: `call_admitted` records the start (and is awaited)."""
        del record

    async def call_admitted(self, record: CallRecord, reservation_id: int | None) -> None:
        """Write the call's IN_FLIGHT row; returns once it is committed, with the
        rows of calls admitted meanwhile. Raises StateUnavailableError when it
        cannot be written within the database timeout, or at once while the
        database is known unavailable and a write is already trying it: a call
        the ledger cannot record is not admitted. The call's completion
        (`call_finished`) then completes the row all the same, should the
        batch commit it after all."""
        if self._closed:
            raise StateUnavailableError("the usage ledger is closed: the gateway is stopping")
        writer = self._admissions
        if writer.batch and (writer.failing or self._db.unavailable):
            # A write is stuck on a database already failing: queueing behind
            # it would only hold the call for as long again.
            raise StateUnavailableError(
                f"the state database {self._db.display} is unavailable (the call's "
                "admission was not queued behind a write still trying it)"
            )
        row = (record.request_id, *_fields(record, IN_FLIGHT), self._instance_id, reservation_id)
        # Nothing queued or being written: this row is a batch of one, and
        # SQLite can take it here and now unless another connection holds
        # its lock (then it queues as below, bounded by the timeout). The
        # hop to the database thread and back cost more than the write. At
        # most one per loop turn and one a millisecond, though: admissions
        # arriving together are still written together, on the thread.
        loop = asyncio.get_running_loop()
        if (
            self._db.writes_here
            and not self._wrote_here_this_turn
            and loop.time() >= self._write_here_after
            and not writer.queue
            and not writer.batch
        ):
            written, _ = self._db.try_now(functools.partial(_insert_rows, rows=[row]))
            self._wrote_here_this_turn = True
            loop.call_soon(self._next_turn)
            # Counted from the write's end: a slow write is not followed by another.
            self._write_here_after = loop.time() + _WRITE_HERE_EVERY
            if written:
                return
        admitted = _Admitted(row, loop.create_future())
        # A call refused at its deadline no longer waits for its batch's outcome.
        admitted.written.add_done_callback(consume_outcome)
        self._admitting[record.request_id] = admitted.written
        admitted.written.add_done_callback(lambda _: self._admitting.pop(record.request_id, None))
        writer.push(admitted)
        try:
            async with asyncio.timeout(self._db.timeout):
                if not writer.running:
                    await writer.write_now()
                # Shielded: the future is the batch's, not this call's to cancel.
                await asyncio.shield(admitted.written)
        except TimeoutError:
            if writer.withdraw(admitted):
                # Never written: the completion inserts the row.
                admitted.written.set_exception(StateUnavailableError("withdrawn"))
            # Else a write holds it, and may yet commit it: the completion
            # waits for that write (self._admitting), then overwrites the row.
            raise StateUnavailableError(
                f"the state database {self._db.display}: the call's ledger row was not "
                f"written within {self._db.timeout:g} s"
            ) from None

    def _next_turn(self) -> None:
        self._wrote_here_this_turn = False

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
        queue = self._completions.queue
        if len(queue) >= _MAX_QUEUED:
            for index, queued in enumerate(queue):
                if isinstance(queued, _Finished | _CostFound):
                    del queue[index]
                    self.dropped += 1
                    break
        self._completions.push(
            _Finished(
                record.request_id,
                _fields(record, record.status),
                self._admitting.get(record.request_id),
            )
        )

    async def amend_cost(self, request_id: str, cost_usd: float) -> None:
        """Set the cost of a recorded call (found after the call ended)."""
        for op in self._completions.queue:
            if isinstance(op, _Finished) and op.request_id == request_id:
                op.fields[_COST_FIELD] = cost_usd
                return
        # Written, or being written: set it after that, in queue order.
        self._completions.push(_CostFound(request_id, cost_usd))

    async def flush(self) -> None:
        """Write every queued row now (raises if the database cannot take them)."""
        waits = []
        for writer in (self._admissions, self._completions):
            if not writer.queue and not writer.batch and writer.running:
                continue
            barrier = _Barrier(asyncio.get_running_loop().create_future())
            writer.push(barrier, now=True)
            if not writer.running:
                await writer.write_now()
            waits.append(asyncio.shield(barrier.written))
        await asyncio.gather(*waits)

    async def close(self, give_up: float | None = None) -> bool:
        """Write what is left, trying until `give_up` (loop time; by default the
        close grace from now), then stop; whether every row was written. Rows
        still unwritten at the end are counted in the log."""
        now = asyncio.get_running_loop().time()
        if give_up is None:
            give_up = now + self._close_grace
        allowed = max(0.0, give_up - now)
        await self._admissions.stop(give_up)
        await self._completions.stop(give_up)
        self._closed = True
        left = [*self._admissions.queue, *self._completions.queue]
        self._admissions.queue.clear()
        self._completions.queue.clear()
        for op in left:
            if isinstance(op, _Admitted | _Barrier) and not op.written.done():
                op.written.set_exception(
                    StateUnavailableError("the usage ledger closed before writing it")
                )
        unwritten = sum(isinstance(op, _Finished) for op in left)
        costs = sum(isinstance(op, _CostFound) for op in left)
        if unwritten or costs:
            self.unwritten_at_close += unwritten
            logger.error(
                "the usage ledger could not write %d row(s) (and %d cost update(s)) in the "
                "%.1f s left before the shutdown deadline (%s): those calls stay IN_FLIGHT, "
                "to be reaped as LOST, or are missing if they were refused before admission",
                unwritten,
                costs,
                allowed,
                self._completions.last_error or "the database did not answer",
            )
        return not (unwritten or costs or self.unwritten_at_close)

    @property
    def pending(self) -> int:
        """Rows (and cost updates) not yet written, those being written included."""
        return sum(
            len(writer.queue) + len(writer.batch)
            for writer in (self._admissions, self._completions)
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
        r.cache_write_tokens,
        r.reasoning_tokens,
        r.cost_usd,
        r.latency * 1000.0,
        None if r.time_to_first_token is None else r.time_to_first_token * 1000.0,
        status,
        r.reason,
        r.attempts,
        r.fallbacks,
        r.started_at,
        r.route,
        r.task,
        r.task_source,
    ]


@functools.lru_cache(maxsize=64)
def _insert_statement(count: int) -> str:
    """One INSERT of `count` rows (one statement, one round trip)."""
    one = f"({', '.join('?' * len(_COLUMNS.split(',')))})"
    return f"INSERT INTO usage_records ({_COLUMNS}) VALUES {', '.join([one] * count)}"  # noqa: S608  # constants


def _insert_admitted(tx: Tx, ops: list[_Admitted]) -> None:
    """The in-flight rows of queued admissions."""
    _insert_rows(tx, [op.row for op in ops])


def _insert_rows(tx: Tx, rows: Sequence[tuple[object, ...]]) -> None:
    """In-flight rows, many to a statement (one round trip each)."""
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        tx.execute(_insert_statement(len(chunk)), [value for row in chunk for value in row])


def _write_finished(tx: Tx, ops: Sequence[_Finished | _CostFound], instance_id: str | None) -> None:
    """Completed rows and late costs, in order."""
    for op in ops:
        if isinstance(op, _Finished):
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
    elif by in ("route", "task"):
        group = by
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
        "SUM(reasoning_tokens), COALESCE(SUM(cost_usd), 0), SUM(cache_write_tokens) "
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
        cache_write_tokens=int(row[8]),
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
