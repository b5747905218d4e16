"""The issue's proofs against the local cluster (scripts/cluster.py): Envoy before three
`llmgateway serve` replicas sharing PostgreSQL and Redis, over the fake upstream.

One cluster serves the whole module, in the order of the file: spread, kill -9, rolling
restart, limits in Redis, Redis restarted (fail closed, a budget held through a restart, then
the fail-open row), limits in PostgreSQL (which moves the cluster's limits to the database).
Run them alone, never beside other tests (the exact counts and the one-second bound hold on an idle machine):

    bash scripts/cluster.sh proof [--ci|--full]

LLMGATEWAY_PROOF_SCALE (ci, the default, or full) scales how long streams and loads last,
never the issue's numbers: 200 open streams, 300 concurrent calls from one key.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Self

import grpc
import psycopg
import pytest
import redis

from llmgateway.client.async_client import AsyncCompletionClient
from llmgateway.client.errors import ConnectionLostError, RateLimitedError, UnavailableError
from llmgateway.server.call_path.calls import UNKNOWN_PRICE_RESERVATION_USD
from llmgateway.server.state.ledger import IN_FLIGHT, LOST
from llmgateway.server.state.redis_limits import nano
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from scripts.cluster import Cluster, ClusterOptions
from tests.conftest import user

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence

pytestmark = pytest.mark.cluster


@dataclass(frozen=True)
class Scale:
    """How long things last; the issue's counts stay the same at every scale."""

    # Chunks per streamed answer, 0.05 s apart (the cluster's fake upstream).
    stream_chunks: int
    unary_per_second: float
    # Unary load kept up after a kill, before the load stops.
    after_kill_seconds: float
    # Rolling restarts over every replica.
    rolling_rounds: int


SCALES = {
    # Streams of about 3 s: all 200 open before the first ends, and a drain is short.
    "ci": Scale(stream_chunks=60, unary_per_second=40, after_kill_seconds=2.5, rolling_rounds=1),
    "full": Scale(stream_chunks=200, unary_per_second=100, after_kill_seconds=10, rolling_rounds=2),
}
_SCALE_NAME = os.environ.get("LLMGATEWAY_PROOF_SCALE") or "ci"
if _SCALE_NAME not in SCALES:
    raise pytest.UsageError(f"LLMGATEWAY_PROOF_SCALE must be ci or full, got {_SCALE_NAME!r}")
SCALE = SCALES[_SCALE_NAME]
STREAMS = 200  # the open streams
CONCURRENT = 300  # the concurrent calls from one key
# A model no price table knows: every call reserves UNKNOWN_PRICE_RESERVATION_USD and
# settles at it, however it ends, so spend counts admitted calls exactly.
MODEL = "zai/unpriced-proof"
CHANNELS = 8
# The bound: calls succeed on the other replicas within a second of a kill.
FAILOVER_SECONDS = 1.0
# Hang guards only (a wait that takes this long has failed), never the proof's bounds.
HANG_SECONDS = 60.0
# Replicas wait this long for Redis before failing a call closed (the default is 0.5 s).
# 200 streams admitted at once on two cores shared by Envoy, three replicas, PostgreSQL,
# Redis and this load stall a replica's event loop past 0.5 s now and then, and a call
# would be refused UNAVAILABLE: a Redis that answers is not what these proofs test.
REDIS_TIMEOUT_SECONDS = 3.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # Under /tmp and open to others: as root, PostgreSQL runs as the postgres user.
    parent = Path(tempfile.mkdtemp(prefix="llmgateway-proofs-"))
    parent.chmod(0o755)
    options = ClusterOptions(
        port=0,
        run_dir=parent / "cluster",
        fake_stream_chunks=SCALE.stream_chunks,
        extra_env={"LLMGATEWAY_REDIS_TIMEOUT": str(REDIS_TIMEOUT_SECONDS)},
    )
    started = Cluster.up(options)
    try:
        serving(started, range(3))
        yield started
    finally:
        started.down()
        shutil.rmtree(parent, ignore_errors=True)


