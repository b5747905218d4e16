"""The server around the service: health, reflection, ListModels, drain, the CLI."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from bench import worker_kill
from bench.processes import free_port
from faults.hostile import deeply_nested
from llmgateway.server.call_path.calls import new_request_id
from llmgateway.server.call_path.decoding import RefusalLog
from llmgateway.server.process.cli import (
    DEMO_MODELS,
    KEPT_DEMO_ADDRESS,
    build_parser,
    demo_address,
)
from llmgateway.server.process.server import start_gateway
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from tests.conftest import gateway_stub, rich_status, user

SERVICE = "llmgateway.v1.CompletionService"


async def test_health_reports_serving(channel):
    health: Any = health_pb2_grpc.HealthStub(channel)  # its stubs type only the sync API
    for name in ("", SERVICE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_describes_the_service(channel):
    stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # as above

    async def ask(**kwargs):
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**kwargs)]))
        async for reply in call:
            return reply
        raise AssertionError("reflection sent no reply")

    listed = await ask(list_services="")
    names = {s.name for s in listed.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names
    described = await ask(file_containing_symbol=SERVICE)
    assert described.file_descriptor_response.file_descriptor_proto


async def test_list_models(stub):
    reply = await stub.ListModels(pb.ListModelsRequest(), timeout=10)
    by_name = {m.name: m for m in reply.models}
    assert list(reply.incomplete_providers) == []
    assert by_name["fast"].alias_of == "zai/glm-4.5-flash"
    glm = by_name["zai/glm-4.7"]
    assert glm.provider == common.PROVIDER_ZAI
    assert glm.context_length == 204_800
    assert glm.pricing.prompt_per_million == pytest.approx(0.60)
    assert glm.available
    mini = by_name["openrouter/openai/gpt-4o-mini"]
    assert mini.context_length == 128_000
    assert mini.pricing.prompt_per_million == pytest.approx(0.15)
    assert mini.pricing.completion_per_million == pytest.approx(0.60)
    only_zai = await stub.ListModels(pb.ListModelsRequest(provider=common.PROVIDER_ZAI))
    assert {m.provider for m in only_zai.models} == {common.PROVIDER_ZAI}


async def test_list_models_reports_an_unreachable_catalogue(settings):
    nowhere = dataclasses.replace(
        settings,
        openrouter=dataclasses.replace(
            settings.openrouter, base_url=f"http://127.0.0.1:{free_port()}/api/v1"
        ),
    )
    async with gateway_stub(nowhere) as stub:
        reply = await stub.ListModels(pb.ListModelsRequest(), timeout=30)
    assert list(reply.incomplete_providers) == [common.PROVIDER_OPENROUTER]
    assert any(m.name == "zai/glm-4.7" for m in reply.models)


async def test_stop_lets_in_flight_streams_finish(gateway, stub, fake):
    fake.slow_chunk_delay = 0.005
    request = pb.StreamCompleteRequest(model="zai/fault-slow", messages=[user("go")])
    call = stub.StreamComplete(request, timeout=30)
    first = await call.read()
    assert first.WhichOneof("event") == "reasoning_delta"
    stopping = asyncio.create_task(gateway.stop(grace=10))
    events = [first]
    while (event := await call.read()) is not grpc.aio.EOF:
        events.append(event)
    await stopping
    assert events[-1].WhichOneof("event") == "done"
    assert fake.stats.streams_completed == 1


async def test_serve_command_drains_on_sigterm(fake):
    """SIGTERM: NOT_SERVING during the delay, then new calls refused, in-flight streams finish."""
    fake.slow_chunk_delay = 0.01  # the slow stream below lasts about 2 s
    port = free_port()
    async with _serving(fake, port, LLMGATEWAY_SHUTDOWN_DELAY="0.5") as process:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
            health: Any = health_pb2_grpc.HealthStub(channel)  # its stubs type only the sync API
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stub = pb_grpc.CompletionServiceStub(channel)
            in_flight = stub.StreamComplete(
                pb.StreamCompleteRequest(model="zai/fault-slow", messages=[user("count")]),
                timeout=30,
            )
            first = await in_flight.read()
            assert isinstance(first, pb.StreamCompleteResponse)
            assert first.WhichOneof("event") == "reasoning_delta"

            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)  # inside the 0.5 s delay
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            await asyncio.sleep(0.6)  # past the delay: the listener refuses new calls
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Complete(
                    pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")]), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

            events = []
            while isinstance(event := await in_flight.read(), pb.StreamCompleteResponse):
                events.append(event)
            assert events[-1].WhichOneof("event") == "done"
        code, output = await _exit_of(process)
    assert code == 0, output
    assert "llmgateway listening on 127.0.0.1" in output
    assert "shutting down" in output
    assert fake.openrouter_key not in output
    assert fake.zai_key not in output


def test_serve_reports_a_missing_key_at_startup_and_a_bad_setting_clearly():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["LLMGATEWAY_CONNECT_TIMEOUT"] = "soon"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmgateway.server.process.cli",
            "serve",
            "--address",
            "127.0.0.1:0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "LLMGATEWAY_CONNECT_TIMEOUT" in result.stderr


def test_demo_command_streams_from_every_provider():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    result = subprocess.run(
        [sys.executable, "-m", "llmgateway.server.process.cli", "demo", "Hi!"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("You said: Hi!") == len(DEMO_MODELS) == 7
    for model in DEMO_MODELS:
        assert f"served by {model}" in result.stdout
    assert "[reasoning]" in result.stdout
    # Then one call to route/default: code fences pick the code entry, Z.AI's
    # coding endpoint, and the decision is printed after the answer.
    assert "$ StreamComplete model=route/default" in result.stdout
    assert "[route] route/default chose zai/glm-4.7@coding (entry code)" in result.stdout
    assert "[route] task code: inferred by rule code-fences" in result.stdout


def test_the_demo_serves_the_readme_example_aliases_and_routes():
    # So the README's alias and Routes examples run against a kept demo as printed.
    from llmgateway.server.process.demo import DEMO_CONFIG
    from tests.readme import readme_example_toml

    example = readme_example_toml()
    assert DEMO_CONFIG.strip() == example[example.index("[aliases]") :].strip()


@pytest.mark.parametrize(
    ("arguments", "address"),
    [
        (["demo", "--keep-running"], KEPT_DEMO_ADDRESS),
        (["demo"], "127.0.0.1:0"),
        (["demo", "--keep-running", "--address", "127.0.0.1:7000"], "127.0.0.1:7000"),
    ],
)
def test_a_kept_demo_listens_where_the_examples_look_and_a_one_off_demo_on_any_free_port(
    arguments, address
):
    # The README's examples and the client commands' default target.
    assert KEPT_DEMO_ADDRESS == "127.0.0.1:50051"
    assert demo_address(build_parser().parse_args(arguments)) == address


def test_a_kept_demo_on_a_busy_port_says_so_in_one_line_and_starts_nothing():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        address = f"127.0.0.1:{holder.getsockname()[1]}"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "llmgateway.server.process.cli",
                "demo",
                "--keep-running",
                "--address",
                address,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot listen on {address}" in lines[0]
    assert "--address" in lines[0]
    assert result.stdout == ""


def test_a_kept_demo_stops_on_sigterm_and_leaves_nothing_behind(tmp_path):
    # Scripts and supervisors stop a kept demo with SIGTERM, as Ctrl-C would:
    # the gateway drains, the exit is clean and the demo's state folder goes.
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(TMPDIR=str(tmp_path), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "llmgateway.server.process.cli", "demo", "--keep-running"]
    with subprocess.Popen(
        [*command, "--address", f"127.0.0.1:{free_port()}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as demo:
        try:
            assert demo.stdout is not None
            for line in demo.stdout:
                if line.startswith("gateway still running"):
                    break
            else:
                pytest.fail(f"the demo ended before it was kept running: {demo.wait()}")
            kept = [p.name for p in tmp_path.iterdir()]
            assert len(kept) == 1, kept
            assert kept[0].startswith("llmgateway-demo-")
            demo.send_signal(signal.SIGTERM)
            assert demo.wait(timeout=30) == 0
        finally:
            if demo.poll() is None:
                demo.kill()
    assert list(tmp_path.iterdir()) == []


def _serve_process(fake, port, *extra, **env_extra):
    env = {**os.environ, **fake.environment(), "PYTHONUNBUFFERED": "1", **env_extra}
    return asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llmgateway.server.process.cli",
        "serve",
        "--address",
        f"127.0.0.1:{port}",
        *extra,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@contextlib.asynccontextmanager
async def _serving(fake, port, *extra, **env_extra):
    """A `serve` process for the block; killed if it is still running at the end."""
    process = await _serve_process(fake, port, *extra, **env_extra)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _exit_of(process):
    """(exit code, what it printed) once `process` has ended, within 30 s."""
    code = await asyncio.wait_for(process.wait(), timeout=30)
    output = (await process.stdout.read()).decode() if process.stdout else ""
    return code, output


async def _until_printed(process: asyncio.subprocess.Process, text: str, times: int = 1) -> str:
    """What `process` printed up to the line holding `text` for the `times`th time."""
    assert process.stdout is not None
    seen = ""
    while seen.count(text) < times:
        seen += (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
    return seen


async def _until_workers_started(process: asyncio.subprocess.Process) -> str:
    """What the parent printed up to its 'started 2 workers' line."""
    return await _until_printed(process, "started 2 workers")


def _worker_pids(output: str) -> list[int]:
    line = next(line for line in output.splitlines() if "started 2 workers" in line)
    return [int(pid) for pid in line.split("(pids ")[1].rstrip(")").split(", ")]


async def _call_once(port):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=30)
        stub = pb_grpc.CompletionServiceStub(channel)
        answer = await stub.Complete(
            pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")]), timeout=10
        )
        assert answer.content


async def test_workers_restart_at_once_on_the_same_port(fake):
    """Connections of the last run in TIME_WAIT must not block a restart."""
    port = free_port()
    for _ in range(2):
        async with _serving(fake, port, "--workers", "2") as process:
            await _call_once(port)
            process.send_signal(signal.SIGTERM)
            code, output = await _exit_of(process)
        assert code == 0, output


async def test_workers_share_the_port_and_stop_together(fake):
    port = free_port()
    async with _serving(fake, port, "--workers", "2") as process:
        # Both must be listening before the stop: one still starting when
        # SIGTERM arrives stops cleanly without ever listening.
        started = await _until_printed(process, "llmgateway listening on", times=2)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
            stub = pb_grpc.CompletionServiceStub(channel)
            for _ in range(4):
                answer = await stub.Complete(
                    pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")]), timeout=10
                )
                assert answer.content
        process.send_signal(signal.SIGTERM)
        code, rest = await _exit_of(process)
        output = started + rest
    assert code == 0, output
    # Each worker says it is ready; the start-up summary is said once, for all.
    assert output.count("llmgateway listening on") == 2
    assert output.count(f"started 2 workers on 127.0.0.1:{port}") == 1
    for once in ("state database", "OpenRouter: configured", "Z.AI: configured", "OPEN GATEWAY"):
        assert output.count(once) == 1, (once, output)
    assert output.count("stopped") >= 2


# A worker that dies is replaced: tests/test_workers.py.


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_reported_in_one_line(workers):
    """Our message only, with one worker or several: not gRPC core's `add_port.cc` line too."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "llmgateway.server.process.cli",
                "serve",
                "--address",
                f"127.0.0.1:{port}",
                "--workers",
                workers,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"llmgateway: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


