"""The state database failing, restarting, stalling or locked: callers get
UNAVAILABLE (GATEWAY_STATE_UNAVAILABLE) within a bounded time, never INTERNAL;
the log says so once, without tracebacks; the gateway reconnects on its own;
settlements that failed meanwhile are written once the database is back.

The PostgreSQL tests run a server of their own (they restart and pause it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import sqlite3
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

import grpc
import pytest

from llmgateway.server.config import Settings
from llmgateway.server.observability.metrics import GatewayMetrics
from llmgateway.server.process.server import Gateway, start_gateway
from llmgateway.server.state import limits, settlements
from llmgateway.server.state.db import Database, StateUnavailableError
from llmgateway.server.state.keys import CallerKey, KeyStore
from llmgateway.server.state.limits import Limiter
from llmgateway.server.state.runtime import open_state
from llmgateway.server.state.schema import migrate
from llmgateway.server.state.threads import WorkThreads
from llmgateway.testing.fake_upstream import FakeUpstream
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from tests.conftest import rich_status, user
from tests.postgres import PostgresServer, fresh_database, throwaway_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from llmgateway.server.state.threads import Job

# A PostgreSQL restart and 0.5 s database timeouts: never beside other tests.
pytestmark = pytest.mark.serial

# Short, so the tests are quick; the bounds asserted are generous multiples.
DB_TIMEOUT = 0.5
LIVENESS_BOUND = 6 * DB_TIMEOUT
# A key with rpm limits reserves first (the reservation meets the outage); a
# key without limits meets it at its ledger row, the call's one write.
KEYS = pytest.mark.parametrize(
    "limits", [{"rpm": 10_000}, {}], ids=["rpm-limited key", "key without limits"]
)


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with throwaway_server() as server:
        if server is None:
            pytest.skip("PostgreSQL is not installed here (.ci/run installs it)")
        yield server


@pytest.fixture
def pg_location(pg: PostgresServer) -> Iterator[str]:
    yield fresh_database(pg.url, "outage")
    # A test that failed half-way must not leave the server down for the next.
    with contextlib.suppress(OSError, ValueError):
        pg.resume()
    if not (pg.data / "postmaster.pid").exists():
        pg.start()


def issue_key(location: str, **limits: object) -> str:
    db = Database(location)
    try:
        migrate(db)
        _, key = KeyStore(db).create("outage", **limits)  # type: ignore[arg-type]
    finally:
        db.close()
    return key


@contextlib.asynccontextmanager
async def gateway(
    settings: Settings, location: str
) -> AsyncIterator[tuple[pb_grpc.CompletionServiceAsyncStub, Gateway]]:
    settings = dataclasses.replace(settings, db=location, db_timeout=DB_TIMEOUT)
    running = await start_gateway(settings, address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield pb_grpc.CompletionServiceStub(channel), running
    finally:
        await running.stop(grace=0)


async def unary(stub: pb_grpc.CompletionServiceAsyncStub, key: str) -> pb.CompleteResponse:
    """A call with no deadline: only the gateway's own bounds end it."""
    response: pb.CompleteResponse = await stub.Complete(
        pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")]),
        metadata=(("authorization", f"Bearer {key}"),),
    )
    return response


def assert_state_unavailable(error: object) -> None:
    assert isinstance(error, grpc.aio.AioRpcError), repr(error)
    status = rich_status(error)
    assert (status.code, status.info.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "GATEWAY_STATE_UNAVAILABLE",
    ), status.message


def reservations(location: str) -> list[tuple[int, float, int]]:
    db = Database(location)
    try:
        rows = db.run_sync(
            lambda tx: tx.fetchall("SELECT tokens, cost_usd, settled FROM reservations ORDER BY id")
        )
    finally:
        db.close()
    return [(int(r[0]), float(r[1]), int(r[2])) for r in rows]


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info]