# ---- callers ----


def clients(
    cluster: Cluster, key: str, *, target: str | None = None, max_attempts: int = 3
) -> list[AsyncCompletionClient]:
    """CHANNELS clients, each with a connection of its own (gRPC would otherwise share one
    subchannel between channels to the same target)."""
    return [
        AsyncCompletionClient(
            target or cluster.address,
            api_key=key,
            grpc_options=[("grpc.use_local_subchannel_pool", 1)],
            max_attempts=max_attempts,
        )
        for _ in range(CHANNELS)
    ]


@contextlib.asynccontextmanager
async def open_clients(
    cluster: Cluster, key: str, *, target: str | None = None, max_attempts: int = 3
) -> AsyncIterator[list[AsyncCompletionClient]]:
    """`clients`, closed on leaving (3 attempts: the Python client's default)."""
    made = clients(cluster, key, target=target, max_attempts=max_attempts)
    try:
        yield made
    finally:
        await asyncio.gather(*(client.close() for client in made))


@dataclass
class StreamOutcome:
    dones: int = 0
    error: Exception | None = None
    # The x-request-id of a stream that failed after the gateway answered.
    request_id: str = ""


async def stream_once(client: AsyncCompletionClient, opened: asyncio.Event) -> StreamOutcome:
    """One stream read to its end; `opened` is set at its first event (or its failure)."""
    outcome = StreamOutcome()
    try:
        async with client.stream(MODEL, "hi") as events:
            async for event in events:
                opened.set()
                if event.WhichOneof("event") == "done":
                    outcome.dones += 1
    except Exception as error:  # noqa: BLE001  # the outcome is what the proof judges
        outcome.error = error
        cause = error.__cause__
        if cause is not None and hasattr(cause, "initial_metadata"):
            outcome.request_id = dict(cause.initial_metadata() or ()).get("x-request-id", "")
    finally:
        opened.set()
    return outcome


class Streams:
    """`count` streams spread over `callers`: `opened()` once every one has its first
    event (so every call was admitted), `finished()` for their outcomes."""

    def __init__(self, callers: Sequence[AsyncCompletionClient], count: int) -> None:
        self._opened = [asyncio.Event() for _ in range(count)]
        self._tasks = [
            asyncio.create_task(stream_once(callers[i % len(callers)], event))
            for i, event in enumerate(self._opened)
        ]

    async def opened(self) -> None:
        async with asyncio.timeout(HANG_SECONDS):
            await asyncio.gather(*(event.wait() for event in self._opened))

    async def finished(self) -> list[StreamOutcome]:
        async with asyncio.timeout(HANG_SECONDS + SCALE.stream_chunks * 0.05):
            return list(await asyncio.gather(*self._tasks))


@dataclass
class UnaryOutcome:
    started: float
    ended: float
    error: Exception | None


@dataclass
class UnaryLoad:
    """Unary calls at a steady rate, each on its own task (a slow answer does not slow the
    load), through clients with the Python client's defaults (3 attempts on UNAVAILABLE)."""

    callers: Sequence[AsyncCompletionClient]
    per_second: float
    outcomes: list[UnaryOutcome] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _calls: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        async with asyncio.timeout(HANG_SECONDS):
            await asyncio.gather(*self._calls)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        for n in range(10**9):
            await asyncio.sleep(max(0.0, began + n / self.per_second - loop.time()))
            call = asyncio.create_task(self._one(self.callers[n % len(self.callers)]))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def _one(self, client: AsyncCompletionClient) -> None:
        started = time.monotonic()
        error: Exception | None = None
        try:
            await client.complete(MODEL, "hi", timeout=30)
        except Exception as failed:  # noqa: BLE001  # the outcome is what the proof judges
            error = failed
        self.outcomes.append(UnaryOutcome(started, time.monotonic(), error))

    def failures(self) -> list[UnaryOutcome]:
        return [o for o in self.outcomes if o.error is not None]


