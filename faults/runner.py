"""Run one row of the fault table end to end, and judge what the caller saw.

Each row gets a gateway of its own (started from the suite's settings, pointed
at the given fake upstream) and a real gRPC channel, so no row inherits another's
retry budget or pooled connections. The same code serves tests/test_fault_suite.py
and `python -m faults`: one definition of how a row is run and judged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from google.rpc import error_details_pb2, status_pb2

from faults.table import (
    ALIASES,
    CONNECT_TIMEOUT,
    FIRST_BYTE_TIMEOUT,
    MAX_ATTEMPTS,
    MAX_RETRY_AFTER,
    MAX_STREAM_DURATION,
    REQUEST_TIMEOUT,
    ROUTES,
    STREAM_IDLE_TIMEOUT,
)
from llmgateway.server.config import Settings
from llmgateway.server.errors import DOMAIN
from llmgateway.server.process.server import start_gateway
from llmgateway.server.providers.redaction import PARTIAL_MIN
from llmgateway.testing.fake_upstream.http import TASK_NAME_PREFIX
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from llmgateway.v1 import routing_pb2 as rpb

if TYPE_CHECKING:
    from collections.abc import Iterator

    from faults.table import Fault
    from llmgateway.testing.fake_upstream import FakeUpstream

# Past its bound by this much, a call counts as hung and is cancelled, so one
# hang cannot stall the suite.
HUNG_AFTER = 3.0
# How long a finished call may take to let go of its upstream connection and
# its tasks (a background drain after [DONE] lasts up to a second).
SETTLE = 2.0
# How long a fresh gateway may take to accept the suite's channel.
CHANNEL_READY = 5.0
_DELTAS = ("content_delta", "reasoning_delta", "tool_call")
KEY_LEAK = "a provider API key (or its start) reached the caller"


def suite_environment(
    fake: FakeUpstream,
    state_dir: Path,
    refused_base_url: str | None = None,
    refused_only: str | None = None,
) -> dict[str, str]:
    """The gateway's environment for the suite: the fake (or a closed port, for
    every provider or only the base URL variable `refused_only`), short timings,
    and a state database of its own (never the operator's default one)."""
    environment = {
        **fake.environment(),
        "LLMGATEWAY_DB": str(state_dir / "state.db"),
        "LLMGATEWAY_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
        "LLMGATEWAY_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
        "LLMGATEWAY_FIRST_BYTE_TIMEOUT": str(FIRST_BYTE_TIMEOUT),
        "LLMGATEWAY_STREAM_IDLE_TIMEOUT": str(STREAM_IDLE_TIMEOUT),
        "LLMGATEWAY_MAX_STREAM_DURATION": str(MAX_STREAM_DURATION),
        "LLMGATEWAY_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        # Backoffs short enough that a retried row still ends promptly.
        "LLMGATEWAY_RETRY_INITIAL_BACKOFF": "0.01",
        "LLMGATEWAY_RETRY_MAX_BACKOFF": "0.02",
        "LLMGATEWAY_MAX_RETRY_AFTER": str(MAX_RETRY_AFTER),
    }
    if refused_base_url is not None:
        for name in [n for n in environment if n.endswith("_BASE_URL")]:
            if refused_only in (None, name):
                environment[name] = refused_base_url
    return environment


def suite_settings(
    fake: FakeUpstream,
    state_dir: Path,
    refused_base_url: str | None = None,
    refused_only: str | None = None,
) -> Settings:
    """Settings as an operator would give them: the environment above, and the
    fallback chains and routes in a config file (written to `state_dir`)."""
    # TOML strings and arrays of them are written as in JSON.
    chains = "".join(
        f"{json.dumps(name)} = {json.dumps(targets)}\n" for name, targets in ALIASES.items()
    )
    routes = "".join(
        f"[routes.{json.dumps(name)}]\ndefault = {json.dumps(targets)}\n"
        for name, targets in ROUTES.items()
    )
    config = state_dir / "llmgateway.toml"
    config.write_text(f"[aliases]\n{chains}{routes}", encoding="utf-8")
    return Settings.load(suite_environment(fake, state_dir, refused_base_url, refused_only), config)


@contextlib.contextmanager
def refusing_base_url() -> Iterator[str]:
    """A base URL whose port refuses connections: bound (so nothing else takes
    it meanwhile) but not listening, so a connect gets ECONNREFUSED."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/api/v1"


@dataclass(slots=True)
class Outcome:
    """What one call did, and what was wrong with it."""

    fault: Fault
    # None when the call hung: it had not ended HUNG_AFTER seconds past its bound.
    code: grpc.StatusCode | None = None
    reason: str | None = None
    domain: str = ""
    message: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    retry_after: float | None = None
    # As the gateway reported them (CompleteResponse/CompletionDone.attempts, or
    # ErrorInfo metadata); None when the status came from gRPC itself.
    reported_attempts: int | None = None
    # Fallback-chain targets passed over, as reported; None as for attempts.
    reported_fallbacks: int | None = None
    # The target the gateway named in ErrorInfo metadata (fallback chains only).
    reported_target: str | None = None
    # Chat requests the fake upstream received during the call.
    upstream_requests: int = 0
    elapsed: float = 0.0
    events: list[str] = field(default_factory=list)
    served_model: str = ""
    # The decision on an OK answer (or its done event); None when it had none.
    routing: rpb.RoutingDecision | None = None
    # Upstream connections still serving this call SETTLE seconds after it ended.
    busy_connections: int = 0
    # Tasks the call started that were still running SETTLE seconds after it ended.
    leaked_tasks: list[str] = field(default_factory=list)
    # Everything else the caller received, serialized: the answer or each stream
    # event, and the error's trailing metadata (the status details among them).
    received: list[bytes] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def hung(self) -> bool:
        """The call did not end on its own."""
        return self.code is None

    @property
    def status_correct(self) -> bool:
        """Code and reason as the table says."""
        expected = {self.fault.reason}
        if self.fault.deadline_race:
            expected.add("UPSTREAM_TIMEOUT")
        return self.code == self.fault.code and self.reason in expected

    @property
    def correct(self) -> bool:
        """Every check passed."""
        return not self.problems

    def explain(self) -> str:
        """The problems, one per line, with what the caller got."""
        got = f"{self.code.name if self.code else 'hung'} {self.reason or '-'}: {self.message}"
        return "\n".join([f"{self.fault.id} got {got}", *self.problems])


async def run_fault(fault: Fault, fake: FakeUpstream) -> Outcome:
    """Call the gateway once as `fault` says, against `fake`, and judge the result."""
    with contextlib.ExitStack() as stack:
        refused = stack.enter_context(refusing_base_url()) if fault.upstream != "fake" else None
        only = "OLLAMA_BASE_URL" if fault.upstream == "refused-ollama" else None
        # Outlives the gateway: its config file and state database live here.
        state_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="llmgateway-faults-"))
        settings = suite_settings(fake, Path(state_dir), refused, only)
        gateway = await start_gateway(settings, address="127.0.0.1:0")
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
                # Connected before the clock starts: the row times the call, not the
                # channel's own start-up.
                await asyncio.wait_for(channel.channel_ready(), CHANNEL_READY)
                outcome = await _observe(fault, fake, pb_grpc.CompletionServiceStub(channel))
        finally:
            await gateway.stop(grace=0)
    keys = (fake.openrouter_key, fake.zai_key, *fake.keys.values())
    outcome.problems = judge(outcome, secrets=keys)
    return outcome


async def _observe(
    fault: Fault, fake: FakeUpstream, stub: pb_grpc.CompletionServiceAsyncStub
) -> Outcome:
    outcome = Outcome(fault)
    loop = asyncio.get_running_loop()
    tasks_before = _running_tasks()
    requests_before = len(fake.requests)
    started = loop.time()
    try:
        async with asyncio.timeout(fault.within + HUNG_AFTER):
            if fault.rpc == "unary":
                await _call_unary(stub, fault, outcome)
            else:
                await _call_stream(stub, fault, outcome)
    except TimeoutError:
        outcome.code = None
    outcome.elapsed = loop.time() - started
    outcome.upstream_requests = len(fake.requests) - requests_before
    # Let go of the upstream and of every task the call started, within SETTLE.
    settle_until = loop.time() + SETTLE
    while True:
        leaked = _tasks_left(tasks_before)
        outcome.busy_connections = fake.stats.busy_connections
        if (not leaked and outcome.busy_connections == 0) or loop.time() > settle_until:
            break
        await asyncio.sleep(0.01)
    outcome.leaked_tasks = leaked
    return outcome


async def _call_unary(
    stub: pb_grpc.CompletionServiceAsyncStub, fault: Fault, outcome: Outcome
) -> None:
    request = pb.CompleteRequest(model=fault.model, messages=[_user("hi")])
    call = stub.Complete(request, timeout=fault.deadline)
    try:
        response = await call
    except grpc.aio.AioRpcError as error:
        _record_error(error, outcome)
        return
    finally:
        call.cancel()  # a no-op once the call has ended; ends it if we gave up on it
    outcome.code = grpc.StatusCode.OK
    outcome.received.append(response.SerializeToString())
    outcome.reported_attempts = response.attempts
    outcome.reported_fallbacks = response.fallbacks
    outcome.served_model = response.model
    outcome.routing = response.routing if response.HasField("routing") else None
    if not response.content:
        outcome.problems.append("the answer has no content")


async def _call_stream(
    stub: pb_grpc.CompletionServiceAsyncStub, fault: Fault, outcome: Outcome
) -> None:
    request = pb.StreamCompleteRequest(model=fault.model, messages=[_user("hi")])
    call = stub.StreamComplete(request, timeout=fault.deadline)
    try:
        async for event in call:
            kind = event.WhichOneof("event")
            outcome.events.append(str(kind))
            outcome.received.append(event.SerializeToString())
            if kind == "done":
                outcome.reported_attempts = event.done.attempts
                outcome.reported_fallbacks = event.done.fallbacks
                outcome.served_model = event.done.model
                if event.done.HasField("routing"):
                    outcome.routing = event.done.routing
    except grpc.aio.AioRpcError as error:
        _record_error(error, outcome)
        return
    finally:
        call.cancel()
    outcome.code = grpc.StatusCode.OK


def _record_error(error: grpc.aio.AioRpcError, outcome: Outcome) -> None:
    outcome.code = error.code()
    outcome.message = error.details() or ""
    for _, value in error.trailing_metadata() or ():
        outcome.received.append(value if isinstance(value, bytes) else value.encode())
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    if not isinstance(raw, bytes):
        return  # a status gRPC set itself (the caller's deadline, a message too big)
    status = status_pb2.Status.FromString(raw)
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            outcome.reason = info.reason
            outcome.domain = info.domain
            outcome.metadata = dict(info.metadata)
            outcome.reported_attempts = int(info.metadata.get("attempts", "1"))
            outcome.reported_fallbacks = int(info.metadata.get("fallbacks", "0"))
            outcome.reported_target = info.metadata.get("target")
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            outcome.retry_after = retry.retry_delay.ToTimedelta().total_seconds()


def judge(outcome: Outcome, secrets: tuple[str, ...] = ()) -> list[str]:
    """Everything about `outcome` that differs from its row; empty when it is right."""
    fault = outcome.fault
    problems = list(outcome.problems)
    if outcome.hung:
        problems.append(
            f"hung: still running {fault.within + HUNG_AFTER:g} s after it started, then cancelled"
        )
    elif not outcome.status_correct:
        problems.append(
            f"status {outcome.code.name if outcome.code else '-'} {outcome.reason or '-'}, "
            f"expected {fault.code.name} {fault.reason or '-'}"
        )
    if outcome.elapsed > fault.within:
        problems.append(f"took {outcome.elapsed:.2f} s, bound {fault.within:g} s")
    if outcome.elapsed < fault.at_least:
        problems.append(
            f"took {outcome.elapsed:.2f} s: under {fault.at_least:g} s, so the fault did not act"
        )
    if outcome.reported_attempts is not None and outcome.reported_attempts != fault.attempts:
        problems.append(f"reported {outcome.reported_attempts} attempts, expected {fault.attempts}")
    if outcome.reported_fallbacks is not None and outcome.reported_fallbacks != fault.fallbacks:
        problems.append(
            f"reported {outcome.reported_fallbacks} fallbacks, expected {fault.fallbacks}"
        )
    if fault.upstream == "fake" and outcome.upstream_requests != fault.attempts:
        problems.append(
            f"the upstream saw {outcome.upstream_requests} requests, expected {fault.attempts}"
        )
    if not outcome.hung and outcome.retry_after != fault.retry_after:
        problems.append(f"RetryInfo {outcome.retry_after}, expected {fault.retry_after}")
    problems.extend(_leak_problems(outcome, secrets))
    if outcome.code not in (None, grpc.StatusCode.OK):
        problems.extend(_error_problems(outcome))
    expected_model = fault.served_model or fault.served_by
    if outcome.code == grpc.StatusCode.OK and outcome.served_model != expected_model:
        problems.append(f"served by {outcome.served_model!r}, expected {expected_model!r}")
    if fault.rpc == "stream" and not outcome.hung:
        problems.extend(_stream_problems(outcome))
    if outcome.code == grpc.StatusCode.OK:
        problems.extend(_routing_problems(outcome))
    if outcome.busy_connections:
        problems.append(
            f"{outcome.busy_connections} upstream connection(s) still serving the call "
            f"{SETTLE:g} s after it ended"
        )
    if outcome.leaked_tasks:
        problems.append(f"tasks left running: {', '.join(outcome.leaked_tasks)}")
    return problems


def _leak_problems(outcome: Outcome, secrets: tuple[str, ...]) -> list[str]:
    """Whether any run of PARTIAL_MIN characters of a provider key (its start,
    end or middle) reached the caller: in the status message, ErrorInfo,
    trailing metadata, the answer or an event."""
    marks = {s for s in secrets if s} | {
        s[at : at + PARTIAL_MIN] for s in secrets for at in range(len(s) - PARTIAL_MIN + 1)
    }
    text = outcome.message + str(outcome.metadata)
    for mark in sorted(marks):
        if mark in text or any(mark.encode() in blob for blob in outcome.received):
            return [KEY_LEAK]
    return []


def _error_problems(outcome: Outcome) -> list[str]:
    fault = outcome.fault
    problems = []
    if outcome.reason is not None:
        if outcome.domain != DOMAIN:
            problems.append(f"ErrorInfo domain {outcome.domain!r}, expected {DOMAIN!r}")
        # `model` is what the caller asked for (an alias stays an alias);
        # `target` names the chain's target that failed last.
        expected = {"provider": fault.provider, "model": fault.model}
        if fault.target is not None:
            expected["target"] = fault.target
        got = {name: outcome.metadata.get(name, "") for name in expected}
        if got != expected:
            problems.append(f"ErrorInfo metadata {got}, expected {expected}")
    text = outcome.message + str(outcome.metadata)
    if "Traceback" in text:
        problems.append("a traceback appears in the error")
    return problems


def _routing_problems(outcome: Outcome) -> list[str]:
    """A routed answer carries its decision, saying what the journey was; an
    answer from a model or alias named directly carries none."""
    fault = outcome.fault
    decision = outcome.routing
    if not fault.routed:
        return [] if decision is None else ["a model named directly got a routing decision"]
    if decision is None:
        return ["a routed answer carries no routing decision"]
    problems = []
    if decision.chosen != fault.served_by:
        problems.append(f"the decision chose {decision.chosen!r}, expected {fault.served_by!r}")
    passed = tuple(skip.id for skip in decision.passed_over)
    if passed != fault.passed_over:
        problems.append(f"the decision passed over {passed}, expected {fault.passed_over}")
    if decision.escalated != fault.escalated:
        problems.append(f"the decision says escalated={decision.escalated}")
    return problems


def _stream_problems(outcome: Outcome) -> list[str]:
    events = outcome.events
    if outcome.code == grpc.StatusCode.OK:
        if events[-1:] != ["done"] or events.count("done") != 1:
            return [f"a successful stream must end with exactly one done, got {events[-3:]}"]
        return []
    if "done" in events:
        return ["a failed stream sent done: its output would look complete"]
    if not outcome.fault.output_first and events:
        return [f"events reached the caller before the error: {events[:3]}"]
    if outcome.fault.output_first and not any(kind in _DELTAS for kind in events):
        return ["no output reached the caller before the error; this fault comes after some"]
    return []


def _tasks_left(before: Counter[str]) -> list[str]:
    """Unfinished tasks beyond those running before the call, by coroutine name.

    Counted by name rather than identity: the gRPC server replaces its standing
    "wait for the next call" task with a new one each call, which is no leak.
    The fake upstream's tasks are left out; its connections are judged by
    busy_connections instead.
    """
    return sorted((_running_tasks() - before).elements())


def _running_tasks() -> Counter[str]:
    current = asyncio.current_task()
    return Counter(
        _describe(task)
        for task in asyncio.all_tasks()
        if task is not current and not task.get_name().startswith(TASK_NAME_PREFIX)
    )


def _describe(task: asyncio.Task[object]) -> str:
    coro = task.get_coro()
    return str(getattr(coro, "__qualname__", task.get_name()))


def _user(text: str) -> common.ChatMessage:
    return common.ChatMessage(role=common.ROLE_USER, content=text)