async def test_a_postgresql_restart_gives_unavailable_then_calls_and_settlements_go_through(
    pg, pg_location, caplog
):
    caplog.set_level(logging.WARNING)
    key = issue_key(pg_location, budget_usd=100.0, budget_period="day")
    # Streams long enough (40 chunks, 50 ms apart) to end while the server is down.
    slow = FakeUpstream(chunk_delay=0.05, stream_chunks=40)
    await slow.start()
    used_tokens = 0
    failures: list[BaseException] = []
    try:
        settings = Settings.load({**slow.environment(), "LLMGATEWAY_DB": pg_location})
        async with gateway(settings, pg_location) as (stub, running):
            assert running.state is not None
            limiter = running.state.limiter
            used_tokens += _tokens(await unary(stub, key))
            streams = [
                stub.StreamComplete(
                    pb.StreamCompleteRequest(model="zai/glm-4.7", messages=[user("long")]),
                    metadata=(("authorization", f"Bearer {key}"),),
                )
                for _ in range(4)
            ]
            for stream in streams:  # each reserved before its first event
                await stream.read()
            await asyncio.to_thread(pg.stop, "fast")

            # While it is down: calls are refused as UNAVAILABLE, never INTERNAL.
            while len(failures) < 10:
                try:
                    used_tokens += _tokens(await unary(stub, key))
                except grpc.aio.AioRpcError as error:
                    failures.append(error)
            # The streams admitted before end well; their settlements wait.
            for stream in streams:
                while (event := await stream.read()) is not grpc.aio.EOF:
                    assert isinstance(event, pb.StreamCompleteResponse)
                    if event.HasField("done"):
                        used_tokens += event.done.usage.prompt_tokens
                        used_tokens += event.done.usage.completion_tokens
            await running.calls.aclose()  # every settlement so far was tried
            assert limiter.settlements_waited >= 4
            assert limiter.unsettled >= 4

            await asyncio.to_thread(pg.start)
            # Back: the first call reconnects and succeeds, and the next ones.
            for _ in range(5):
                used_tokens += _tokens(await unary(stub, key))
            async with asyncio.timeout(30):
                await limiter.drain()
            assert limiter.unsettled == 0
            await running.calls.aclose()
    finally:
        await slow.close()

    for failure in failures:
        assert_state_unavailable(failure)
    rows = reservations(pg_location)
    assert all(settled for _, _, settled in rows)
    # Every call was settled to what it used (calls refused before reserving hold nothing).
    assert sum(tokens for tokens, _, _ in rows) == used_tokens
    assert tracebacks(caplog) == []
    said = [r.getMessage() for r in caplog.records if "is unavailable" in r.getMessage()]
    assert len(said) == 1, said  # once, not once per call
    assert any("answers again" in r.getMessage() for r in caplog.records)


def _tokens(response: pb.CompleteResponse) -> int:
    return response.usage.prompt_tokens + response.usage.completion_tokens


@KEYS
async def test_a_paused_postgresql_answers_unavailable_within_a_bounded_time(
    pg, pg_location, settings, limits
):
    key = issue_key(pg_location, **limits)
    async with gateway(settings, pg_location) as (stub, _):
        await unary(stub, key)  # connected, key looked up
        await asyncio.to_thread(pg.pause)
        try:
            # Twice as many calls as database threads, twice over: threads
            # stuck on the stopped server must neither hold the callers nor
            # pile up for the next ones.
            for _ in range(2):
                async with asyncio.timeout(LIVENESS_BOUND):
                    outcomes = await asyncio.gather(
                        *(unary(stub, key) for _ in range(8)), return_exceptions=True
                    )
                for outcome in outcomes:
                    assert_state_unavailable(outcome)
        finally:
            await asyncio.to_thread(pg.resume)
        async with asyncio.timeout(30):
            while True:  # connections interrupted or timed out are replaced
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await unary(stub, key)
                    break
        await unary(stub, key)