async def calls(callers: Sequence[AsyncCompletionClient], count: int) -> list[Exception | None]:
    """`count` concurrent unary calls; each one's error, or None."""

    async def one(client: AsyncCompletionClient) -> Exception | None:
        try:
            await client.complete(MODEL, "hi", timeout=30)
        except Exception as error:  # noqa: BLE001  # the outcome is what the proof judges
            return error
        return None

    return list(await asyncio.gather(*(one(callers[i % len(callers)]) for i in range(count))))


def refused(errors: Sequence[Exception | None], reason: str) -> int:
    return sum(isinstance(e, RateLimitedError) and e.reason == reason for e in errors)


def served(cluster: Cluster, method: str) -> list[float]:
    """Each replica's OK calls of `method` so far."""
    return [cluster.replica_requests(i, method=method, status="OK") for i in range(3)]


def reached(cluster: Cluster, method: str) -> list[float]:
    """Each replica's finished calls of `method` so far, whatever their status."""
    return [cluster.replica_requests(i, method=method) for i in range(3)]


def delta(after: Sequence[float], before: Sequence[float]) -> list[float]:
    return [a - b for a, b in zip(after, before, strict=True)]


# ---- the shared stores ----


def key_id(cluster: Cluster, name: str) -> str:
    with psycopg.connect(cluster.postgres_url) as db:
        row = db.execute(
            "SELECT id FROM api_keys WHERE name = %s AND revoked_at IS NULL", (name,)
        ).fetchone()
    assert row is not None
    return str(row[0])


def ledger(cluster: Cluster, instance: str) -> list[tuple[str, str, str]]:
    """(request_id, method, status) of every ledger row the instance wrote."""
    with psycopg.connect(cluster.postgres_url) as db:
        rows = db.execute(
            "SELECT request_id, method, status FROM usage_records WHERE instance_id = %s",
            (instance,),
        ).fetchall()
    return [(str(r), str(m), str(s)) for r, m, s in rows]


def held_in_redis(cluster: Cluster, key: str, instance: str) -> int:
    """Reservations of key `key` that `instance` holds in Redis (records with a lease)."""
    with redis.Redis.from_url(cluster.redis_url) as store:
        records = list(store.scan_iter(match=f"lgw:{{{key}}}:r:*", count=1000))
        owners = [store.hget(record, "instance") for record in records]
    return sum(owner == instance.encode() for owner in owners)


def spent_in_redis(cluster: Cluster, key: str) -> int:
    """Nano-USD the key's budget counters hold (spent, or held by calls in flight)."""
    with redis.Redis.from_url(cluster.redis_url) as store:
        counters = list(store.scan_iter(match=f"lgw:{{{key}}}:b:*"))
        return sum(int(store.get(counter) or 0) for counter in counters)


def spent_in_postgres(cluster: Cluster, key: str) -> float:
    with psycopg.connect(cluster.postgres_url) as db:
        row = db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM reservations WHERE key_id = %s", (key,)
        ).fetchone()
    assert row is not None
    return float(row[0])


def serving(cluster: Cluster, replicas: Iterable[int]) -> None:
    """Calls through Envoy (the load key's) until each of `replicas`, freshly started, has
    served one. Envoy reports a replica healthy about a second before its worker sends the
    replica calls: until then one replica gets them all."""
    wanted = list(replicas)
    deadline = time.monotonic() + HANG_SECONDS
    with grpc.insecure_channel(cluster.address) as channel:
        stub = pb_grpc.CompletionServiceStub(channel)
        request = pb.CompleteRequest(model=MODEL, messages=[user("warm up")])
        metadata = (("authorization", f"Bearer {cluster.load_key}"),)
        while not all(cluster.replica_requests(i, method="Complete") for i in wanted):
            assert time.monotonic() < deadline, f"replicas {wanted} got no call through Envoy"
            for _ in range(10):
                stub.Complete(request, metadata=metadata, timeout=30)
            time.sleep(0.05)


