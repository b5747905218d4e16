"""Stopping writes the ledger rows still pending, even those queued behind a
database call that is blocked, or says in the log how many it could not write;
and it ends soon after the grace, whatever the database does."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import sqlite3
from typing import TYPE_CHECKING

import grpc
import pytest

from llmgateway.server.process.server import CLOSE_FLOOR_SECONDS, start_gateway
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from tests.conftest import user
from tests.test_ledger import ledger_rows
from tests.test_reaper import open_streams, until
from tests.test_state_outage import locked_by_another_process

if TYPE_CHECKING:
    from llmgateway.server.config import Settings
    from llmgateway.server.process.server import Gateway

STREAMS = 4
REFUSED = 2


def lock(location: str) -> sqlite3.Connection:
    """Another connection holding the SQLite database's write lock."""
    holder = sqlite3.connect(location, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


async def calls_behind_a_lock(running: Gateway, location: str) -> sqlite3.Connection:
    """Calls that end while another connection holds the write lock: slow
    streams (admitted before) their callers cancel, and requests refused as
    invalid. Returns the lock, still held, once all their rows wait."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = pb_grpc.CompletionServiceStub(channel)
        streams, _ = await open_streams(stub, STREAMS, None)
        holder = lock(location)
        for stream in streams:
            stream.cancel()
        for _ in range(REFUSED):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Complete(pb.CompleteRequest(model="zai/glm-4.7"), timeout=10)
        assert running.state is not None
        ledger = running.state.ledger
        await until(lambda: ledger.pending == STREAMS + REFUSED, "the rows queued")
    return holder


@pytest.fixture
def on_sqlite(settings: Settings) -> Settings:
    return dataclasses.replace(settings, shutdown_grace=1.0)


async def test_rows_queued_behind_a_lock_released_just_before_stopping_are_written(on_sqlite, fake):
    running = await start_gateway(on_sqlite, address="127.0.0.1:0")
    holder = await calls_behind_a_lock(running, on_sqlite.db)
    holder.execute("ROLLBACK")
    await running.stop(grace=0)
    statuses = sorted(str(r["status"]) for r in ledger_rows(on_sqlite.db))
    assert statuses == ["CANCELLED"] * STREAMS + ["INVALID_ARGUMENT"] * REFUSED


async def test_rows_a_lock_held_past_the_grace_keeps_out_are_counted_in_the_log(
    on_sqlite, fake, caplog
):
    running = await start_gateway(on_sqlite, address="127.0.0.1:0")
    holder = await calls_behind_a_lock(running, on_sqlite.db)
    try:
        with caplog.at_level(logging.ERROR, logger="llmgateway.server.state.ledger"):
            await running.stop(grace=0)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    said = [
        int(found.group(1))
        for record in caplog.records
        if (found := re.search(r"could not write (\d+) ", record.getMessage()))
    ]
    assert said == [STREAMS + REFUSED]
    # The streams' rows stay as admitted, for the reaper; the refused calls' rows never got in.
    assert sorted(str(r["status"]) for r in ledger_rows(on_sqlite.db)) == ["IN_FLIGHT"] * STREAMS


async def test_stopping_with_the_database_locked_ends_soon_after_the_grace(settings, fake, caplog):
    # A call still running uses the whole grace; what follows (the ledger's
    # rows the lock keeps out) gets what is left of it, not a grace of its own.
    grace, timeout = 4.0, 0.5
    configured = dataclasses.replace(settings, shutdown_grace=grace, db_timeout=timeout)
    running = await start_gateway(configured, address="127.0.0.1:0")
    assert running.state is not None
    ledger = running.state.ledger
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = pb_grpc.CompletionServiceStub(channel)
        streams, _ = await open_streams(stub, STREAMS, None)
        # The upstream never answers: the call runs until stopping cuts it off.
        hanging = stub.Complete(
            pb.CompleteRequest(model="openrouter/x/fault-hang", messages=[user("hi")]),
            timeout=60,
        )
        await until(lambda: len(ledger_rows(configured.db)) == STREAMS + 1, "its row")
        with locked_by_another_process(configured.db):
            for stream in streams:
                stream.cancel()
            await until(lambda: ledger.pending == STREAMS, "the streams' rows queued")
            loop = asyncio.get_running_loop()
            began = loop.time()
            with caplog.at_level(logging.ERROR, logger="llmgateway.server.state.ledger"):
                await running.stop(grace=grace)
            took = loop.time() - began
        with pytest.raises(grpc.aio.AioRpcError):
            await hanging
    # Generous: the grace, the floor, and a few database timeouts for a write
    # that began before the deadline (without one deadline: twice the grace).
    assert took < grace + CLOSE_FLOOR_SECONDS + 4 * timeout, took
    said = [
        int(found.group(1))
        for record in caplog.records
        if (found := re.search(r"could not write (\d+) ", record.getMessage()))
    ]
    assert said == [STREAMS + 1]
    assert sorted(str(r["status"]) for r in ledger_rows(configured.db)) == ["IN_FLIGHT"] * (
        STREAMS + 1
    )
