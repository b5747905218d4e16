"""No admitted call vanishes from the ledger: a row from admission to the end,
and the calls of a gateway process that died reaped as LOST."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from llmgateway.server.process.cli import main
from llmgateway.server.state import reaper
from llmgateway.server.state.db import Database
from llmgateway.server.state.keys import KeyStore
from llmgateway.server.state.ledger import usage_sync
from llmgateway.server.state.limits import Limiter
from llmgateway.server.state.schema import MIGRATIONS, migrate
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from tests.conftest import user
from tests.test_keys import bearer, gateway

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from llmgateway.server.config import Settings
    from llmgateway.server.state.db import Tx
    from llmgateway.testing.fake_upstream import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
# Long enough to be still running when the test acts on it (about 4 s).
SLOW = "openrouter/x/fault-slow"


def query(location: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    db = Database(location)
    try:
        return db.run_sync(lambda tx: tx.fetchall(sql, params))
    finally:
        db.close()


def execute(location: str, sql: str, params: tuple[object, ...] = ()) -> int:
    db = Database(location)
    try:
        return db.run_sync(lambda tx: tx.execute(sql, params))
    finally:
        db.close()


def statuses(location: str) -> dict[str, str]:
    return {
        str(r): str(s) for r, s in query(location, "SELECT request_id, status FROM usage_records")
    }


def reservations(location: str) -> list[tuple[object, ...]]:
    return query(location, "SELECT settled, tokens, cost_usd FROM reservations ORDER BY id")


def instances(location: str) -> list[str]:
    return [str(row[0]) for row in query(location, "SELECT id FROM gateway_instances")]


async def until(condition: object, what: str, seconds: float = 20.0) -> None:
    """Wait for `condition()` to hold (checked every 50 ms), or fail saying what."""
    give_up = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < give_up, f"still waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
def keyed(settings: Settings, db_location: str) -> Settings:
    return dataclasses.replace(settings, db=db_location, instance_lease=1.5)


def limited_key(location: str) -> str:
    """A key with a budget, so each call holds a reservation."""
    db = Database(location)
    try:
        migrate(db)
        _, secret = KeyStore(db).create("alice", budget_usd=100.0, budget_period="day")
    finally:
        db.close()
    return secret


Stream = grpc.aio.UnaryStreamCall[pb.StreamCompleteRequest, pb.StreamCompleteResponse]


async def open_streams(
    stub: pb_grpc.CompletionServiceAsyncStub, count: int, key: str | None
) -> tuple[list[Stream], list[str]]:
    """`count` slow streams, each past its first event; and their request ids."""
    calls: list[Stream] = []
    for _ in range(count):
        call = stub.StreamComplete(
            pb.StreamCompleteRequest(model=SLOW, messages=[user("hi")]),
            metadata=bearer(key) if key else None,
            timeout=60,
        )
        calls.append(call)
    ids = []
    for call in calls:
        ids.append(str(dict(await call.initial_metadata())["x-request-id"]))
        await call.read()
    return calls, ids


async def test_a_call_is_in_the_ledger_from_admission_to_its_end(keyed, fake):
    async with gateway(keyed) as (stub, _):
        calls, (request_id,) = await open_streams(stub, 1, None)
        # Written when admitted, before the first event reached the caller.
        assert statuses(keyed.db) == {request_id: "IN_FLIGHT"}
        assert len(instances(keyed.db)) == 1
        calls[0].cancel()
        await until(lambda: statuses(keyed.db)[request_id] != "IN_FLIGHT", "the row's completion")
        assert statuses(keyed.db) == {request_id: "CANCELLED"}
    # A clean stop gives the lease up.
    assert instances(keyed.db) == []


async def test_a_call_still_running_at_shutdown_is_recorded_as_cancelled(keyed, fake):
    async with gateway(keyed) as (stub, _):
        _, (request_id,) = await open_streams(stub, 1, None)
    # stop(grace=0) cut it off; its row says so, and nothing is left in flight.
    assert statuses(keyed.db) == {request_id: "CANCELLED"}
    assert instances(keyed.db) == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_process(
    fake: FakeUpstream, location: str
) -> AsyncIterator[tuple[subprocess.Popen[bytes], pb_grpc.CompletionServiceAsyncStub]]:
    """`llmgateway serve` in a process of its own, and a stub connected to it."""
    port = free_port()
    env = {**os.environ, **fake.environment(), "LLMGATEWAY_DB": location}
    command = [sys.executable, "-m", "llmgateway.server.process.cli", "serve", "--workers", "1"]
    command += ["--address", f"127.0.0.1:{port}", "--log-level", "WARNING"]
    process = subprocess.Popen(  # noqa: ASYNC220  # started once, not waited on here
        command,
        cwd=ROOT,
        env=env,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            yield process, pb_grpc.CompletionServiceStub(channel)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


async def test_the_calls_of_a_killed_process_are_reaped_by_a_live_one(keyed, fake):
    key = limited_key(keyed.db)
    async with gateway(keyed), serve_process(fake, keyed.db) as (process, stub):
        _, ids = await open_streams(stub, 5, key)
        assert set(statuses(keyed.db).values()) == {"IN_FLIGHT"}
        process.send_signal(signal.SIGKILL)
        process.wait()
        # The survivor sees the process gone (same host) at its next renewal,
        # a third of the lease (0.5 s) later.
        await until(lambda: set(statuses(keyed.db).values()) == {"LOST"}, "LOST rows")
    assert sorted(statuses(keyed.db)) == sorted(ids)
    # Their reservations are settled at the estimate they held: the upstream may bill them.
    held = reservations(keyed.db)
    assert len(held) == 5
    assert all(settled == 1 and float(cost) > 0 for settled, _, cost in held)  # type: ignore[arg-type]
    # Lost calls are calls, and failed ones, in the usage report.
    db = Database(keyed.db)
    try:
        (row,) = usage_sync(db, "model", 0, time.time() + 60)
    finally:
        db.close()
    assert (row.group, row.calls, row.failed_calls) == (SLOW, 5, 5)


async def test_a_restarted_process_reaps_at_start_up(keyed, fake):
    async with serve_process(fake, keyed.db) as (process, stub):
        _, ids = await open_streams(stub, 3, None)
        process.send_signal(signal.SIGKILL)
        process.wait()
    # Nothing else runs: the next gateway to start reaps them before it serves.
    slow_lease = dataclasses.replace(keyed, instance_lease=3600.0)
    async with gateway(slow_lease):
        assert statuses(keyed.db) == dict.fromkeys(ids, "LOST")


def db_now(location: str) -> float:
    db = Database(location)
    try:
        return db.run_sync(reaper.database_now)
    finally:
        db.close()


def plant_instance(location: str, instance: str, expires_in: float, calls: list[str]) -> None:
    """An instance of another host with `calls` in flight, each with a
    reservation; its lease ends `expires_in` seconds from now (database time)."""
    db = Database(location)
    try:
        now = db.run_sync(reaper.database_now)

        def work(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO gateway_instances (id, host, pid, pid_start, started_at, "
                "lease_expires_at) VALUES (?, 'another-host', 1, '', ?, ?)",
                (instance, now - 60, now + expires_in),
            )
            for request_id in calls:
                (reservation,) = tx.fetchall(
                    "INSERT INTO reservations (key_id, created_at, tokens, cost_usd) "
                    "VALUES ('k', ?, 100, 0.5) RETURNING id",
                    (now,),
                )
                tx.execute(
                    "INSERT INTO usage_records (request_id, key_id, method, requested_model, "
                    "served_model, provider, prompt_tokens, completion_tokens, cached_tokens, "
                    "reasoning_tokens, latency_ms, status, reason, attempts, fallbacks, "
                    "created_at, instance_id, reservation_id) VALUES (?, 'k', 'Complete', "
                    "'zai/glm-4.7', '', '', 0, 0, 0, 0, 0, 'IN_FLIGHT', '', 0, 0, ?, ?, ?)",
                    (request_id, now, instance, reservation[0]),
                )

        db.run_sync(work)
    finally:
        db.close()


async def test_another_hosts_calls_are_reaped_once_its_lease_lapses(keyed, db_location):
    db = Database(db_location)
    migrate(db)
    db.close()
    plant_instance(db_location, "lapsed", -1.0, ["a1", "a2"])
    plant_instance(db_location, "live", 3600.0, ["b1"])
    async with gateway(keyed):
        # At start-up: the lapsed instance is gone; the live one, on a host
        # whose processes this one cannot see, keeps its call until its lease lapses.
        assert statuses(db_location) == {"a1": "LOST", "a2": "LOST", "b1": "IN_FLIGHT"}
        assert "lapsed" not in instances(db_location)
        assert [s for s, _, _ in reservations(db_location)] == [1, 1, 0]
        execute(
            db_location,
            "UPDATE gateway_instances SET lease_expires_at = ? WHERE id = 'live'",
            (db_now(db_location) - 1,),
        )
        await until(lambda: statuses(db_location)["b1"] == "LOST", "the lapsed lease's reaping")
    # Settled at the estimate each held.
    assert reservations(db_location) == [(1, 100, 0.5)] * 3


async def test_a_process_that_lost_its_lease_takes_it_again_and_corrects_its_rows(keyed, fake):
    async with gateway(keyed) as (stub, _):
        calls, (request_id,) = await open_streams(stub, 1, None)
        (own,) = instances(keyed.db)
        # As if this process had stalled past its lease and another had reaped it.
        db = Database(keyed.db)
        try:
            db.run_sync(lambda tx: tx.execute("DELETE FROM gateway_instances"))
            db.run_sync(reaper.reap)
        finally:
            db.close()
        assert statuses(keyed.db) == {request_id: "LOST"}
        await until(lambda: instances(keyed.db) == [own], "the lease taken again")
        calls[0].cancel()
        await until(lambda: statuses(keyed.db)[request_id] != "LOST", "the row's correction")
        assert statuses(keyed.db) == {request_id: "CANCELLED"}


def test_the_migration_keeps_the_rows_of_an_existing_database(tmp_path, capsys):
    location = str(tmp_path / "old.db")
    db = Database(location)

    def version_2(tx: Tx) -> None:
        tx.execute(
            "CREATE TABLE schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
        for version, statements in enumerate(MIGRATIONS[:2], start=1):
            for statement in statements:
                tx.execute(statement.replace("{id}", "INTEGER PRIMARY KEY AUTOINCREMENT"))
            tx.execute("INSERT INTO schema_migrations VALUES (?, 0)", (version,))
        tx.execute(
            "INSERT INTO usage_records (request_id, key_id, method, requested_model, "
            "served_model, provider, prompt_tokens, completion_tokens, cached_tokens, "
            "reasoning_tokens, cost_usd, latency_ms, status, reason, attempts, fallbacks, "
            "created_at) VALUES ('old', '', 'Complete', 'zai/glm-4.7', 'zai/glm-4.7', 'zai', "
            "10, 20, 0, 0, 0.25, 5, 'OK', '', 1, 0, ?)",
            (time.time(),),
        )
        tx.execute(
            "INSERT INTO reservations (key_id, created_at, tokens, cost_usd) VALUES ('k', ?, 1, 1)",
            (time.time(),),
        )

    try:
        db.run_sync(version_2)
        assert migrate(db) == len(MIGRATIONS) == 5
        reaped = db.run_sync(reaper.reap)
    finally:
        db.close()
    assert reaped == reaper.Reaped(instances=0, calls=0, reservations=0)
    assert statuses(location) == {"old": "OK"}
    assert reservations(location) == [(0, 1, 1.0)]
    assert main(["usage", "--db", location, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["calls"], row["failed_calls"], row["cost_usd"]) == (1, 0, 0.25)
    assert row["cache_write_tokens"] == 0  # migration 4's default for older rows


async def test_calls_in_flight_count_as_calls_and_lost_ones_as_failed(keyed, db_location):
    db = Database(db_location)
    migrate(db)
    db.close()
    plant_instance(db_location, "gone", -1.0, ["lost"])
    plant_instance(db_location, "busy", 3600.0, ["running"])
    db = Database(db_location)
    try:
        db.run_sync(reaper.reap)
        (row,) = usage_sync(db, "model", 0, time.time() + 60)
    finally:
        db.close()
    assert statuses(db_location) == {"lost": "LOST", "running": "IN_FLIGHT"}
    assert (row.calls, row.failed_calls) == (2, 1)


def test_a_process_is_alive_while_it_runs_and_not_once_it_has_exited():
    assert reaper.process_alive(os.getpid(), reaper.process_start(os.getpid()))
    # The same pid with another start time is a later process that reused it.
    assert not reaper.process_alive(os.getpid(), "1")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = reaper.process_start(child.pid)
    child.wait()
    assert not reaper.process_alive(child.pid, started)


@pytest.fixture
def limiter_db(db_location: str) -> Iterator[Database]:
    db = Database(db_location)
    migrate(db)
    yield db
    db.close()


async def test_a_reservation_the_reaper_settled_is_corrected_by_the_calls_own_settlement(
    limiter_db,
):
    db = limiter_db
    _, secret = KeyStore(db).create("bob", budget_usd=10.0, budget_period="day")
    key = await KeyStore(db).find(secret)
    assert key is not None
    limiter = Limiter(db)
    held = await limiter.reserve(key, 100, 0.5)
    now = db.run_sync(reaper.database_now)
    db.run_sync(
        lambda tx: tx.execute(
            "INSERT INTO usage_records (request_id, key_id, method, requested_model, "
            "served_model, provider, prompt_tokens, completion_tokens, cached_tokens, "
            "reasoning_tokens, latency_ms, status, reason, attempts, fallbacks, created_at, "
            "instance_id, reservation_id) VALUES ('r', ?, 'Complete', 'm', '', '', 0, 0, 0, "
            "0, 0, 'IN_FLIGHT', '', 0, 0, ?, 'nobody', ?)",
            (key.id, now, held.id),
        )
    )
    assert db.run_sync(reaper.reap).reservations == 1
    await limiter.settle(held, 40, 0.2)
    await limiter.close()
    rows = db.run_sync(lambda tx: tx.fetchall("SELECT settled, tokens, cost_usd FROM reservations"))
    assert rows == [(1, 40, 0.2)]


def test_reaping_finds_the_calls_in_flight_by_their_index_even_under_generic_plans(db_location):
    """The partial index on in-flight rows keeps each reaping pass (every
    renewal, in every process) off the rest of the ledger: its WHERE must name
    the status itself, not a parameter a generic plan cannot see through."""
    db = Database(db_location)
    try:
        migrate(db)
        where = reaper._ORPHANS
        params = ("IN_FLIGHT",) * where.count("?")
        if db.dialect == "sqlite":
            explained = f"EXPLAIN QUERY PLAN SELECT id FROM usage_records WHERE {where}"  # noqa: S608  # constants
            plan = db.run_sync(lambda tx: tx.fetchall(explained, params))
        else:
            numbered = where
            for number in range(1, len(params) + 1):
                numbered = numbered.replace("?", f"${number}", 1)

            def explain(tx: Tx) -> list[tuple[object, ...]]:
                # As a pooler or plan_cache_mode=force_generic_plan plans it; with
                # sequential scans priced out, an index is used whenever it can be.
                tx.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                tx.execute("SET LOCAL enable_seqscan = off")
                kinds = ", ".join(["text"] * len(params))
                prepared = f"SELECT id FROM usage_records WHERE {numbered}"  # noqa: S608  # constants
                tx.execute(f"PREPARE orphans{f'({kinds})' if params else ''} AS {prepared}")
                arguments = f"({', '.join(repr(p) for p in params)})" if params else ""
                rows = tx.fetchall(f"EXPLAIN EXECUTE orphans{arguments}")
                tx.execute("DEALLOCATE orphans")
                return rows

            plan = db.run_sync(explain)
    finally:
        db.close()
    assert "usage_records_in_flight" in " ".join(str(row) for row in plan), plan