async def until(what: str, ready: Callable[[], bool], seconds: float = HANG_SECONDS) -> None:
    """Poll `ready` (blocking, so in a thread) until it holds; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not await asyncio.to_thread(ready):
        assert time.monotonic() < deadline, f"{what} within {seconds:.0f} s"
        await asyncio.sleep(0.1)


# ---- 1. spread ----


async def test_calls_through_envoy_reach_all_three_replicas(cluster):
    before = served(cluster, "Complete")
    async with open_clients(cluster, cluster.load_key) as callers:
        errors = await calls(callers, CONCURRENT)
    assert errors == [None] * CONCURRENT
    spread = delta(served(cluster, "Complete"), before)
    # Each call was served once, by one replica (no retry repeated one)...
    assert sum(spread) == CONCURRENT
    # ... and least-request balancing gave each replica a fair share (a third is 100;
    # a replica left out, or pinned by one connection, would get far less).
    assert min(spread) >= CONCURRENT / 6, spread


# ---- 2. kill -9 under load ----


async def test_a_replica_killed_under_load_loses_only_its_own_streams(cluster):
    name = "proof-kill"
    # Limited (generously), so that its reservations are held in Redis with a lease.
    key = cluster.create_key(name, rpm=1_000_000, budget_usd=10_000.0, per="day")
    killed = 1
    instance = cluster.instance_id(killed)
    async with (
        open_clients(cluster, key) as streamers,
        open_clients(cluster, cluster.load_key) as unary,
        UnaryLoad(unary, SCALE.unary_per_second) as load,
    ):
        streams = Streams(streamers, STREAMS)
        await streams.opened()
        holding = await asyncio.to_thread(held_in_redis, cluster, key_id(cluster, name), instance)
        killed_at = time.monotonic()
        await asyncio.to_thread(cluster.kill_replica, killed)
        outcomes = await streams.finished()
        await asyncio.sleep(max(0.0, killed_at + SCALE.after_kill_seconds - time.monotonic()))
    # The killed replica held some of the streams' reservations when it died.
    assert holding > 0

    # Every stream either finished (one done) or failed without a done: a caller never
    # mistakes a cut stream for a whole answer.
    cut = [o for o in outcomes if o.error is not None]
    assert all((o.error is None and o.dones == 1) or (o.error and o.dones == 0) for o in outcomes)
    assert 0 < len(cut) < STREAMS
    # Envoy relays the dead replica's reset as INTERNAL; the client calls it what it is.
    assert all(isinstance(o.error, ConnectionLostError) for o in cut), {repr(o.error) for o in cut}

    # New calls succeed on the others within a second, and every call made after that
    # second succeeds (the client's default retries allowed).
    after = [o for o in load.outcomes if o.started >= killed_at]
    first_success = min(o.ended for o in after if o.error is None)
    assert first_success - killed_at <= FAILOVER_SECONDS
    late = [o for o in after if o.started >= killed_at + FAILOVER_SECONDS]
    assert late
    assert all(o.error is None for o in late), [repr(o.error) for o in late if o.error]

    # The cut streams are exactly the killed replica's: in the ledger under its instance,
    # and LOST once another replica saw it dead.
    def reaped() -> bool:
        return all(status != IN_FLIGHT for _, _, status in ledger(cluster, instance))

    await until("the killed replica's calls were reaped", reaped)
    lost_streams = {
        rid for rid, method, status in ledger(cluster, instance)
        if method == "StreamComplete" and status == LOST
    }  # fmt: skip
    assert {o.request_id for o in cut} == lost_streams

    # Its reservations' leases lapse in Redis, and the estimates they held stay spent
    # (the upstream may bill those calls): the key's spend is every stream's estimate.
    await until(
        "the killed replica's reservations expired",
        lambda: held_in_redis(cluster, key_id(cluster, name), instance) == 0,
    )
    estimate = nano(UNKNOWN_PRICE_RESERVATION_USD)
    assert spent_in_redis(cluster, key_id(cluster, name)) == STREAMS * estimate

    # Restarted, it rejoins: Envoy sees it healthy and sends it calls.
    await asyncio.to_thread(cluster.start_replica, killed)
    assert cluster.envoy_health()[killed] == "healthy"
    await asyncio.to_thread(serving, cluster, [killed])


# ---- 3. rolling restart ----


def watch_unhealthy(cluster: Cluster, replica: int, stop: threading.Event) -> list[bool]:
    """Poll Envoy's view of `replica` until `stop`; [True] once Envoy marked it unhealthy
    while its process was still running (draining)."""
    seen: list[bool] = []
    pid = cluster.replicas[replica].pid

    def run() -> None:
        while not stop.is_set() and not seen:
            flags = cluster.envoy_health().get(replica, "")
            if flags != "healthy" and Path(f"/proc/{pid}").exists():
                seen.append(True)
            time.sleep(0.05)

    threading.Thread(target=run, daemon=True).start()
    return seen


async def test_a_rolling_restart_under_load_fails_no_call(cluster):
    outcomes: list[StreamOutcome] = []
    codes: list[int] = []
    drained_unhealthy: list[bool] = []
    async with (
        open_clients(cluster, cluster.load_key) as streamers,
        open_clients(cluster, cluster.load_key) as unary,
        UnaryLoad(unary, SCALE.unary_per_second) as load,
    ):
        steps = [replica for _ in range(SCALE.rolling_rounds) for replica in range(3)]
        streams = Streams(streamers, STREAMS)
        for step, replica in enumerate(steps):
            # Streams open on this replica (and the others) when it gets SIGTERM.
            await streams.opened()
            stop = threading.Event()
            seen = watch_unhealthy(cluster, replica, stop)
            codes.append(await asyncio.to_thread(cluster.stop_replica, replica))
            stop.set()
            drained_unhealthy.append(bool(seen))
            outcomes += await streams.finished()
            await asyncio.to_thread(cluster.start_replica, replica)
            if step + 1 < len(steps):
                # The next streams open while Envoy starts sending the restarted replica
                # calls (a rollout waits for readiness before it takes the next pod).
                streams = Streams(streamers, STREAMS)
            await asyncio.to_thread(serving, cluster, [replica])
    # Every replica drained cleanly, and Envoy saw it NOT_SERVING before it went.
    assert codes == [0] * (3 * SCALE.rolling_rounds)
    assert all(drained_unhealthy), drained_unhealthy
    # 0 failed unary calls with the client's default retry policy...
    assert load.outcomes
    assert load.failures() == [], [repr(o.error) for o in load.failures()]
    # ... and every stream open at a SIGTERM finished whole.
    assert len(outcomes) == 3 * SCALE.rolling_rounds * STREAMS
    broken = [(repr(o.error), o.dones) for o in outcomes if o.error is not None or o.dones != 1]
    assert broken == []


# ---- 4. limits across replicas ----


async def limits_hold(cluster: Cluster, store: str) -> None:
    """300 concurrent calls from a key with rpm=100 pass exactly 100, spread over the
    replicas; 300 concurrent streams from a key whose budget fits 25.5 estimates pass
    exactly 25, and the key's spend is exactly theirs."""
    rpm_name, budget_name = f"proof-rpm-{store}", f"proof-budget-{store}"
    rpm_key = cluster.create_key(rpm_name, rpm=100)
    budget_key = cluster.create_key(
        budget_name, budget_usd=25.5 * UNKNOWN_PRICE_RESERVATION_USD, per="day"
    )

    before = served(cluster, "Complete")
    async with open_clients(cluster, rpm_key) as callers:
        errors = await calls(callers, CONCURRENT)
    assert errors.count(None) == 100
    assert refused(errors, "KEY_RATE_LIMITED") == CONCURRENT - 100, {repr(e) for e in errors}
    assert sum(n > 0 for n in delta(served(cluster, "Complete"), before)) >= 2

    # The 300 calls are spread (the 25 admitted ones may all land on one
    # replica: Envoy can hand a short burst of admissions to one host).
    before = reached(cluster, "StreamComplete")
    async with open_clients(cluster, budget_key) as callers:
        streams = Streams(callers, CONCURRENT)
        outcomes = await streams.finished()
    admitted = [o for o in outcomes if o.error is None]
    assert len(admitted) == 25
    assert all(o.dones == 1 for o in admitted)
    errors = [o.error for o in outcomes if o.error is not None]
    assert refused(errors, "KEY_BUDGET_EXCEEDED") == CONCURRENT - 25, {repr(e) for e in errors}
    assert sum(n > 0 for n in delta(reached(cluster, "StreamComplete"), before)) >= 2

    budget_id = key_id(cluster, budget_name)
    if store == "redis":
        assert spent_in_redis(cluster, budget_id) == 25 * nano(UNKNOWN_PRICE_RESERVATION_USD)
    else:
        assert spent_in_postgres(cluster, budget_id) == pytest.approx(
            25 * UNKNOWN_PRICE_RESERVATION_USD
        )