async def test_workers_stop_when_the_parent_is_killed(fake):
    port = free_port()
    process = await _serve_process(fake, port, "--workers", "2")
    seen = ""
    try:
        seen = await _until_workers_started(process)
        workers = _worker_pids(seen)
        await _call_once(port)
        process.kill()  # SIGKILL: the parent cannot forward anything
        await process.wait()
        for _ in range(250):
            alive = [pid for pid in workers if worker_kill.alive(pid)]
            if not alive:
                break
            await asyncio.sleep(0.02)
        assert not alive, f"workers {alive} outlived their parent"
    finally:
        for pid in _worker_pids(seen) if "started 2 workers" in seen else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# -- requests protobuf cannot decode (service/llmgateway/server/call_path/decoding.py) ------------------------

_COMPLETION = "/llmgateway.v1.CompletionService/"
_UNDECODABLE = {
    "random bytes": b"\xff\xff\xff\xff\x0f",
    "invalid UTF-8 in a string": b"\x0a\x02\xc3\x28",
    "nesting past protobuf's limit": deeply_nested(200),
}


def _assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    logged = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not logged, [r.getMessage() for r in logged]


# What each method's request can be broken with (ListModelsRequest holds no
# string and no nesting).
_BROKEN = [
    *((m, kind) for m in ("Complete", "StreamComplete") for kind in _UNDECODABLE),
    ("GetUsage", "random bytes"),
    ("GetUsage", "invalid UTF-8 in a string"),
    ("ListModels", "random bytes"),
]


