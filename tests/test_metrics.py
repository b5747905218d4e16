"""Prometheus metrics: scraped over HTTP after real calls, in-process and with two workers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import socket
from typing import TYPE_CHECKING

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmgateway.server.config import ConfigError, Settings
from llmgateway.server.observability.metrics import (
    MAX_MODELS,
    MODEL_LABEL_CHARS,
    GatewayMetrics,
    split_address,
)
from llmgateway.server.observability.observe import CallRecord
from llmgateway.server.process.server import Gateway, start_gateway
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from tests.conftest import user
from tests.test_server import _serving

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from llmgateway.testing.fake_upstream import FakeUpstream

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(port: int) -> Samples:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


@pytest.fixture
async def metered(settings: Settings) -> AsyncIterator[Gateway]:
    running = await start_gateway(
        dataclasses.replace(settings, metrics_address="127.0.0.1:0"), address="127.0.0.1:0"
    )
    yield running
    await running.stop(grace=0)


@pytest.fixture
async def metered_stub(metered: Gateway) -> AsyncIterator[pb_grpc.CompletionServiceAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{metered.port}") as channel:
        yield pb_grpc.CompletionServiceStub(channel)


def metrics_port(gateway: Gateway) -> int:
    assert gateway.metrics_server is not None
    return gateway.metrics_server.port


async def until(port: int, predicate: object, name: str, **labels: str) -> Samples:
    """Scrape until `predicate(value)` holds for the series (calls end just after replying)."""
    assert callable(predicate)
    for _ in range(200):
        samples = await scrape(port)
        if predicate(value(samples, name, **labels)):
            return samples
        await asyncio.sleep(0.02)
    raise AssertionError(f"{name}{labels} never satisfied the condition")


async def test_metrics_count_unary_streamed_failed_and_cancelled_calls(
    metered: Gateway, metered_stub: pb_grpc.CompletionServiceAsyncStub, fake: FakeUpstream
) -> None:
    port = metrics_port(metered)
    unary = await metered_stub.Complete(
        pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hello")]), timeout=10
    )
    done = None
    async for event in metered_stub.StreamComplete(
        pb.StreamCompleteRequest(model="openrouter/openai/gpt-4o-mini", messages=[user("hi")]),
        timeout=10,
    ):
        if event.HasField("done"):
            done = event.done
    assert done is not None
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await metered_stub.Complete(
            pb.CompleteRequest(model="openrouter/x/fault-http-400", messages=[user("hi")]),
            timeout=10,
        )
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # A stream in flight shows in the gauge; cancelled, it leaves it.
    fake.slow_chunk_delay = 0.02
    call = metered_stub.StreamComplete(
        pb.StreamCompleteRequest(model="zai/fault-slow", messages=[user("go")]), timeout=30
    )
    first = await call.read()
    assert isinstance(first, pb.StreamCompleteResponse)
    during = await scrape(port)
    stream_in_flight = {"method": "StreamComplete"}
    assert value(during, "llmgateway_in_flight_requests", **stream_in_flight) == 1
    assert value(during, "llmgateway_in_flight_requests", method="Complete") == 0
    call.cancel()
    cancelled = {
        "method": "StreamComplete",
        "model": "zai/fault-slow",
        # The target it was on when the caller left.
        "provider": "zai",
        "status": "CANCELLED",
    }
    samples = await until(port, lambda v: v == 1, "llmgateway_requests_total", **cancelled)
    assert value(samples, "llmgateway_in_flight_requests", **stream_in_flight) == 0

    unary_ok = {"method": "Complete", "model": "zai/glm-4.7", "provider": "zai"}
    stream_ok = {
        "method": "StreamComplete",
        "model": "openrouter/openai/gpt-4o-mini",
        "provider": "openrouter",
    }
    assert value(samples, "llmgateway_requests_total", **unary_ok, status="OK") == 1
    assert value(samples, "llmgateway_requests_total", **stream_ok, status="OK") == 1
    rejected = {
        "method": "Complete",
        "model": "openrouter/x/fault-http-400",
        "provider": "openrouter",
        "status": "INVALID_ARGUMENT",
    }
    assert value(samples, "llmgateway_requests_total", **rejected) == 1
    total = sum(v for (n, _), v in samples.items() if n == "llmgateway_requests_total")
    assert total == 4

    # Durations and time to first token: successful calls only.
    for labels in (unary_ok, stream_ok):
        assert value(samples, "llmgateway_request_duration_seconds_count", **labels) == 1
        assert value(samples, "llmgateway_time_to_first_token_seconds_count", **labels) == 1
        assert value(samples, "llmgateway_request_duration_seconds_sum", **labels) > 0
        assert (
            value(samples, "llmgateway_request_duration_seconds_bucket", **labels, le="+Inf") == 1
        )
    assert value(samples, "llmgateway_time_to_first_token_seconds_sum", **stream_ok) <= value(
        samples, "llmgateway_request_duration_seconds_sum", **stream_ok
    )
    durations = [
        dict(labels)
        for (name, labels), _ in samples.items()
        if name == "llmgateway_request_duration_seconds_count"
    ]
    assert len(durations) == 2

    # Tokens and cost, as the caller was told.
    zai = {"model": "zai/glm-4.7", "provider": "zai"}
    assert unary.usage.prompt_tokens > 0
    assert value(samples, "llmgateway_tokens_total", **zai, type="input") == (
        unary.usage.prompt_tokens
    )
    assert value(samples, "llmgateway_tokens_total", **zai, type="output") == (
        unary.usage.completion_tokens
    )
    assert value(samples, "llmgateway_cost_usd_total", **zai) == pytest.approx(unary.usage.cost_usd)
    router = {"model": "openrouter/openai/gpt-4o-mini", "provider": "openrouter"}
    assert value(samples, "llmgateway_tokens_total", **router, type="output") == (
        done.usage.completion_tokens
    )
    assert done.usage.HasField("cost_usd")
    assert value(samples, "llmgateway_cost_usd_total", **router) == pytest.approx(
        done.usage.cost_usd
    )

    # The failed attempt, by provider and reason; 400 is not retried.
    upstream_400 = {"provider": "openrouter", "reason": "UPSTREAM_REJECTED_REQUEST"}
    assert value(samples, "llmgateway_upstream_errors_total", **upstream_400) == 1
    assert sum(v for (n, _), v in samples.items() if n == "llmgateway_upstream_errors_total") == 1


async def test_retried_attempts_count_as_upstream_errors_of_a_successful_call(
    metered: Gateway, metered_stub: pb_grpc.CompletionServiceAsyncStub
) -> None:
    answer = await metered_stub.Complete(
        pb.CompleteRequest(model="zai/fault-flaky", messages=[user("hi")]), timeout=10
    )
    assert answer.attempts == 3
    samples = await scrape(metrics_port(metered))
    labels = {"method": "Complete", "model": "zai/fault-flaky", "provider": "zai", "status": "OK"}
    assert value(samples, "llmgateway_requests_total", **labels) == 1
    unavailable = {"provider": "zai", "reason": "UPSTREAM_UNAVAILABLE"}
    assert value(samples, "llmgateway_upstream_errors_total", **unavailable) == 2


async def test_calls_refused_before_going_upstream_do_not_mint_model_labels(
    metered: Gateway, metered_stub: pb_grpc.CompletionServiceAsyncStub
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await metered_stub.Complete(
            pb.CompleteRequest(model="not a model name", messages=[user("hi")]), timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    samples = await scrape(metrics_port(metered))
    labels = {"method": "Complete", "model": "other", "provider": ""}
    assert value(samples, "llmgateway_requests_total", **labels, status="INVALID_ARGUMENT") == 1
    assert value(samples, "llmgateway_in_flight_requests", method="Complete") == 0


def _record(request_id: str, model: str, **fields: object) -> CallRecord:
    record = CallRecord(request_id, "Complete", requested_model=model)
    for name, field_value in fields.items():
        setattr(record, name, field_value)
    return record


def test_model_labels_are_truncated_and_bounded() -> None:
    observed = GatewayMetrics()
    long_name = "openrouter/vendor/" + "m" * 200
    for number in range(MAX_MODELS + 20):
        model = long_name if number == 0 else f"openrouter/vendor/model-{number}"
        record = _record(f"r{number}", model, provider="openrouter")
        observed.call_started(record)
        observed.call_finished(record)
    # Never admitted upstream: its name does not become a label.
    observed.call_finished(_record("refused", "zai/never-admitted", status="PERMISSION_DENIED"))
    samples = parse(_exposition(observed))
    models = {
        dict(labels)["model"]
        for (name, labels), _ in samples.items()
        if name == "llmgateway_requests_total"
    }
    assert len(models) == MAX_MODELS + 1
    assert "other" in models
    assert long_name[:MODEL_LABEL_CHARS] in models
    assert all(len(model) <= MODEL_LABEL_CHARS for model in models)
    assert "zai/never-admitted" not in models
    # Names past the bound are not remembered either: the table stays bounded.
    assert len(observed._models) == MAX_MODELS
    others = {"method": "Complete", "model": "other", "provider": "openrouter", "status": "OK"}
    assert value(samples, "llmgateway_requests_total", **others) == 20


def test_a_failed_call_is_labelled_with_the_provider_that_failed() -> None:
    observed = GatewayMetrics()
    record = _record(
        "r1",
        "fast",
        status="UNAVAILABLE",
        upstream_errors=[("zai", "UPSTREAM_OVERLOADED"), ("openrouter", "UPSTREAM_UNAVAILABLE")],
    )
    observed.call_started(record)
    observed.call_finished(record)
    samples = parse(_exposition(observed))
    labels = {"method": "Complete", "model": "fast", "provider": "openrouter"}
    assert value(samples, "llmgateway_requests_total", **labels, status="UNAVAILABLE") == 1
    assert value(samples, "llmgateway_request_duration_seconds_count", **labels) == 0


@pytest.mark.parametrize(
    "provider", ["openrouter", "zai", "openai", "anthropic", "gemini", "groq", "ollama"]
)
def test_tokens_count_cache_reads_and_writes_per_provider(provider: str) -> None:
    observed = GatewayMetrics()
    record = _record(
        "r1",
        "cached",
        provider=provider,
        prompt_tokens=1532,
        completion_tokens=9,
        cached_tokens=1111,
        cache_write_tokens=418,
        reasoning_tokens=4,
        cost_usd=0.01,
    )
    observed.call_started(record)
    observed.call_finished(record)
    samples = parse(_exposition(observed))
    labels = {"model": "cached", "provider": provider}
    tokens = "llmgateway_tokens_total"
    assert value(samples, tokens, **labels, type="input") == 1532
    assert value(samples, tokens, **labels, type="cached_input") == 1111
    assert value(samples, tokens, **labels, type="cache_write_input") == 418
    assert value(samples, tokens, **labels, type="output") == 9
    assert value(samples, tokens, **labels, type="reasoning") == 4
    assert value(samples, "llmgateway_cost_usd_total", **labels) == pytest.approx(0.01)


def _exposition(observed: GatewayMetrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(observed.registry).decode()


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        (":9464", ("0.0.0.0", 9464)),  # noqa: S104  # what an empty host means
        ("[::1]:0", ("::1", 0)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_split_address(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize("address", ["9464", "host:", "host:http", "host:70000"])
def test_bad_metrics_addresses_are_refused(address: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        split_address(address)
    with pytest.raises(ConfigError, match="LLMGATEWAY_METRICS_ADDRESS"):
        Settings.load({"LLMGATEWAY_METRICS_ADDRESS": address})


def test_metrics_address_setting(tmp_path: Path) -> None:
    assert Settings.load({}).metrics_address is None
    config = tmp_path / "gateway.toml"
    config.write_text('[server]\nmetrics_address = "127.0.0.1:9100"\n')
    assert Settings.load({}, config).metrics_address == "127.0.0.1:9100"
    env = {"LLMGATEWAY_METRICS_ADDRESS": "0.0.0.0:9200"}
    assert Settings.load(env, config).metrics_address == "0.0.0.0:9200"


async def test_a_busy_metrics_port_fails_start_up(settings: Settings) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{taken}"):
            await start_gateway(
                dataclasses.replace(settings, metrics_address=f"127.0.0.1:{taken}"),
                address="127.0.0.1:0",
            )


# -- several workers: the parent serves the sum ----------------------------------


def _free_ports(count: int) -> list[int]:
    """Distinct free ports: all held open together while chosen, since ports
    picked one after another may repeat once each socket is closed."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