async def test_rpm_and_budget_hold_exactly_across_replicas_with_redis(cluster):
    assert cluster.limits == "redis"
    await limits_hold(cluster, "redis")


# ---- 5. Redis restarted mid-run ----


async def test_redis_killed_mid_run_fails_closed_and_the_count_survives(cluster):
    assert cluster.limits == "redis"
    key = cluster.create_key("proof-redis-restart", rpm=100)
    pids = [replica.pid for replica in cluster.replicas]
    async with (
        open_clients(cluster, key) as callers,
        open_clients(cluster, key, max_attempts=1) as once,
    ):
        assert await calls(callers, 60) == [None] * 60

        await asyncio.to_thread(cluster.stop_redis, kill=True)
        try:
            outage = await calls(once, 60)
        finally:
            await asyncio.to_thread(cluster.start_redis)
        # Fail closed: no call passes unchecked, and each says to retry shortly.
        assert all(
            isinstance(e, UnavailableError) and e.reason == "GATEWAY_STATE_UNAVAILABLE"
            for e in outage
        ), {repr(e) for e in outage}
        assert {e.retry_after for e in outage if isinstance(e, UnavailableError)} == {1.0}

        # Redis came back with its append-only file: the 60 calls before still count,
        # so of 200 more exactly 40 pass, on replicas that were never restarted.
        errors = await calls(callers, 200)
    assert errors.count(None) == 40
    assert refused(errors, "KEY_RATE_LIMITED") == 160, {repr(e) for e in errors}
    assert [replica.pid for replica in cluster.replicas] == pids


