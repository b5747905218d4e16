"""The state a running gateway holds open: database, keys, limits, ledger."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.state.db import Database
from service.state.keys import KeyStore
from service.state.ledger import Ledger
from service.state.limits import Limiter
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

    async def close(self) -> None:
        """Write queued ledger rows, then close the database."""
        await self.ledger.close()
        self.db.close()


async def open_state(settings: Settings) -> State | None:
    """Open (and migrate) the configured database; None when there is none.
    Call on the event loop that serves: the ledger's writer runs on it."""
    if not settings.db:
        return None
    db = Database(settings.db)
    try:
        version = migrate(db)
    except BaseException:
        db.close()
        raise
    logger.info("state database %s (%s, schema version %d)", db.display, db.dialect, version)
    ledger = Ledger(db)
    ledger.start()
    return State(db=db, keys=KeyStore(db), limiter=Limiter(db), ledger=ledger)
