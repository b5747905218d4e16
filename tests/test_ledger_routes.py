"""Routed calls in the ledger: route, task and task source per row, usage by route and by
task (GetUsage and `llmgateway usage`), migration 5 over a ledger that holds rows, and
admissions batched within SQLite's oldest parameter limit."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import pytest

from llmgateway.server.observability.observe import CallRecord
from llmgateway.server.process.cli import main
from llmgateway.server.state import ledger as ledger_module
from llmgateway.server.state import schema
from llmgateway.server.state.db import Database
from llmgateway.server.state.keys import KeyStore
from llmgateway.server.state.ledger import Ledger, usage_sync
from llmgateway.server.state.schema import migrate
from llmgateway.v1 import completion_service_pb2 as pb
from tests.test_keys import bearer, gateway

if TYPE_CHECKING:
    from collections.abc import Iterator

    from llmgateway.server.config import Settings

ROUTE_COLUMNS = ("request_id", "status", "route", "task", "task_source")


def route_columns(location: str) -> list[tuple[Any, ...]]:
    db = Database(location)
    try:
        return db.run_sync(
            lambda tx: tx.fetchall(
                f"SELECT {', '.join(ROUTE_COLUMNS)} FROM usage_records ORDER BY id"  # noqa: S608
            )
        )
    finally:
        db.close()


def call(request_id: str, **fields: Any) -> CallRecord:
    return CallRecord(
        request_id=request_id,
        method="Complete",
        requested_model=fields.pop("requested_model", "route/default"),
        prompt_tokens=fields.pop("prompt_tokens", 10),
        completion_tokens=5,
        cost_usd=fields.pop("cost_usd", 0.01),
        started_at=time.time(),
        **fields,
    )


# A routed call whose task a rule inferred, one the caller named, one that fell to the
# route's default, a named model with the caller's own task (Q1), and a plain call.
RECORDS = [
    call("a", route="route/default", task="code", task_source="rule:code-fences"),
    call("b", route="route/default", task="code", task_source="caller"),
    call("c", route="route/cheap", task="chat", task_source="default", status="UNAVAILABLE"),
    call("d", requested_model="zai/glm-4.7", task="translation", task_source="caller"),
    call("e", requested_model="zai/glm-4.7"),
]


@pytest.fixture
def recorded(db_location: str) -> Iterator[Database]:
    """The ledger of RECORDS, written through Ledger as the gateway writes them."""

    async def record() -> None:
        db = Database(db_location)
        ledger = Ledger(db, instance_id="me")
        ledger.start()
        try:
            for record in RECORDS:
                await ledger.call_admitted(record, None)
                ledger.call_finished(record)
            assert await ledger.close()
        finally:
            db.close()

    setup = Database(db_location)
    migrate(setup)
    setup.close()
    asyncio.run(record())
    db = Database(db_location)
    yield db
    db.close()


def test_each_row_says_its_route_task_and_where_the_task_came_from(recorded, db_location):
    assert route_columns(db_location) == [
        ("a", "OK", "route/default", "code", "rule:code-fences"),
        ("b", "OK", "route/default", "code", "caller"),
        ("c", "UNAVAILABLE", "route/cheap", "chat", "default"),
        ("d", "OK", "", "translation", "caller"),
        ("e", "OK", "", "", ""),
    ]


def test_usage_groups_by_route_and_by_task_with_the_rest_under_an_empty_group(recorded):
    until = time.time() + 60
    by_route = {r.group: (r.calls, r.failed_calls) for r in usage_sync(recorded, "route", 0, until)}
    assert by_route == {"": (2, 0), "route/cheap": (1, 1), "route/default": (2, 0)}
    by_task = {r.group: r.calls for r in usage_sync(recorded, "task", 0, until)}
    assert by_task == {"": 1, "chat": 1, "code": 2, "translation": 1}


def test_an_admitted_row_already_holds_its_route(db_location):
    # A call that never finishes (its process died) is still counted under its route.
    async def admit() -> None:
        db = Database(db_location)
        migrate(db)
        ledger = Ledger(db, instance_id="me")
        ledger.start()
        try:
            await ledger.call_admitted(RECORDS[0], None)
            await ledger.flush()
        finally:
            await ledger.close()
            db.close()

    asyncio.run(admit())
    assert route_columns(db_location) == [
        ("a", "IN_FLIGHT", "route/default", "code", "rule:code-fences")
    ]


def test_the_usage_command_groups_by_route_and_task(recorded, db_location, capsys):
    assert main(["usage", "--db", db_location, "--by", "route"]) == 0
    table = capsys.readouterr().out.splitlines()
    groups = [line.split()[0] for line in table[1:]]
    assert groups == ["(not", "route/cheap", "route/default", "TOTAL"]
    assert table[1].split()[:4] == ["(not", "routed)", "2", "0"]
    assert table[0].split()[0] == "route"
    assert main(["usage", "--db", db_location, "--by", "task"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in table[1:]] == [
        ["(no", "task)", "1"],
        ["chat", "1", "1"],
        ["code", "2", "0"],
        ["translation", "1", "0"],
        ["TOTAL", "5", "1"],
    ]
    # JSON keeps the empty group as it is stored.
    assert main(["usage", "--db", db_location, "--by", "route", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(row["route"], row["calls"]) for row in report] == [
        ("", 2),
        ("route/cheap", 1),
        ("route/default", 2),
    ]
    assert main(["usage", "--db", db_location, "--by", "task", "--json"]) == 0
    assert [row["task"] for row in json.loads(capsys.readouterr().out)] == [
        "",
        "chat",
        "code",
        "translation",
    ]


async def test_get_usage_groups_by_route_and_by_task(
    recorded: Database, settings: Settings, db_location: str
) -> None:
    store = KeyStore(recorded)
    _, reader = store.create("finance", usage_reader=True)
    keyed = dataclasses.replace(settings, db=db_location)
    async with gateway(keyed) as (stub, _):
        by_route = await stub.GetUsage(
            pb.GetUsageRequest(group_by=pb.USAGE_GROUPING_ROUTE), metadata=bearer(reader)
        )
        by_task = await stub.GetUsage(
            pb.GetUsageRequest(group_by=pb.USAGE_GROUPING_TASK), metadata=bearer(reader)
        )
    assert [(r.group, r.calls, r.failed_calls) for r in by_route.rows] == [
        ("", 2, 0),
        ("route/cheap", 1, 1),
        ("route/default", 2, 0),
    ]
    assert [(r.group, r.calls) for r in by_task.rows] == [
        ("", 1),
        ("chat", 1),
        ("code", 2),
        ("translation", 1),
    ]
    assert by_route.rows[2].cost_usd == pytest.approx(0.02)


def test_migration_5_keeps_a_version_4_ledger_and_counts_its_rows_as_not_routed(
    db_location, monkeypatch
):
    db = Database(db_location)
    try:
        with monkeypatch.context() as before:
            before.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:4])
            assert migrate(db) == 4
        db.run_sync(
            lambda tx: tx.execute(
                "INSERT INTO usage_records (request_id, key_id, method, requested_model, "
                "served_model, provider, prompt_tokens, completion_tokens, cached_tokens, "
                "cache_write_tokens, reasoning_tokens, cost_usd, latency_ms, ttft_ms, status, "
                "reason, attempts, fallbacks, created_at) VALUES "
                "('old', '', 'Complete', 'fast', 'zai/glm-4.5-flash', 'zai', 7, 3, 0, 0, 0, "
                "0.5, 12, 4, 'OK', '', 1, 0, ?)",
                (time.time(),),
            )
        )
        assert migrate(db) == len(schema.MIGRATIONS) == 5
        assert migrate(db) == 5  # and again: nothing left to do
        (row,) = usage_sync(db, "route", 0, time.time() + 60)
        (task,) = usage_sync(db, "task", 0, time.time() + 60)
    finally:
        db.close()
    assert (row.group, row.calls, row.prompt_tokens, row.cost_usd) == ("", 1, 7, 0.5)
    assert (task.group, task.calls) == ("", 1)
    assert route_columns(db_location) == [("old", "OK", "", "", "")]


def test_admissions_are_batched_within_sqlites_oldest_parameter_limit(tmp_path, monkeypatch):
    """SQLite builds before 3.32 allow 999 parameters a statement: a batch of 100
    admissions (24 values each) must be split into statements that fit."""
    connect = sqlite3.connect

    def old_sqlite(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection: sqlite3.Connection = connect(*args, **kwargs)
        connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        return connection

    monkeypatch.setattr(sqlite3, "connect", old_sqlite)
    location = str(tmp_path / "state.db")
    records = [
        call(f"r{i}", route="route/default", task="code", task_source="caller") for i in range(100)
    ]
    transactions = 0

    async def admit_together() -> None:
        nonlocal transactions
        db = Database(location)
        migrate(db)
        run = db.run

        async def counting(work: Any, **kwargs: Any) -> Any:
            nonlocal transactions
            transactions += 1
            return await run(work, **kwargs)

        db.run = counting  # type: ignore[method-assign]
        ledger = Ledger(db, instance_id="me")
        ledger.start()
        try:
            await asyncio.gather(*(ledger.call_admitted(r, None) for r in records))
        finally:
            await ledger.close()
            db.close()

    asyncio.run(admit_together())
    assert transactions == 1
    rows = route_columns(location)
    assert len(rows) == 100
    assert {row[1:] for row in rows} == {("IN_FLIGHT", "route/default", "code", "caller")}
    columns = len(ledger_module._COLUMNS.split(", "))  # the bound itself
    assert columns == 24
    assert columns * ledger_module._ROWS_PER_INSERT <= 999