async def _log_entries(process: asyncio.subprocess.Process) -> AsyncIterator[dict[str, object]]:
    """The processes' JSON log lines, as they come."""
    assert process.stdout is not None
    printed: list[bytes] = []
    while True:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        printed = [*printed[-40:], line]
        assert line, "serve exited early; it printed:\n" + b"".join(printed).decode(
            errors="replace"
        )
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # not a log line of ours
        yield entry


async def _until_both_listen(process: asyncio.subprocess.Process) -> None:
    listening = 0
    async for entry in _log_entries(process):
        listening += str(entry["message"]).startswith("llmgateway listening on")
        if listening == 2:
            return


async def _access_lines(
    process: asyncio.subprocess.Process, pending: set[str], seen: dict[str, int]
) -> None:
    """Read the processes' JSON log lines until every id in `pending` has its
    access line; `seen` learns which worker (pid) served each."""
    async for entry in _log_entries(process):
        if entry["logger"] == "llmgateway.access":
            seen[str(entry["request_id"])] = int(str(entry["pid"]))
        if not pending - seen.keys():
            return


async def test_metrics_of_two_workers_are_summed_by_the_parent(fake: FakeUpstream) -> None:
    port, metrics_port = _free_ports(2)
    async with _serving(
        fake,
        port,
        "--workers",
        "2",
        "--metrics-address",
        f"127.0.0.1:{metrics_port}",
        "--log-format",
        "json",
    ) as process:
        await _until_both_listen(process)
        served_by: dict[str, int] = {}
        calls = 0
        # New connections until both workers have served (the kernel spreads
        # connections among SO_REUSEPORT listeners by a hash).
        while len(set(served_by.values())) < 2:
            assert calls < 60, f"every call went to one worker: {served_by}"
            # Its own subchannel pool: a new connection, not a shared one.
            options = [("grpc.use_local_subchannel_pool", 1)]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
                await asyncio.wait_for(channel.channel_ready(), timeout=30)
                stub = pb_grpc.CompletionServiceStub(channel)
                call = stub.Complete(
                    pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")]), timeout=10
                )
                answer = await call
                assert answer.provider == common.PROVIDER_ZAI
                request_id = dict(await call.initial_metadata())["x-request-id"]
            calls += 1
            await _access_lines(process, {str(request_id)}, served_by)
        samples = await until(
            metrics_port,
            lambda v: v == calls,
            "llmgateway_requests_total",
            method="Complete",
            model="zai/glm-4.7",
            provider="zai",
            status="OK",
        )
        labels = {"method": "Complete", "model": "zai/glm-4.7", "provider": "zai"}
        assert value(samples, "llmgateway_request_duration_seconds_count", **labels) == calls
        assert value(samples, "llmgateway_in_flight_requests", method="Complete") == 0
        per_call = value(samples, "llmgateway_tokens_total", **labels_of(labels), type="input")
        assert per_call > 0
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=30)
    assert code == 0


