"""The state a running gateway holds open: database, keys, limits (database or Redis), ledger."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmgateway.server.config import ConfigError
from llmgateway.server.state.db import Database, StateUnavailableError
from llmgateway.server.state.keys import KeyStore
from llmgateway.server.state.ledger import Ledger
from llmgateway.server.state.limits import Limiter
from llmgateway.server.state.reaper import InstanceLease
from llmgateway.server.state.schema import migrate

if TYPE_CHECKING:
    from llmgateway.server.config import Settings
    from llmgateway.server.state.limits import LimitStore
    from llmgateway.server.state.redis_limits import RedisLimiter

logger = logging.getLogger(__name__)
# Closing the database waits at least this long for its threads (each ends
# at once when idle), even past the shutdown deadline.
_MIN_JOIN = 0.1


@dataclass
class State:
    """Open state; `close()` writes what is pending and closes the database."""

    db: Database
    keys: KeyStore
    # The database's Limiter, or a RedisLimiter when LLMGATEWAY_REDIS_URL is set.
    limiter: LimitStore
    ledger: Ledger
    # This process's lease in gateway_instances (service/llmgateway/server/state/reaper.py).
    lease: InstanceLease | None = None

    async def close(self, give_up: float | None = None) -> None:
        """Write waiting settlements and queued ledger rows, give up the lease
        (when every row is complete), then close the database. `give_up`
        (loop time): one deadline for all of it, shutdown's; work still
        running then is given up (a database call begun before it may end up
        to about 1.5 database timeouts later). None: the ledger's close grace."""
        # Side by side: the ledger stops starting writes bounded only by the
        # database timeout now, not once a settlement batch that began before
        # shutdown has ended (the two waits would add up).
        _, complete = await asyncio.gather(self.limiter.close(give_up), self.ledger.close(give_up))
        if self.lease is not None:
            await self.lease.close(release=complete, give_up=give_up)
        if give_up is None:
            self.db.close()
        else:
            left = give_up - asyncio.get_running_loop().time()
            self.db.close(timeout=max(_MIN_JOIN, left))


async def open_state(settings: Settings) -> State | None:
    """Open (and migrate) the configured database; None when there is none.
    Call on the event loop that serves: the ledger's writer runs on it."""
    if not settings.db:
        return None
    db = Database(settings.db, timeout=settings.db_timeout)
    lease = InstanceLease(db, settings.instance_lease)
    try:
        # First: a malformed Redis URL stops the start before anything runs.
        redis_limiter = _redis_limiter(settings, db, lease.id)
        version = migrate(db)
        lease.register()
        # The ledger's admissions may be written on the event loop (SQLite).
        db.open_here()
    except StateUnavailableError as exc:
        db.close()
        # At start-up a database that cannot be reached is the operator's to fix.
        raise ConfigError(str(exc)) from exc
    except BaseException:
        db.close()
        raise
    logger.info(
        "state database %s (%s, schema version %d)",
        db.display,
        db.dialect,
        version,
        # A line of the start-up summary, said once across workers (process/startup_summary.py
        # holds what carries this; state/ does not import process/, hence the plain dict).
        extra={"startup_summary": True},
    )
    ledger = Ledger(db, instance_id=lease.id, close_grace=settings.shutdown_grace)
    ledger.start()
    lease.start()
    state = State(
        db=db,
        keys=KeyStore(db),
        limiter=Limiter(db) if redis_limiter is None else redis_limiter,
        ledger=ledger,
        lease=lease,
    )
    if redis_limiter is not None:
        try:
            # Redis away at start-up is a warning (calls get UNAVAILABLE until
            # it answers), not a failed start: replicas must not crash-loop with it.
            await redis_limiter.start()
        except BaseException:
            # Anything else (a refused AUTH, a bug) fails the start: what is open
            # by now, the ledger's writers, the lease (given back: no call ran),
            # Redis's connections and the database's threads, is closed first,
            # so a caller that carries on (a supervisor, a test) holds none of it.
            await state.close()
            raise
    return state


def _redis_limiter(settings: Settings, db: Database, instance_id: str) -> RedisLimiter | None:
    """The Redis limit store when LLMGATEWAY_REDIS_URL is set (not started yet)."""
    if not settings.redis_url:
        return None
    from llmgateway.server.state.redis_limits import RedisLimiter, ledger_spend

    return RedisLimiter(
        settings.redis_url,
        instance_id=instance_id,
        lease_seconds=settings.instance_lease,
        timeout=settings.redis_timeout,
        failure_mode="open" if settings.redis_failure_mode == "open" else "closed",
        # A budget counter Redis lacks (new, emptied, or switched to
        # mid-period) starts from the ledger's spend, not from zero.
        spend_since=ledger_spend(db),
    )