@pytest.mark.parametrize(("method", "kind"), _BROKEN)
async def test_an_undecodable_request_is_invalid_argument_without_a_traceback(
    channel, fake, caplog, method, kind
):
    payload = _UNDECODABLE[kind]
    streaming = method == "StreamComplete"
    call = (channel.unary_stream if streaming else channel.unary_unary)(_COMPLETION + method)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if streaming:
            async for _ in call(payload, timeout=10):
                pass
        else:
            await call(payload, timeout=10)
    status = rich_status(caught.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.info.reason == "INVALID_REQUEST"
    assert f"could not be decoded as llmgateway.v1.{method}Request" in status.message
    assert "same contract version" in status.message
    assert "UTF-8" in status.message
    assert fake.requests == []
    _assert_no_traceback(caplog)


async def test_health_and_reflection_refuse_undecodable_requests_without_a_traceback(
    channel, caplog
):
    garbage = _UNDECODABLE["random bytes"]
    for method in ("Check", "Watch"):
        path = f"/grpc.health.v1.Health/{method}"
        call = channel.unary_unary(path) if method == "Check" else channel.unary_stream(path)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if method == "Check":
                await call(garbage, timeout=10)
            else:
                async for _ in call(garbage, timeout=10):
                    pass
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reflect = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in reflect(iter([garbage]), timeout=10):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _assert_no_traceback(caplog)
    # Still answering what it can decode.
    health: Any = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_refusals_are_logged_at_most_once_per_interval_with_a_count(caplog):
    now = [100.0]
    log = RefusalLog(interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="llmgateway.server.call_path.decoding"):
        for _ in range(1000):
            log.refused("Complete", "Wire format was corrupt", "ipv4:127.0.0.1:1")
        now[0] += 10.0
        for _ in range(500):
            log.refused("GetUsage", "String field had bad UTF-8", "ipv4:127.0.0.1:2")
    lines = [
        r.getMessage() for r in caplog.records if r.name == "llmgateway.server.call_path.decoding"
    ]
    assert len(lines) == 2
    assert lines[0].startswith("refused 1 undecodable request(s)")
    # The second line counts the 999 left unlogged and the one that triggered it.
    assert lines[1].startswith("refused 1000 undecodable request(s)")
    assert "GetUsage from ipv4:127.0.0.1:2: String field had bad UTF-8" in lines[1]


# -- x-request-id travels with every error ------------------------------------------


def test_request_ids_are_16_hex_digits_and_do_not_repeat():
    ids = [new_request_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    assert len(set(ids)) == len(ids)


async def test_errors_carry_the_request_id_in_their_trailers(stub):
    bad = pb.CompleteRequest(model="nope/x", messages=[user("hi")])
    unary = stub.Complete(bad, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unary
    request_id = dict(await unary.initial_metadata())["x-request-id"]
    assert dict(caught.value.trailing_metadata())["x-request-id"] == request_id
    assert rich_status(caught.value).info.metadata["requestId"] == request_id

    for model in ("nope/x", "zai/fault-midstream-error"):
        stream = stub.StreamComplete(
            pb.StreamCompleteRequest(model=model, messages=[user("hi")]), timeout=10
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stream:
                pass
        request_id = dict(await stream.initial_metadata())["x-request-id"]
        assert dict(caught.value.trailing_metadata())["x-request-id"] == request_id, model


async def test_an_internal_error_carries_its_request_id_in_the_trailers(stub, monkeypatch):
    def broken(*_args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("llmgateway.server.call_path.servicer.validate", broken)
    request = pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")])
    with pytest.raises(grpc.aio.AioRpcError) as unary:
        await stub.Complete(request, timeout=10)
    stream = stub.StreamComplete(
        pb.StreamCompleteRequest(model="zai/glm-4.7", messages=[user("hi")]), timeout=10
    )
    with pytest.raises(grpc.aio.AioRpcError) as streamed:
        async for _ in stream:
            pass
    for error in (unary.value, streamed.value):
        assert error.code() == grpc.StatusCode.INTERNAL
        request_id = dict(error.trailing_metadata())["x-request-id"]
        assert request_id in (error.details() or "")


# -- overload: gRPC's own pending-call limits never drop a call ---------------------


async def test_a_burst_the_event_loop_cannot_pick_up_at_once_still_reaches_the_gateway(
    settings,
):
    """While the event loop is busy, gRPC core queues arriving calls; past its
    default limits (1,000 soft, 3,000 hard) it cancelled them, a bare CANCELLED
    the gateway never saw. Now every call reaches the gateway, which answers
    it or refuses it with a reason (GATEWAY_BUSY past its own limit)."""
    busy = dataclasses.replace(settings, max_concurrent_upstream=20)
    burst = 2000  # between gRPC's default soft and hard limits
    request = pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")])
    sent = threading.Event()
    running = await start_gateway(busy, address="127.0.0.1:0")

    def call_in_a_burst() -> collections.Counter[str]:
        outcomes: collections.Counter[str] = collections.Counter()
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            stub = pb_grpc.CompletionServiceStub(channel)
            calls = [stub.Complete.future(request, timeout=120) for _ in range(burst)]
            sent.set()
            for call in calls:
                try:
                    call.result()
                except grpc.RpcError as error:
                    outcomes[_outcome(error)] += 1
                else:
                    outcomes["OK"] += 1
        return outcomes

    try:
        client = asyncio.get_running_loop().run_in_executor(None, call_in_a_burst)
        # Keep the event loop busy (blocked) while the burst arrives, as a
        # loaded worker's would be, so gRPC core has to queue the calls.
        assert sent.wait(timeout=60)
        time.sleep(1.0)  # noqa: ASYNC251  # blocking the loop is the point
        outcomes = await client
    finally:
        await running.stop(grace=0)
    assert sum(outcomes.values()) == burst
    assert set(outcomes) <= {"OK", "RESOURCE_EXHAUSTED GATEWAY_BUSY"}, outcomes
    assert outcomes["OK"] >= 20


def _outcome(error: grpc.RpcError) -> str:
    """CODE REASON, from a sync call's error (the reason from its ErrorInfo)."""
    assert isinstance(error, grpc.Call)
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    reason = ""
    if isinstance(raw, bytes):
        info = error_details_pb2.ErrorInfo()
        for detail in status_pb2.Status.FromString(raw).details:
            if detail.Unpack(info):
                reason = info.reason
    return f"{error.code().name} {reason}".strip()