def labels_of(labels: dict[str, str]) -> dict[str, str]:
    return {"model": labels["model"], "provider": labels["provider"]}


async def test_undecodable_requests_are_counted_by_method(
    metered: Gateway, metered_stub: pb_grpc.CompletionServiceAsyncStub
) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{metered.port}")
    async with channel:
        garbage = b"\xff\xff\xff\xff\x0f"
        complete = channel.unary_unary("/llmgateway.v1.CompletionService/Complete", _raw, _raw)
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError):
                await complete(garbage, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary("/grpc.health.v1.Health/Check", _raw, _raw)(
                garbage, timeout=10
            )
    samples = await scrape(metrics_port(metered))
    assert value(samples, "llmgateway_undecodable_requests_total", method="Complete") == 3
    assert value(samples, "llmgateway_undecodable_requests_total", method="Check") == 1
    # Refused before becoming calls: no call was counted.
    assert not any(name == "llmgateway_requests_total" for name, _ in samples)


def _raw(data: bytes) -> bytes:
    return data


# -- routed calls ------------------------------------------------------------------------


def _routed(request_id: str, **fields: object) -> CallRecord:
    return _record(request_id, "route/default", provider="zai", route="route/default", **fields)


def test_routed_calls_count_their_decision_escalation_and_skips() -> None:
    observed = GatewayMetrics()
    records = [
        _routed("r1", task="code", task_source="rule:code-fences", route_rule="code-fences"),
        _routed("r2", task="code", task_source="rule:code-fences", route_rule="code-fences"),
        _routed("r3", task="vision", task_source="caller", route_skip_ids=("no-vision",)),
        # A rule that fired below the threshold: the default served, the rule is still named.
        _routed("r4", task="chat", task_source="default", route_rule="question-words"),
        _routed(
            "r5",
            task="summarization",
            task_source="rule:long-input",
            route_rule="long-input",
            escalated=True,
            status="UNAVAILABLE",
            route_skip_ids=("failed", "context-window", "failed"),
        ),
        # Not routed: a named model, even with the caller's own task, counts no decision.
        _record("r6", "zai/glm-4.7", provider="zai", task="code", task_source="caller"),
    ]
    for record in records:
        observed.call_started(record)
        observed.call_finished(record)
    samples = parse(_exposition(observed))
    decisions = {
        frozenset(labels): count
        for (name, labels), count in samples.items()
        if name == "llmgateway_route_decisions_total"
    }
    route = ("route", "route/default")
    assert decisions == {
        frozenset({route, ("task", "code"), ("source", "rule"), ("rule", "code-fences")}): 2,
        frozenset({route, ("task", "vision"), ("source", "caller"), ("rule", "")}): 1,
        frozenset({route, ("task", "chat"), ("source", "default"), ("rule", "question-words")}): 1,
        frozenset(
            {route, ("task", "summarization"), ("source", "rule"), ("rule", "long-input")}
        ): 1,
    }
    assert value(samples, "llmgateway_route_escalations_total", route="route/default") == 1
    skips = "llmgateway_route_skips_total"
    assert value(samples, skips, route="route/default", reason="no-vision") == 1
    assert value(samples, skips, route="route/default", reason="failed") == 2
    assert value(samples, skips, route="route/default", reason="context-window") == 1
    # The call itself is counted as any other, under its route's name.
    labels = {"method": "Complete", "model": "route/default", "provider": "zai"}
    assert value(samples, "llmgateway_requests_total", **labels, status="OK") == 4


def test_no_routing_series_before_a_routed_call() -> None:
    observed = GatewayMetrics()
    record = _record("r1", "zai/glm-4.7", provider="zai")
    observed.call_started(record)
    observed.call_finished(record)
    names = {name for name, _ in parse(_exposition(observed))}
    assert not {n for n in names if n.startswith("llmgateway_route_")}