async def test_a_budget_holds_exactly_through_a_redis_restart_mid_run(cluster):
    # 300 concurrent streams from a key whose day budget fits 25.5 estimates, with Redis
    # killed as soon as the first of them is decided (the admissions of the rest in flight)
    # and started again shortly after: none
    # passes unchecked, and once Redis is back the key has passed exactly 25 in all.
    assert cluster.limits == "redis"
    name = "proof-budget-redis-restart"
    key = cluster.create_key(name, budget_usd=25.5 * UNKNOWN_PRICE_RESERVATION_USD, per="day")
    async with (
        open_clients(cluster, key, max_attempts=1) as once,
        open_clients(cluster, key) as callers,
    ):
        decided = [asyncio.Event() for _ in range(CONCURRENT)]
        tasks = [
            asyncio.create_task(stream_once(once[i % len(once)], event))
            for i, event in enumerate(decided)
        ]

        async with asyncio.timeout(HANG_SECONDS):
            waits = [asyncio.create_task(event.wait()) for event in decided]
            for n, first in enumerate(asyncio.as_completed(waits), start=1):
                await first
                if n == 1:
                    break
        for wait in waits:
            wait.cancel()
        await asyncio.to_thread(cluster.stop_redis, kill=True)
        try:
            await asyncio.sleep(0.5)
        finally:
            await asyncio.to_thread(cluster.start_redis)
        async with asyncio.timeout(HANG_SECONDS + SCALE.stream_chunks * 0.05):
            outcomes = list(await asyncio.gather(*tasks))

        # Every call was admitted and finished whole, refused on budget, or failed closed.
        def judged(o: StreamOutcome) -> str:
            if o.error is None and o.dones == 1:
                return "admitted"
            if isinstance(o.error, RateLimitedError) and o.error.reason == "KEY_BUDGET_EXCEEDED":
                return "over budget"
            if (
                isinstance(o.error, UnavailableError)
                and o.error.reason == "GATEWAY_STATE_UNAVAILABLE"
            ):
                return "fail closed"
            return f"unexpected: {o.error!r}, {o.dones} done"

        verdicts = [judged(o) for o in outcomes]
        assert all(not v.startswith("unexpected") for v in verdicts), set(verdicts)
        admitted = verdicts.count("admitted")
        assert admitted <= 25

        # Redis back: more streams until the budget refuses one. The reservations held
        # before the kill survived in the append-only file, so the total stays 25.
        while True:
            # One more than the budget has left: all but the last pass if the count held.
            more = await asyncio.gather(
                *(
                    stream_once(callers[i % len(callers)], asyncio.Event())
                    for i in range(26 - admitted)
                )
            )
            extra = [judged(o) for o in more]
            assert all(v in ("admitted", "over budget") for v in extra), extra
            admitted += extra.count("admitted")
            assert admitted <= 25
            if "over budget" in extra:
                break
    assert admitted == 25
    budget_id = key_id(cluster, name)
    assert spent_in_redis(cluster, budget_id) == 25 * nano(UNKNOWN_PRICE_RESERVATION_USD)


