"""Per-key rate limits and budgets: reserve before the upstream call, settle after.

A call reserves its estimated tokens and cost inside one transaction that
also checks the key's requests and tokens in the last minute and its spend
this day or month, reservations of calls still in flight included. So
concurrent calls, in any worker or replica, cannot together pass a limit:
the last one to reserve is refused. After the call the reservation is
settled to what was really used. A settlement the database cannot take
now (it is down or restarting) is kept and retried with backoff until it
goes through: until then the reservation only holds its estimate, which errs
on the side of the limit.

`LimitStore` is what the call path uses: this database `Limiter`, or the
`RedisLimiter` (state/redis_limits.py) when LLMGATEWAY_REDIS_URL is set.
Both refuse with the builders below, word for word.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import datetime as dt
import functools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import grpc

from llmgateway.server.errors import GatewayError
from llmgateway.server.state.db import StateUnavailableError
from llmgateway.server.state.settlements import (
    LimitStoreObserver,
    PendingSettlements,
    SettlementCounts,
)
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from llmgateway.server.state.db import Database, Tx
    from llmgateway.server.state.keys import CallerKey

# The rate limits' window: requests and tokens in the last minute.
WINDOW_SECONDS = 60.0
# Sums of float dollars drift (0.1 * 30 > 3.0); a budget is met within this.
_EPSILON_USD = 1e-9
# Reservations older than this serve no limit any more (a month is at most 31 days).
_KEEP = 32 * 86400.0
_PRUNE_EVERY = 1000

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one call holds against its key's limits until it settles."""

    id: int
    # The estimate held: what the call settles at when its use stays unknown.
    tokens: int
    cost_usd: float
    # Which store holds it: the state database, Redis (state/redis_limits.py),
    # or none (Redis was unavailable and the gateway fails open: nothing to settle).
    store: Literal["db", "redis", "none"] = "db"
    # Redis: the key whose counters it settles against, and the budget
    # period it was counted in (epoch seconds; None when the key has no budget).
    key_id: str = ""
    period_start: int | None = None

    @property
    def ledger_id(self) -> int | None:
        """The id the ledger records (the reaper settles those reservations):
        only the database's reservations table has rows to point at."""
        return self.id if self.store == "db" else None


