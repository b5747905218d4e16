"""Stopping writes the ledger rows still pending, even those queued behind a
database call that is blocked, or says in the log how many it could not write."""

from __future__ import annotations

import dataclasses
import logging
import re
import sqlite3
from typing import TYPE_CHECKING

import grpc
import pytest
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

from service.server import start_gateway
from tests.test_ledger import ledger_rows
from tests.test_reaper import open_streams, until

if TYPE_CHECKING:
    from service.config import Settings
    from service.server import Gateway

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
        with caplog.at_level(logging.ERROR, logger="service.state.ledger"):
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
