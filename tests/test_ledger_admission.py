"""A call's admission waits for its ledger row at most the database timeout,
whatever the write it is in is doing, and is refused at once while the
database is known to fail and a write is already stuck on it; a row a stuck
write commits after its call was refused is completed all the same."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from llmgateway.server.observability.observe import CallRecord
from llmgateway.server.state.db import Database, StateUnavailableError
from llmgateway.server.state.ledger import Ledger
from llmgateway.server.state.schema import migrate
from tests.test_reaper import statuses, until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from llmgateway.server.state.db import Tx

T = TypeVar("T")


class GatedDatabase(Database):
    """A database whose work waits at a gate while it is shut (as work stuck
    on a stalled server), and whose next `failures` units of work fail as if
    it were unavailable."""

    def __init__(self, location: str, *, timeout: float) -> None:
        super().__init__(location, timeout=timeout)
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = 0
        self.failures = 0

    async def run(self, work: Callable[[Tx], T], **options: Any) -> T:
        if self.failures:
            self.failures -= 1
            raise StateUnavailableError("the state database: down for the test")
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return await super().run(work, **options)

    def try_now(self, work: Callable[[Tx], T]) -> tuple[bool, T | None]:
        # A database stalled or failing has no free lock to write under here either.
        if self.failures or not self.gate.is_set():
            return False, None
        return super().try_now(work)


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[tuple[GatedDatabase, Ledger]]:
    db = GatedDatabase(str(tmp_path / "ledger.db"), timeout=0.3)
    migrate(db)
    ledger = Ledger(db)
    ledger.start()
    try:
        yield db, ledger
    finally:
        db.gate.set()
        await ledger.close()
        db.close()


def call(request_id: str) -> CallRecord:
    return CallRecord(request_id=request_id, method="Complete", requested_model="zai/glm-4.7")


def refused(record: CallRecord) -> CallRecord:
    record.status, record.reason = "UNAVAILABLE", "GATEWAY_STATE_UNAVAILABLE"
    return record


async def test_admissions_behind_a_stuck_write_fail_at_their_deadline_and_their_rows_complete(
    gated,
):
    db, ledger = gated
    db.gate.clear()
    first, second = call("first"), call("second")
    stuck = asyncio.ensure_future(ledger.call_admitted(first, None))
    await until(lambda: db.waiting == 1, "the first admission's write stuck in the database")
    behind = asyncio.ensure_future(ledger.call_admitted(second, None))
    async with asyncio.timeout(30):  # the database timeout is 0.3 s
        for admission in (stuck, behind):
            with pytest.raises(StateUnavailableError, match=r"not written within 0\.3 s"):
                await admission
    # Both refused while the write is still stuck: neither waited for it.
    assert db.waiting == 1
    ledger.call_finished(refused(first))
    ledger.call_finished(refused(second))
    # The stuck write commits after all: "first" is in as IN_FLIGHT for a
    # moment, then its refusal's completion overwrites it; "second" was
    # never written, and its completion inserts it.
    db.gate.set()
    await ledger.flush()
    assert statuses(db.location) == {"first": "UNAVAILABLE", "second": "UNAVAILABLE"}


async def test_while_the_database_fails_an_admission_is_not_queued_behind_a_stuck_write(gated):
    db, ledger = gated
    # A timeout far beyond the test's own bound: only refusing at once passes.
    db.timeout = 60.0
    db.failures = 1
    with pytest.raises(StateUnavailableError, match="down for the test"):
        await ledger.call_admitted(call("outage"), None)
    db.gate.clear()
    probe = asyncio.ensure_future(ledger.call_admitted(call("probe"), None))
    await until(lambda: db.waiting == 1, "the next admission's write stuck in the database")
    async with asyncio.timeout(30):
        with pytest.raises(StateUnavailableError, match="not queued"):
            await ledger.call_admitted(call("refused"), None)
    # The database answers again: the write trying it goes in, and so do the next.
    db.gate.set()
    await probe
    await ledger.call_admitted(call("next"), None)
    assert statuses(db.location) == {"probe": "IN_FLIGHT", "next": "IN_FLIGHT"}
