"""Client-side balancing over a headless DNS name, and the server's connection age.

Three gateways listen on 127.0.0.2, .3 and .4 (one port free on all three),
and tests/dns_fake.py stands in for a Kubernetes headless Service: one A
record per replica, changed while the test runs to scale out. What a caller
relies on:
- `load_balancing="round_robin"` spreads calls over every replica the name
  resolves to (gRPC's default, pick_first, sends them all to one);
- after a scale-out, a client spreads onto the new replicas because the
  gateway ends old connections (max_connection_age) and the client
  re-resolves; with the age off it never does;
- a stream longer than the age still finishes (the grace keeps its connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmgateway.client import (
    AsyncCompletionClient,
    CompletionClient,
    ConnectionLostError,
    acollect,
)
from llmgateway.client.channel import channel_options
from llmgateway.server.config import Settings, Timeouts
from llmgateway.server.process.server import start_gateway
from llmgateway.server.process.server_options import connection_age_options
from tests.dns_fake import DnsFake

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from llmgateway.server.process.server import Gateway
    from llmgateway.testing.fake_upstream import FakeUpstream

REPLICA_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
NAME = "gw.test"
MODEL = "zai/glm-4.7"
# gRPC waits 30 s between two resolutions by default; 1 s keeps the tests short.
FAST_RESOLUTION = [("grpc.dns_min_time_between_resolutions_ms", 1000)]


# --- the server options, from the settings -----------------------------------------


def test_connection_age_options_follow_the_settings() -> None:
    assert dict(connection_age_options(Settings.load({}))) == {
        "grpc.max_connection_age_ms": 300_000,
        # The grace defaults to the longest stream a provider allows (1800 s).
        "grpc.max_connection_age_grace_ms": 1_800_000,
    }
    explicit = Settings.load(
        {"LLMGATEWAY_MAX_CONNECTION_AGE": "1.5", "LLMGATEWAY_MAX_CONNECTION_AGE_GRACE": "20"}
    )
    assert dict(connection_age_options(explicit)) == {
        "grpc.max_connection_age_ms": 1500,
        "grpc.max_connection_age_grace_ms": 20_000,
    }
    # 0: connections live until a side ends them, and the grace has nothing to do.
    assert connection_age_options(Settings.load({"LLMGATEWAY_MAX_CONNECTION_AGE": "0"})) == []


def test_the_default_grace_outlasts_every_providers_longest_stream() -> None:
    settings = dataclasses.replace(
        Settings.load({"LLMGATEWAY_MAX_STREAM_DURATION": "600"}),
        provider_timeouts={
            "ollama": Timeouts(stream_total=7200.0),
            "zai": Timeouts(stream_total=60),
        },
    )
    assert dict(connection_age_options(settings))["grpc.max_connection_age_grace_ms"] == 7_200_000


def test_connection_age_stays_within_what_grpc_can_hold() -> None:
    # gRPC reads these as C ints; a year of seconds must not overflow into nonsense.
    settings = Settings.load(
        {"LLMGATEWAY_MAX_CONNECTION_AGE": "31536000", "LLMGATEWAY_MAX_CONNECTION_AGE_GRACE": "1e-6"}
    )
    assert dict(connection_age_options(settings)) == {
        "grpc.max_connection_age_ms": 2**31 - 1,
        "grpc.max_connection_age_grace_ms": 1,
    }


@given(
    age=st.floats(min_value=0, max_value=1e12, allow_nan=False),
    grace=st.none() | st.floats(min_value=1e-9, max_value=1e12, allow_nan=False),
)
def test_any_setting_gives_options_grpc_accepts(age: float, grace: float | None) -> None:
    settings = dataclasses.replace(
        Settings.load({}), max_connection_age=age, max_connection_age_grace=grace
    )
    options = dict(connection_age_options(settings))
    if age == 0:
        assert options == {}
        return
    assert set(options) == {"grpc.max_connection_age_ms", "grpc.max_connection_age_grace_ms"}
    for value in options.values():
        assert 1 <= value <= 2**31 - 1
    if grace is None:
        assert options["grpc.max_connection_age_grace_ms"] == 1_800_000


# --- the client's channel options ----------------------------------------------------


def _service_config(options: list[tuple[str, str | int]]) -> dict[str, object]:
    raw = dict(options)["grpc.service_config"]
    assert isinstance(raw, str)
    parsed: dict[str, object] = json.loads(raw)
    return parsed


def test_round_robin_shares_the_one_service_config_with_the_retry_policy() -> None:
    options = channel_options(keepalive_seconds=30, max_attempts=3, load_balancing="round_robin")
    config = _service_config(options)
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert "methodConfig" in config  # retries kept: a channel reads one service config
    # Without retries the policy still goes out, alone.
    single = channel_options(keepalive_seconds=30, max_attempts=1, load_balancing="round_robin")
    assert _service_config(single) == {"loadBalancingConfig": [{"round_robin": {}}]}
    assert dict(single)["grpc.enable_retries"] == 0
    # Unset: gRPC's default policy, and no service config at all without retries.
    assert "grpc.service_config" not in dict(channel_options(keepalive_seconds=30, max_attempts=1))


def test_grpc_options_are_added_and_replace_the_clients_own() -> None:
    options = dict(
        channel_options(
            keepalive_seconds=30,
            max_attempts=1,
            extra=[*FAST_RESOLUTION, ("grpc.keepalive_time_ms", 45_000)],
        )
    )
    assert options["grpc.dns_min_time_between_resolutions_ms"] == 1000
    assert options["grpc.keepalive_time_ms"] == 45_000


def test_an_unknown_policy_is_refused_naming_the_ones_there_are() -> None:
    with pytest.raises(ValueError, match="pick_first, round_robin") as caught:
        channel_options(keepalive_seconds=None, max_attempts=3, load_balancing="round-robin")
    assert "'round-robin'" in str(caught.value)
    with pytest.raises(ValueError, match="pick_first, round_robin"):
        AsyncCompletionClient("127.0.0.1:1", load_balancing="least_request")


# --- three replicas behind one name ------------------------------------------------


def shared_port() -> int:
    """A TCP port free on all of REPLICA_HOSTS (other processes share this machine)."""
    for _ in range(50):
        sockets: list[socket.socket] = []
        try:
            with contextlib.ExitStack() as stack:
                port = 0
                for host in REPLICA_HOSTS:
                    sock = stack.enter_context(socket.socket())
                    sock.bind((host, port))
                    port = sock.getsockname()[1]
                    sockets.append(sock)
                return port
        except OSError:
            continue
    raise RuntimeError(f"no port free on all of {REPLICA_HOSTS}")


def served(gateway: Gateway) -> int:
    """Complete and StreamComplete calls the gateway finished, from its own metrics."""
    assert gateway.metrics is not None
    return int(
        sum(
            sample.value
            for metric in gateway.metrics.registry.collect()
            for sample in metric.samples
            if sample.name == "llmgateway_requests_total"
        )
    )


@pytest.fixture
async def start_replicas(
    settings: Settings,
) -> AsyncIterator[Callable[..., Awaitable[tuple[list[Gateway], int]]]]:
    """Start three gateways on REPLICA_HOSTS and one port, with these settings
    changed; no state database (no keys), metrics collected in-process."""
    started: list[Gateway] = []

    async def start(**changes: Any) -> tuple[list[Gateway], int]:
        port = shared_port()
        replica_settings = dataclasses.replace(
            settings, db="", metrics_address="127.0.0.1:0", **changes
        )
        for host in REPLICA_HOSTS:
            started.append(
                await start_gateway(replica_settings, address=f"{host}:{port}", serve_metrics=False)
            )
        return started, port

    try:
        yield start
    finally:
        await asyncio.gather(*(gateway.stop(grace=0) for gateway in started))


async def until(
    condition: Callable[[], bool], *, calls: Callable[[], Awaitable[object]], within: float
) -> None:
    """Make calls until `condition` holds; fail if it does not within `within` seconds."""
    async with asyncio.timeout(within):
        while not condition():
            await calls()


async def test_round_robin_over_a_headless_name_reaches_every_replica(
    start_replicas: Callable[..., Awaitable[tuple[list[Gateway], int]]],
) -> None:
    replicas, port = await start_replicas()
    async with DnsFake({NAME: list(REPLICA_HOSTS)}) as dns:
        target = dns.target(NAME, port)

        def spread(load_balancing: str | None) -> None:
            with CompletionClient(target, load_balancing=load_balancing, max_attempts=1) as client:
                for _ in range(30):
                    assert client.complete(MODEL, "hi").content

        # The blocking client, as callers use it (the gateways run on this loop).
        before = [served(r) for r in replicas]
        await asyncio.to_thread(spread, "round_robin")
        after = [served(r) for r in replicas]
        # Every replica took a fair share (connections open in parallel, so the
        # very first calls may all land on whichever was ready first).
        deltas = [a - b for a, b in zip(after, before, strict=True)]
        assert sum(deltas) == 30
        assert min(deltas) >= 5, deltas

        # gRPC's default policy, pick_first, sends every call to one replica.
        await asyncio.to_thread(spread, None)
        deltas = [a - b for a, b in zip([served(r) for r in replicas], after, strict=True)]
        assert sorted(deltas) == [0, 0, 30], deltas
        assert dns.queries[NAME] >= 2


async def test_after_a_scale_out_clients_spread_once_connections_age_out(
    start_replicas: Callable[..., Awaitable[tuple[list[Gateway], int]]],
) -> None:
    replicas, port = await start_replicas(max_connection_age=1.0)
    async with (
        DnsFake({NAME: [REPLICA_HOSTS[0]]}) as dns,
        AsyncCompletionClient(
            dns.target(NAME, port),
            load_balancing="round_robin",
            grpc_options=FAST_RESOLUTION,
            max_attempts=1,
        ) as client,
    ):
        for _ in range(5):
            await client.complete(MODEL, "hi")
        assert [served(r) for r in replicas] == [5, 0, 0]
        dns.records[NAME] = list(REPLICA_HOSTS)  # two replicas more

        async def call() -> None:
            await client.complete(MODEL, "hi")
            await asyncio.sleep(0.05)

        # The first connection ages out after about 1 s; the client re-resolves
        # and reaches the new replicas (about 2 s here; the bound is generous).
        await until(lambda: min(served(r) for r in replicas) > 0, calls=call, within=10)


async def test_without_a_connection_age_clients_stay_where_they_are(
    start_replicas: Callable[..., Awaitable[tuple[list[Gateway], int]]],
) -> None:
    replicas, port = await start_replicas(max_connection_age=0.0)
    async with (
        DnsFake({NAME: [REPLICA_HOSTS[0]]}) as dns,
        AsyncCompletionClient(
            dns.target(NAME, port),
            load_balancing="round_robin",
            grpc_options=FAST_RESOLUTION,
            max_attempts=1,
        ) as client,
    ):
        await client.complete(MODEL, "hi")
        dns.records[NAME] = list(REPLICA_HOSTS)
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + 5
        while loop.time() < stop_at:
            await client.complete(MODEL, "hi")
            await asyncio.sleep(0.05)
    # The connection never ended, so the client never asked DNS again.
    counts = [served(r) for r in replicas]
    assert counts[0] > 1
    assert counts[1:] == [0, 0], counts
    assert dns.queries[NAME] == 1


async def test_a_stream_longer_than_the_connection_age_finishes(
    start_replicas: Callable[..., Awaitable[tuple[list[Gateway], int]]], fake: FakeUpstream
) -> None:
    # 40 chunks 0.1 s apart: a stream of about 4 s over a connection that ages
    # out after about 1 s. The default grace (the longest stream) keeps it open.
    fake.chunk_delay, fake.stream_chunks = 0.1, 40
    _, port = await start_replicas(max_connection_age=1.0)
    loop = asyncio.get_running_loop()
    async with AsyncCompletionClient(f"{REPLICA_HOSTS[0]}:{port}", max_attempts=1) as client:
        started = loop.time()
        collected = await acollect(client.stream(MODEL, "hi"))
        # Not a bound on speed: the fake's pauses alone make the stream outlive the age.
        assert loop.time() - started >= 3
    assert collected.done is not None
    assert collected.text == "tok " * 40


async def test_a_grace_shorter_than_the_stream_cuts_it_as_a_lost_connection(
    start_replicas: Callable[..., Awaitable[tuple[list[Gateway], int]]], fake: FakeUpstream
) -> None:
    # The other side: an explicit 1 s grace ends the 6 s stream after about 2 s,
    # which the client reports as a connection lost after the gateway answered.
    fake.chunk_delay, fake.stream_chunks = 0.1, 60
    _, port = await start_replicas(max_connection_age=1.0, max_connection_age_grace=1.0)
    target = f"{REPLICA_HOSTS[0]}:{port}"
    async with AsyncCompletionClient(target, max_attempts=1) as client:
        with pytest.raises(ConnectionLostError) as caught:
            await acollect(client.stream(MODEL, "hi"))
    assert caught.value.target == target
    assert isinstance(caught.value.__cause__, grpc.RpcError)