async def test_a_fail_open_replica_admits_calls_while_redis_is_down(cluster):
    # The trade-off LLMGATEWAY_REDIS_FAILURE_MODE=open makes: during an outage its calls
    # pass with no limit enforced, while a fail-closed replica refuses them. Replica 2
    # stays fail-open until the next test moves every replica to PostgreSQL.
    assert cluster.limits == "redis"
    assert await asyncio.to_thread(cluster.stop_replica, 2) == 0
    await asyncio.to_thread(cluster.start_replica, 2, {"LLMGATEWAY_REDIS_FAILURE_MODE": "open"})
    key = cluster.create_key("proof-fail-open", rpm=5)
    open_replica, closed_replica = cluster.replicas[2].address, cluster.replicas[0].address
    async with (
        open_clients(cluster, key, target=open_replica, max_attempts=1) as to_open,
        open_clients(cluster, key, target=closed_replica, max_attempts=1) as to_closed,
    ):
        await asyncio.to_thread(cluster.stop_redis, kill=True)
        try:
            admitted = await calls(to_open, 20)
            closed = await calls(to_closed, 5)
        finally:
            await asyncio.to_thread(cluster.start_redis)
    # Four times the key's rpm passed on the fail-open replica...
    assert admitted == [None] * 20
    # ... and none on a fail-closed one.
    assert all(
        isinstance(e, UnavailableError) and e.reason == "GATEWAY_STATE_UNAVAILABLE" for e in closed
    ), {repr(e) for e in closed}


# ---- 4, again: limits in PostgreSQL ----


async def test_rpm_and_budget_hold_exactly_across_replicas_with_postgresql(cluster):
    await asyncio.to_thread(cluster.restart_all, "postgres")
    assert cluster.limits == "postgres"
    await asyncio.to_thread(serving, cluster, range(3))
    await limits_hold(cluster, "postgres")