_HOLD_THE_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def locked_by_another_process(location: str) -> Iterator[None]:
    """Another process holds SQLite's write lock until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_THE_LOCK, location],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        assert holder.stdin is not None
        assert holder.stdout is not None
        holder.stdin.close()
        holder.wait(10)
        holder.stdout.close()


@KEYS
async def test_a_locked_sqlite_answers_unavailable_within_a_bounded_time(
    settings, tmp_path, limits
):
    location = str(tmp_path / "locked.db")
    key = issue_key(location, **limits)
    async with gateway(settings, location) as (stub, _):
        await unary(stub, key)
        with locked_by_another_process(location):
            async with asyncio.timeout(LIVENESS_BOUND):
                outcomes = await asyncio.gather(
                    *(unary(stub, key) for _ in range(4)), return_exceptions=True
                )
            for outcome in outcomes:
                assert_state_unavailable(outcome)
        async with asyncio.timeout(30):
            while True:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await unary(stub, key)
                    break


async def test_a_genuine_sql_error_is_not_called_unavailable(db_location):
    db = Database(db_location, timeout=DB_TIMEOUT)
    try:
        with pytest.raises(Exception) as caught:  # noqa: PT011  # each driver has its own
            await db.run(lambda tx: tx.fetchall("SELECT nothing FROM no_such_table"))
        # A bug must surface (INTERNAL, with its traceback), not pass for an outage.
        assert not isinstance(caught.value, StateUnavailableError)
        assert not db.unavailable
        assert await db.run(lambda tx: tx.fetchall("SELECT 1")) == [(1,)]
    finally:
        db.close()


async def test_a_slow_statement_is_cut_at_the_timeout_unless_given_longer(pg_location):
    db = Database(pg_location, timeout=0.3)
    try:
        async with asyncio.timeout(LIVENESS_BOUND):
            with pytest.raises(StateUnavailableError):
                await db.run(lambda tx: tx.fetchall("SELECT 1 FROM pg_sleep(30)"))
        # The statement was cancelled, the connection kept.
        assert await db.run(lambda tx: tx.fetchall("SELECT 1")) == [(1,)]
        slow = await db.run(lambda tx: tx.fetchall("SELECT 7 FROM pg_sleep(0.6)"), within=10)
        assert slow == [(7,)]
    finally:
        db.close()


async def test_a_lock_held_elsewhere_refuses_within_the_timeout(pg_location):
    import psycopg

    db = Database(pg_location, timeout=DB_TIMEOUT)
    try:
        migrate(db)
        record, _ = KeyStore(db).create("contended", rpm=100)
        limiter = Limiter(db)
        with psycopg.connect(pg_location, autocommit=True) as holder:
            # Another process (or replica) in a reservation of this key that hangs.
            holder.execute(
                "SELECT pg_advisory_lock(hashtext(%s))", (f"llmgateway-key-{record.id}",)
            )
            async with asyncio.timeout(LIVENESS_BOUND):
                with pytest.raises(StateUnavailableError):
                    await limiter.reserve(record, tokens=10, cost_usd=0.0)
        assert (await limiter.reserve(record, tokens=10, cost_usd=0.0)).tokens == 10
        await limiter.close()
    finally:
        db.close()


@contextlib.contextmanager
def write_locked(location: str) -> Iterator[None]:
    holder = sqlite3.connect(location, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@contextlib.contextmanager
def limiter_on_sqlite(tmp_path: Path) -> Iterator[tuple[str, CallerKey, Limiter, Database]]:
    """The database's location, a key of 100 rpm and a Limiter on a fresh
    SQLite database that waits 0.2 s at the most for a lock (and the database)."""
    location = str(tmp_path / "state.db")
    db = Database(location, timeout=0.2)
    try:
        migrate(db)
        record, _ = KeyStore(db).create("settles", rpm=100)
        yield location, record, Limiter(db), db
    finally:
        db.close()


async def test_a_settlement_the_database_cannot_take_now_is_retried(tmp_path):
    with limiter_on_sqlite(tmp_path) as (location, record, limiter, _):
        held = await limiter.reserve(record, tokens=100, cost_usd=1.0)
        with write_locked(location):
            await limiter.settle(held, 10, 0.25)  # does not raise: it waits
            assert limiter.unsettled == 1
        async with asyncio.timeout(30):
            await limiter.drain()
        assert reservations(location) == [(10, 0.25, 1)]
        await limiter.close()


async def test_settlements_still_waiting_at_shutdown_are_counted_in_the_log(tmp_path, caplog):
    metrics = GatewayMetrics()
    with limiter_on_sqlite(tmp_path) as (location, record, limiter, _):
        limiter.observe(metrics)
        held = [await limiter.reserve(record, tokens=100, cost_usd=1.0) for _ in range(3)]
        with write_locked(location):
            for reservation in held:
                await limiter.settle(reservation, 10, 0.25)
            await limiter.close()
        assert (limiter.settlements_waited, limiter.settlements_lost) == (3, 3)
        assert any("3 settlements could not be written" in r.getMessage() for r in caplog.records)
    # And as metrics (what an operator alerts on).
    for name in (
        "llmgateway_limit_settlements_waited_total",
        "llmgateway_limit_settlements_lost_total",
    ):
        assert metrics.registry.get_sample_value(name, {"store": "database"}) == 3
    # Not written, not even once the lock went (read after the database
    # closed, its thread ended): the reservations still hold their estimates.
    assert reservations(location) == [(100, 1.0, 0)] * 3


async def test_a_settlement_being_retried_at_shutdown_is_counted_by_how_its_write_ended(
    tmp_path, caplog, monkeypatch
):
    # Shutdown used to cancel the retry loop mid-write and call the settlement
    # lost, while its write, already waiting for the lock on the database
    # thread, committed once the lock went: the log said lost what was written.
    monkeypatch.setattr(settlements, "RETRY_FIRST", 0.001)  # the retry writes at once
    with limiter_on_sqlite(tmp_path) as (location, record, limiter, db):
        held = await limiter.reserve(record, tokens=100, cost_usd=1.0)
        retry_on_thread = threading.Event()
        run_on_thread = db._job

        def job(work, write, seconds, session, job):
            if isinstance(work, functools.partial) and work.func is limits._settle:
                retry_on_thread.set()
            return run_on_thread(work, write, seconds, session, job)

        monkeypatch.setattr(db, "_job", job)
        with write_locked(location):
            await limiter.settle(held, 10, 0.25)
            # The retry's write reaches the database thread and waits for the lock.
            assert await asyncio.to_thread(retry_on_thread.wait, 30)
            assert limiter._writing is not None
            assert not limiter._writing.done()
            # No time left for a write of close's own: only the retry's counts.
            await limiter.close(give_up=asyncio.get_running_loop().time())
        assert limiter.settlements_lost == 1
        assert any("1 settlements could not be written" in r.getMessage() for r in caplog.records)
    # Read once the database is closed (its thread has ended): nothing was
    # written behind the log's back.
    assert reservations(location) == [(100, 1.0, 0)]


@pytest.mark.parametrize("when", ["before shutdown", "during shutdown"])
async def test_a_settlement_write_failing_for_a_bug_is_logged_and_shutdown_goes_on(
    tmp_path, caplog, monkeypatch, when
):
    # A settlement write that fails with something other than the database
    # being away (a bug) used to be raised again from Limiter.close, so
    # State.close never wrote the ledger's last rows, kept the lease and left
    # the database open.
    monkeypatch.setattr(settlements, "RETRY_FIRST", 0.001)  # the retry writes at once
    location = str(tmp_path / "state.db")
    issue_key(location, rpm=100)
    state = await open_state(Settings(db=location, db_timeout=0.2))
    assert state is not None
    assert isinstance(state.limiter, Limiter)  # no Redis configured: the database's
    [record] = state.keys.list()
    held = await state.limiter.reserve(record, tokens=100, cost_usd=1.0)
    raised: list[RuntimeError] = []
    retry_reached_the_database = asyncio.Event()
    fail = asyncio.Event()
    if when == "before shutdown":
        fail.set()
    run = state.db.run

    async def failing_settlements(work, **options):
        if isinstance(work, functools.partial) and work.func is limits._settle:
            retry_reached_the_database.set()
            await fail.wait()
            raised.append(RuntimeError("a bug in writing settlements"))
            raise raised[-1]
        return await run(work, **options)

    monkeypatch.setattr(state.db, "run", failing_settlements)
    with write_locked(location):
        await state.limiter.settle(held, 10, 0.25)  # the database is away: it waits
    assert state.limiter.unsettled == 1
    async with asyncio.timeout(30):
        await retry_reached_the_database.wait()
        writing = state.limiter._writing
        assert writing is not None
        if when == "before shutdown":
            await asyncio.wait({writing})  # it failed; the retry loop waits to try again
        else:
            closing = asyncio.create_task(state.close())
            # Close stops the retry loop, then waits for the write it had begun
            # (no event marks that step: polled).
            while state.limiter._pending.retrying:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            assert state.limiter._writing is not None
            assert not state.limiter._writing.done()
            fail.set()
    async with asyncio.timeout(30):
        await (state.close() if when == "before shutdown" else closing)

    # Each failed write logged once, with its traceback (the retry's, then
    # close's own try), and close raised neither.
    logged = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert logged == raised
    assert len(raised) == 2
    assert state.limiter.settlements_lost == 1
    # The rest of shutdown went on: the ledger closed with nothing left, the
    # lease was given up, the database closed.
    assert state.ledger.pending == 0
    with pytest.raises(StateUnavailableError, match="closed"):
        await run(lambda tx: tx.fetchall("SELECT 1"))
    assert instances(location) == []
    assert reservations(location) == [(100, 1.0, 0)]


def instances(location: str) -> list[str]:
    db = Database(location)
    try:
        rows = db.run_sync(lambda tx: tx.fetchall("SELECT id FROM gateway_instances"))
    finally:
        db.close()
    return [str(r[0]) for r in rows]


def _threads(max_pending: int, timeout: float) -> WorkThreads[None]:
    return WorkThreads(
        1,
        lambda: None,
        lambda _: None,
        timeout=timeout,
        max_pending=max_pending,
        name="test-db",
    )


async def test_work_beyond_the_queue_bound_is_refused_at_once() -> None:
    threads = _threads(max_pending=2, timeout=60.0)
    release = threading.Event()
    running = threading.Event()

    def blocked(session: None, job: Job[str]) -> str:
        running.set()
        release.wait()
        return "done"

    first = asyncio.ensure_future(threads.run(blocked))
    await asyncio.to_thread(running.wait)
    queued = [asyncio.ensure_future(threads.run(lambda s, j: "queued")) for _ in range(2)]
    await asyncio.sleep(0)
    # The queue is full while the thread is busy: refused now, not in 60 s.
    with pytest.raises(StateUnavailableError, match="already wait"):
        await threads.run(lambda s, j: "one too many")
    release.set()
    assert await first == "done"
    assert await asyncio.gather(*queued) == ["queued", "queued"]
    threads.close(timeout=5)


async def test_work_past_its_deadline_is_skipped_or_interrupted() -> None:
    threads = _threads(max_pending=10, timeout=0.2)
    interrupted = threading.Event()
    ran: list[str] = []

    def stuck(session: None, job: Job[str]) -> str:
        job.begin(interrupted.set)
        interrupted.wait(30)  # a statement on a stopped server, until interrupted
        return "interrupted"

    def never(session: None, job: Job[str]) -> str:
        ran.append("never")
        return "never"

    first = asyncio.ensure_future(threads.run(stuck))
    await asyncio.sleep(0)
    with pytest.raises(StateUnavailableError, match="no answer within"):
        await threads.run(never)  # waited behind the stuck one past the deadline
    # The running one was interrupted, and its caller heard how it ended.
    assert await first == "interrupted"
    threads.close(timeout=5)
    assert ran == []


def test_the_timeout_setting(tmp_path: Path) -> None:
    assert Settings.load({}).db_timeout == 5.0
    assert Settings.load({"LLMGATEWAY_DB_TIMEOUT": "0.75"}).db_timeout == 0.75
    config = tmp_path / "gateway.toml"
    config.write_text("[state]\ntimeout_seconds = 2\n")
    assert Settings.load({}, config).db_timeout == 2.0