class LimitStore(Protocol):
    """Where calls reserve against their keys' limits: the state database
    (Limiter) or Redis (RedisLimiter). Both refuse with the same errors."""

    async def reserve(self, key: CallerKey, tokens: int, cost_usd: float) -> Reservation:
        """Hold `tokens` and `cost_usd` for one call of `key`, or raise the refusal
        (GatewayError) or StateUnavailableError."""

    async def settle(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        """Replace the estimate with what the call used (never raises for an
        unavailable store: the settlement waits and is retried)."""

    async def drain(self) -> None:
        """Wait until every waiting settlement is written."""

    async def close(self, give_up: float | None = None) -> None:
        """Write what waits (by `give_up`, loop time), then let go of the store."""

    def observe(self, observer: LimitStoreObserver) -> None:
        """Tell `observer` of what the store counts from now on (the metrics)."""

    # Since start: settlements that had to wait for the store, and those given up.
    @property
    def settlements_waited(self) -> int: ...

    @property
    def settlements_lost(self) -> int: ...

    @property
    def unsettled(self) -> int:
        """Settlements waiting for the store to take them."""


class Limiter(SettlementCounts):
    """Checks and records calls against their keys' limits."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._reservations_since_prune = 0
        # Reservation id -> (tokens, cost_usd) it settles at, until written.
        self._pending: PendingSettlements[tuple[int, float]] = PendingSettlements(
            store="database",
            where="the state database",
            log=logger,
            write=self._write_unsettled,
            unavailable=lambda exc: isinstance(exc, StateUnavailableError),
            # A bug's failed write is logged by the write itself (close may await it too).
            log_failures=False,
        )
        # The batch being written now (by the retry loop or by close); None
        # once it ended.
        self._writing: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def reserve(self, key: CallerKey, tokens: int, cost_usd: float) -> Reservation:
        """Hold `tokens` and `cost_usd` for one call of `key`, or refuse it with
        RESOURCE_EXHAUSTED and a RetryInfo saying when it could pass."""
        self._reservations_since_prune += 1
        if self._reservations_since_prune >= _PRUNE_EVERY:
            self._reservations_since_prune = 0
            self._in_background(self._prune())
        return await self._db.run(
            lambda tx: _reserve(tx, key, tokens, cost_usd),
            # Committed after the caller was told the database was unavailable:
            # the call never ran, so the reservation is released.
            if_late=lambda late: self._pending.add(late.id, (0, 0.0)),
        )

    async def settle(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        """Replace the estimate with what the call used; when the database is
        unavailable, keep the settlement and retry it in the background."""
        try:
            await self._db.run(lambda tx: _settle(tx, [(reservation.id, tokens, cost_usd)]))
        except StateUnavailableError:
            self._pending.add(reservation.id, (tokens, cost_usd))

    async def drain(self) -> None:
        """Wait until every settlement that waited for the database is written
        (for as long as that takes: bound it with asyncio.timeout)."""
        await self._pending.drain()

    async def close(self, give_up: float | None = None) -> None:
        """Try the waiting settlements once more (by `give_up`, loop time, when
        given: not at all once it has passed), then say what is lost. A batch
        still being written is waited for first (it began before shutdown, so
        within its own bound: up to about 1.5 database timeouts, even past
        `give_up`), so what the log calls lost was not written. A write that
        fails for a bug is logged and counted lost: close never raises it, so
        the rest of shutdown goes on."""
        await self._pending.stop()
        writing = self._writing
        if writing is not None and not writing.done():
            # A batch the retry loop was writing: on the database thread it
            # may still commit, so its outcome decides what is counted lost.
            # A failure is counted below (a bug's was logged by the write).
            with contextlib.suppress(Exception):
                await writing
        for task in list(self._background):
            task.cancel()
        left = None if give_up is None else give_up - asyncio.get_running_loop().time()
        if self._pending.waiting and (left is None or left > 0):
            with contextlib.suppress(Exception):  # counted below; a bug's logged
                await self._write_unsettled(
                    within=None if left is None else min(left, self._db.timeout)
                )
        self._pending.give_up()

    async def _write_unsettled(self, within: float | None = None) -> int:
        """Write the waiting settlements (those that arrive meanwhile too); how
        many. `within`: the bound on each write, when not the database timeout."""
        written = 0
        while self._pending.waiting:
            batch = self._pending.batch()
            # A task of its own, shielded: cancelling the retry loop (close does)
            # must not forget a write that has reached the database thread and
            # may commit there; close awaits it instead.
            writing = self._writing = asyncio.ensure_future(self._write_batch(batch, within))
            # Once it ended (written or not) nobody is to wait for it any more.
            writing.add_done_callback(self._written)
            await asyncio.shield(writing)
            written += len(batch)
        return written

    def _written(self, writing: asyncio.Future[None]) -> None:
        if self._writing is writing:
            self._writing = None

    async def _write_batch(
        self, batch: list[tuple[int, tuple[int, float]]], within: float | None
    ) -> None:
        rows = [(reservation_id, *settled) for reservation_id, settled in batch]
        try:
            await self._db.run(functools.partial(_settle, rows=rows), within=within)
        except StateUnavailableError:
            raise
        except Exception:
            # Not the database being away: a bug, to be seen. Logged here, once,
            # whoever awaits the write (the retry loop, or close once it took over).
            logger.exception("writing %d settlements failed", len(rows))
            raise
        for reservation_id, settled in batch:
            self._pending.written(reservation_id, settled)

    async def _prune(self) -> None:
        """Forget reservations that serve no limit any more (off the call's
        path: on a big table it may take a while)."""
        cutoff = time.time() - _KEEP
        with contextlib.suppress(StateUnavailableError):  # the next prune deletes these too
            await self._db.run(
                lambda tx: tx.execute("DELETE FROM reservations WHERE created_at < ?", (cutoff,))
            )

    def _in_background(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _settle(tx: Tx, rows: list[tuple[int, int, float]]) -> None:
    for reservation_id, tokens, cost_usd in rows:
        tx.execute(
            "UPDATE reservations SET tokens = ?, cost_usd = ?, settled = 1 WHERE id = ?",
            (tokens, cost_usd, reservation_id),
        )


def _reserve(tx: Tx, key: CallerKey, tokens: int, cost_usd: float) -> Reservation:
    now = time.time()
    tx.lock(f"llmgateway-key-{key.id}")
    if key.rpm is not None or key.tpm is not None:
        rows = tx.fetchall(
            "SELECT COUNT(*), COALESCE(SUM(tokens), 0), MIN(created_at) FROM reservations "
            "WHERE key_id = ? AND created_at > ?",
            (key.id, now - WINDOW_SECONDS),
        )
        calls, used, oldest = int(rows[0][0]), int(rows[0][1]), rows[0][2]
        wait = (
            WINDOW_SECONDS if oldest is None else max(0.001, float(oldest) + WINDOW_SECONDS - now)
        )
        if key.rpm is not None and calls >= key.rpm:
            raise rpm_refused(key, wait)
        if key.tpm is not None and used + tokens > key.tpm:
            if tokens > key.tpm:
                raise tpm_too_large(key, tokens)
            raise tpm_refused(key, used, tokens, wait)
    if key.budget_usd is not None and key.budget_period is not None:
        start, end = period_bounds(key.budget_period, now)
        rows = tx.fetchall(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM reservations "
            "WHERE key_id = ? AND created_at >= ?",
            (key.id, start),
        )
        spent = float(rows[0][0])
        if cost_usd > key.budget_usd + _EPSILON_USD:
            raise budget_too_large(key, cost_usd)
        if spent + cost_usd > key.budget_usd + _EPSILON_USD:
            raise budget_refused(key, spent, cost_usd, max(0.001, end - now))
    rows = tx.fetchall(
        "INSERT INTO reservations (key_id, created_at, tokens, cost_usd) "
        "VALUES (?, ?, ?, ?) RETURNING id",
        (key.id, now, tokens, cost_usd),
    )
    return Reservation(id=int(rows[0][0]), tokens=tokens, cost_usd=cost_usd)


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """The UTC day or month holding `now`, as (start, end) epoch seconds."""
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    if period == "day":
        start = dt.datetime(today.year, today.month, today.day, tzinfo=dt.UTC)
        return start.timestamp(), start.timestamp() + 86400.0
    start = dt.datetime(today.year, today.month, 1, tzinfo=dt.UTC)
    days = calendar.monthrange(today.year, today.month)[1]
    return start.timestamp(), start.timestamp() + days * 86400.0


# The refusals both stores give, word for word (clients and docs rely on them).
def rpm_refused(key: CallerKey, wait: float) -> GatewayError:
    """At the key's requests per minute; `wait`: until the oldest leaves the window."""
    return _refused(
        pb.ERROR_REASON_KEY_RATE_LIMITED,
        f"key {key.name!r} is at its limit of {key.rpm} requests per minute",
        key,
        wait,
    )


def tpm_too_large(key: CallerKey, tokens: int) -> GatewayError:
    """One call needing more tokens than the key may use in a minute: no wait helps."""
    return _refused(
        pb.ERROR_REASON_KEY_RATE_LIMITED,
        f"this request needs about {tokens} tokens, more than key {key.name!r} "
        f"may use in a minute ({key.tpm}); lower max_tokens or shorten the prompt",
        key,
        None,
    )


def tpm_refused(key: CallerKey, used: int, tokens: int, wait: float) -> GatewayError:
    """At the key's tokens per minute (`used` held in the window already)."""
    return _refused(
        pb.ERROR_REASON_KEY_RATE_LIMITED,
        f"key {key.name!r} is at its limit of {key.tpm} tokens per minute "
        f"({used} used or reserved, this request needs about {tokens})",
        key,
        wait,
    )


def budget_too_large(key: CallerKey, cost_usd: float) -> GatewayError:
    """One call that may cost more than the key's whole budget: no wait helps."""
    return _refused(
        pb.ERROR_REASON_KEY_BUDGET_EXCEEDED,
        f"this call may cost up to ${cost_usd:.4f}, more than key {key.name!r} may "
        f"spend in a {key.budget_period} (${key.budget_usd or 0.0:.4f}); lower max_tokens",
        key,
        None,
    )


def budget_refused(key: CallerKey, spent: float, cost_usd: float, wait: float) -> GatewayError:
    """The key's budget would be overspent; `wait`: until its period ends."""
    return _refused(
        pb.ERROR_REASON_KEY_BUDGET_EXCEEDED,
        f"key {key.name!r} has spent or reserved ${spent:.4f} of its "
        f"${key.budget_usd or 0.0:.4f} per {key.budget_period}; this call may cost up to "
        f"${cost_usd:.4f}",
        key,
        wait,
    )


def _refused(
    reason: pb.ErrorReason.ValueType, message: str, key: CallerKey, retry_after: float | None
) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        reason,
        message,
        metadata={"keyId": key.id},
        retry_after=retry_after,
    )
