"""Settlements a limit store could not take at once, for both stores (the
database's Limiter, state/limits.py, and the RedisLimiter, state/redis_limits.py).

A settlement replaces a call's reserved estimate with what it really used.
When the store is unavailable it is kept here, in arrival order, and retried in
the background after a jittered backoff that starts at RETRY_FIRST and doubles
up to RETRY_MAX, until written. Until then the reservation holds its estimate,
which errs on the side of the limit. Beyond MAX_UNSETTLED the oldest are given
up so memory stays bounded; what still waits at shutdown is given up too. Both
are counted (and, with an observer, exported as metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    import logging
    from collections.abc import Awaitable, Callable

RETRY_FIRST = 0.25
RETRY_MAX = 10.0
RETRY_BATCH = 500
MAX_UNSETTLED = 100_000

# What a store writes per reservation id (the database: tokens and cost; Redis:
# the reservation too, whose keys the settlement needs).
P = TypeVar("P")


class LimitStoreObserver(Protocol):
    """Told of what a limit store counts (observability/metrics.py's GatewayMetrics)."""

    def limit_store_counted(self, store: str, what: str, count: int = 1) -> None:
        """`count` more of `what` (settlements_waited, settlements_lost or
        fail_open_admits) in the store `store` (database or redis)."""


class PendingSettlements(Generic[P]):
    """The settlements waiting for one store, and the task that retries them."""

    def __init__(
        self,
        *,
        store: str,
        where: str,
        log: logging.Logger,
        write: Callable[[], Awaitable[int]],
        unavailable: Callable[[BaseException], bool],
        on_unavailable: Callable[[BaseException], None] | None = None,
        log_failures: bool = True,
    ) -> None:
        """`store`: the metrics' label; `where`: the store as the log names it;
        `log`: the store's logger; `write()`: write every waiting settlement (those
        arriving meanwhile too), taking each written one off with `written`, and
        say how many; `unavailable(exc)`: whether a failed write means the store
        is away (retried sooner) rather than a bug (logged, unless `log_failures`
        is off because the write logs it itself, and retried after RETRY_MAX)."""
        self.store = store
        self._where = where
        self._log = log
        self._write = write
        self._unavailable = unavailable
        self._on_unavailable = on_unavailable
        self._log_failures = log_failures
        # Reservation id -> what it settles at, in arrival order.
        self.waiting: dict[int, P] = {}
        self._retrying: asyncio.Task[None] | None = None
        # Since start: settlements that had to wait, and those given up.
        self.waited = 0
        self.lost = 0
        self.observer: LimitStoreObserver | None = None

    def __len__(self) -> int:
        return len(self.waiting)

    @property
    def retrying(self) -> bool:
        """Whether the retry task runs (it ends once nothing waits)."""
        return self._retrying is not None and not self._retrying.done()

    def add(self, reservation_id: int, settled: P) -> None:
        """Keep a settlement the store could not take (a newer one of the same
        reservation replaces it), and make sure the retries run."""
        if reservation_id not in self.waiting and len(self.waiting) >= MAX_UNSETTLED:
            del self.waiting[next(iter(self.waiting))]
            self._count_lost(1)
            if self.lost == 1 or self.lost % 10_000 == 0:
                self._log.warning(
                    "%d settlements wait for %s; %d given up so far (the oldest: their "
                    "reservations keep their estimates)",
                    MAX_UNSETTLED,
                    self._where,
                    self.lost,
                )
        if reservation_id not in self.waiting:
            self.waited += 1
            if self.observer is not None:
                self.observer.limit_store_counted(self.store, "settlements_waited")
        self.waiting[reservation_id] = settled
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.get_running_loop().create_task(self._retry_forever())

    def batch(self) -> list[tuple[int, P]]:
        """The oldest waiting settlements, at most RETRY_BATCH."""
        return list(itertools.islice(self.waiting.items(), RETRY_BATCH))

    def written(self, reservation_id: int, settled: P) -> None:
        """`settled` is in the store: no longer waiting, unless a newer
        settlement of the same reservation (a release) arrived meanwhile."""
        if self.waiting.get(reservation_id) == settled:
            del self.waiting[reservation_id]

    async def drain(self) -> None:
        """Wait until every waiting settlement is written (for as long as that
        takes: bound it with asyncio.timeout)."""
        while self._retrying is not None and not self._retrying.done():
            await asyncio.shield(self._retrying)

    async def stop(self) -> None:
        """Stop retrying (what waits stays, for a last try and `give_up`)."""
        if self._retrying is not None:
            self._retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._retrying
            self._retrying = None

    def give_up(self, when: str = "at shutdown") -> None:
        """Count what still waits as lost, say so, and forget it."""
        if not self.waiting:
            return
        self._count_lost(len(self.waiting))
        self._log.warning(
            "%d settlements could not be written to %s %s; their reservations keep the "
            "estimates they hold",
            len(self.waiting),
            self._where,
            when,
        )
        self.waiting.clear()

    def _count_lost(self, count: int) -> None:
        self.lost += count
        if self.observer is not None:
            self.observer.limit_store_counted(self.store, "settlements_lost", count)

    async def _retry_forever(self) -> None:
        delay = RETRY_FIRST
        while self.waiting:
            # Jittered, so workers and replicas do not all come back at the same instant.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311  # not crypto
            try:
                written = await self._write()
            except Exception as exc:  # noqa: BLE001  # classified: away, or a bug (logged)
                if self._unavailable(exc):
                    if self._on_unavailable is not None:
                        self._on_unavailable(exc)
                    delay = min(2 * delay, RETRY_MAX)
                else:
                    # A bug, not the store being away: seen, and tried again after
                    # the longest backoff.
                    if self._log_failures:
                        self._log.exception("writing settlements to %s failed", self._where)
                    delay = RETRY_MAX
                continue
            self._log.info("wrote %d settlements that waited for %s", written, self._where)
            delay = RETRY_FIRST


class SettlementCounts:
    """What both limit stores say of their waiting settlements (`_pending`)."""

    _pending: PendingSettlements[Any]

    def observe(self, observer: LimitStoreObserver) -> None:
        """Tell `observer` of what this store counts from now on (the metrics)."""
        self._pending.observer = observer

    @property
    def settlements_waited(self) -> int:
        """Since start: settlements that had to wait for the store."""
        return self._pending.waited

    @property
    def settlements_lost(self) -> int:
        """Since start: settlements given up (beyond MAX_UNSETTLED, or still
        waiting at close): their reservations keep the estimate."""
        return self._pending.lost

    @property
    def unsettled(self) -> int:
        """Settlements waiting for the store to take them."""
        return len(self._pending)
