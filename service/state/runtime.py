"""The state a running gateway holds open: database, keys, limits, ledger."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.config import ConfigError
from service.state.db import Database, StateUnavailableError
from service.state.keys import KeyStore
from service.state.ledger import Ledger
from service.state.limits import Limiter
from service.state.reaper import InstanceLease
from service.state.schema import migrate

if TYPE_CHECKING:
    from service.config import Settings

logger = logging.getLogger(__name__)


@dataclass
class State:
    """Open state; `close()` writes what is pending and closes the database."""

    db: Database
    keys: KeyStore
    limiter: Limiter
    ledger: Ledger
    # This process's lease in gateway_instances (service/state/reaper.py).
    lease: InstanceLease | None = None

    async def close(self) -> None:
        """Write waiting settlements and queued ledger rows, give up the lease
        (when every row is complete), then close the database."""
        await self.limiter.close()
        complete = await self.ledger.close()
        if self.lease is not None:
            await self.lease.close(release=complete)
        self.db.close()


async def open_state(settings: Settings) -> State | None:
    """Open (and migrate) the configured database; None when there is none.
    Call on the event loop that serves: the ledger's writer runs on it."""
    if not settings.db:
        return None
    db = Database(settings.db, timeout=settings.db_timeout)
    lease = InstanceLease(db, settings.instance_lease)
    try:
        version = migrate(db)
        lease.register()
    except StateUnavailableError as exc:
        db.close()
        # At start-up a database that cannot be reached is the operator's to fix.
        raise ConfigError(str(exc)) from exc
    except BaseException:
        db.close()
        raise
    logger.info("state database %s (%s, schema version %d)", db.display, db.dialect, version)
    ledger = Ledger(db, instance_id=lease.id, close_grace=settings.shutdown_grace)
    ledger.start()
    lease.start()
    return State(db=db, keys=KeyStore(db), limiter=Limiter(db), ledger=ledger, lease=lease)
