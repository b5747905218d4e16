"""Kill one of two workers under load: python -m bench.worker_kill [--streams N]

Starts the fake upstream (slow streams, a few seconds each) and
`llmgateway serve --workers 2` on a fresh SQLite state database, with JSON logs
and a metrics address. Opens N concurrent streams, each on a connection of its
own, waits until every one has its first event (so every call was admitted),
then `kill -9`s one worker. It checks that the gateway keeps answering while
the worker is replaced, that the replacement (a new pid) serves new calls,
and reads the ledger for every admitted call. Prints: streams started,
completed OK, ended on the killed worker, ledger rows and calls lost (admitted
calls without a ledger row).

The access log says which worker served each call (its JSON lines carry the
pid): a stream the survivor logged must have ended OK; a stream nobody
logged was on the killed worker, and ends UNAVAILABLE or CANCELLED at the
client. tests/test_workers.py runs the same scenario and judges it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from bench.processes import free_port
from llmgateway.server.state.ledger import IN_FLIGHT
from llmgateway.testing.fake_upstream import FakeUpstream
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping

ACCESS_LOGGER = "llmgateway.access"
# Its own subchannel pool: a channel with a connection of its own, which the
# kernel hands to one of the SO_REUSEPORT listeners.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
STREAM_MODEL = "zai/fault-slow"
# 200 content chunks this far apart: streams of about 8 s, still in flight
# when the worker is killed and long after.
SLOW_CHUNK_DELAY = 0.04
WAIT = 60.0
# How the calls of the killed worker end at the client: their connection is gone.
GONE = frozenset({"UNAVAILABLE", "CANCELLED"})


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (Linux: read from /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's reaping is left


@dataclass(slots=True)
class LogEntry:
    """One line `serve` printed: a JSON log entry, or `raw` text (e.g. a traceback)."""

    raw: str
    message: str = ""
    logger: str = ""
    pid: int = 0
    request_id: str = ""

    @classmethod
    def parse(cls, line: str) -> LogEntry:
        """The entry for one printed line."""
        try:
            fields = json.loads(line)
        except ValueError:
            return cls(line)
        if not isinstance(fields, dict):
            return cls(line)
        return cls(
            line,
            str(fields.get("message", "")),
            str(fields.get("logger", "")),
            int(fields.get("pid", 0)),
            str(fields.get("request_id", "")),
        )


class Serve:
    """A `llmgateway serve` process (parent and workers share its output), read as it runs."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.entries: list[LogEntry] = []
        # Set once its output has ended (the parent and every worker exited).
        self.ended = False
        self._changed = asyncio.Condition()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, args: list[str], env: Mapping[str, str]) -> AsyncIterator[Self]:
        """`serve ARGS` for the block (JSON logs); killed if still running at the end."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "llmgateway.server.process.cli",
            "serve",
            "--log-format",
            "json",
            *args,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        serve = cls(process)
        try:
            yield serve
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            for pid in serve.worker_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await serve._reader

    async def _read(self) -> None:
        stdout = self.process.stdout
        if stdout is None:
            raise RuntimeError("serve was started without a pipe for its output")
        while line := await stdout.readline():
            async with self._changed:
                self.entries.append(LogEntry.parse(line.decode(errors="replace").rstrip("\n")))
                self._changed.notify_all()
        async with self._changed:
            self.ended = True
            self._changed.notify_all()

    async def until(self, found: Callable[[list[LogEntry]], bool], what: str) -> None:
        """Until `found(entries)` holds; fails after WAIT s or if serve ends first."""

        async def wait() -> None:
            async with self._changed:
                while not found(self.entries):
                    if self.ended:
                        raise AssertionError(f"serve ended before {what}:\n{self.output()}")
                    await self._changed.wait()

        try:
            await asyncio.wait_for(wait(), WAIT)
        except TimeoutError:
            raise AssertionError(f"no {what} within {WAIT} s:\n{self.output()}") from None

    async def line(self, matches: Callable[[LogEntry], bool], what: str) -> LogEntry:
        """The first entry that `matches`, once it is printed."""
        await self.until(lambda entries: any(matches(e) for e in entries), what)
        return next(e for e in self.entries if matches(e))

    async def workers_started(self) -> list[int]:
        """The pids of the first workers, from the parent's 'started N workers' line."""
        entry = await self.line(lambda e: e.message.startswith("started "), "workers started")
        return [int(pid) for pid in entry.message.split("(pids ")[1].rstrip(")").split(", ")]

    async def listening(self, pid: int) -> None:
        """Until worker `pid` says it is listening."""
        await self.line(
            lambda e: e.pid == pid and e.message.startswith("llmgateway listening on"),
            f"worker {pid} listening",
        )

    async def replacement_of(self, pid: int) -> int:
        """The pid of the worker started in place of `pid`."""
        suffix = f"in place of {pid}"
        entry = await self.line(lambda e: e.message.endswith(suffix), f"a worker {suffix}")
        return int(entry.message.split()[2])

    async def access_line(self, request_id: str) -> LogEntry:
        """The access line of call `request_id`, once it is printed."""
        return await self.line(
            lambda e: e.logger == ACCESS_LOGGER and e.request_id == request_id,
            f"the access line of {request_id}",
        )

    async def exit_code(self) -> int:
        """The parent's exit code, once it exits (within WAIT s)."""
        try:
            return await asyncio.wait_for(self.process.wait(), WAIT)
        except TimeoutError:
            raise AssertionError(f"serve did not exit within {WAIT} s:\n{self.output()}") from None

    def worker_pids(self) -> list[int]:
        """Every worker pid the parent reported starting."""
        pids: list[int] = []
        for entry in self.entries:
            if entry.message.startswith("started ") and "(pids " in entry.message:
                pids += [int(p) for p in entry.message.split("(pids ")[1].rstrip(")").split(", ")]
            elif entry.message.startswith("started worker "):
                pids.append(int(entry.message.split()[2]))
        return pids

    def served_by(self) -> dict[str, int]:
        """Request id -> the pid of the worker whose access line logged it."""
        return {e.request_id: e.pid for e in self.entries if e.logger == ACCESS_LOGGER}

    def tracebacks(self) -> int:
        """Tracebacks printed, as raw text or inside JSON entries."""
        return sum("Traceback (most recent call last)" in e.raw for e in self.entries)

    def output(self) -> str:
        """The last lines printed, for failure messages."""
        return "\n".join(e.raw for e in self.entries[-60:])


@dataclass(slots=True)
class StreamOutcome:
    """How one stream ended at the client."""

    request_id: str = ""
    admitted: bool = False
    # "OK" (ended with its done event), or the gRPC status code's name.
    status: str = ""


@dataclass(slots=True)
class Figures:
    """What the scenario saw."""

    streams_started: int = 0
    completed_ok: int = 0
    ended_on_killed_worker: int = 0
    # Streams the survivor served that did not end OK, and streams that ended
    # neither OK nor gone: both must be 0.
    survivor_streams_failed: int = 0
    other_outcomes: Counter[str] = field(default_factory=Counter)
    killed_pid: int = 0
    survivor_pid: int = 0
    replacement_pid: int = 0
    parent_kept_running: bool = False
    # After the kill (once the parent saw it), before the replacement listened:
    # health SERVING and a call answered on a new connection.
    answered_while_restarting: bool = False
    calls_served_by_replacement: int = 0
    ledger_rows: int = 0
    ledger_statuses: Counter[str] = field(default_factory=Counter)
    calls_lost: int = 0
    in_flight_after: float = -1.0
    # Calls the workers logged (all ended OK), and those the parent's metrics count.
    access_lines: int = 0
    requests_counted_ok: float = -1.0
    tracebacks: int = 0
    parent_exit_code: int | None = None

    def summary(self) -> str:
        """The figures, one per line."""
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(self.ledger_statuses.items()))
        others = ", ".join(f"{k} {v}" for k, v in sorted(self.other_outcomes.items())) or "none"
        return "\n".join(
            [
                f"streams started:              {self.streams_started}",
                f"completed OK:                 {self.completed_ok}",
                f"ended on the killed worker:   {self.ended_on_killed_worker} (gone)",
                f"survivor's streams not OK:    {self.survivor_streams_failed}",
                f"other outcomes:               {others}",
                f"killed worker, survivor:      {self.killed_pid}, {self.survivor_pid}",
                f"replacement worker:           {self.replacement_pid}",
                f"parent kept running:          {self.parent_kept_running}",
                f"answered while restarting:    {self.answered_while_restarting}",
                f"calls served by replacement:  {self.calls_served_by_replacement}",
                f"ledger rows:                  {self.ledger_rows} ({statuses or 'none'})",
                f"calls lost:                   {self.calls_lost}",
                f"in-flight gauge afterwards:   {self.in_flight_after:g}",
                f"calls logged:                 {self.access_lines}",
                f"calls counted OK by /metrics: {self.requests_counted_ok:g}",
                f"tracebacks logged:            {self.tracebacks}",
                f"parent exit code on SIGTERM:  {self.parent_exit_code}",
            ]
        )


def _user(text: str) -> common.ChatMessage:
    return common.ChatMessage(role=common.ROLE_USER, content=text)


async def _stream(address: str, outcome: StreamOutcome, settled: Callable[[], None]) -> None:
    """One slow stream on its own connection; `settled` once admitted (or ended early)."""
    told = False
    try:
        async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as channel:
            stub = pb_grpc.CompletionServiceStub(channel)
            call = stub.StreamComplete(
                pb.StreamCompleteRequest(model=STREAM_MODEL, messages=[_user("count")]),
                timeout=WAIT * 2,
            )
            try:
                metadata = dict(await call.initial_metadata() or ())
                outcome.request_id = str(metadata.get("x-request-id", ""))
                last = await call.read()
                if last is not grpc.aio.EOF:
                    outcome.admitted = True
                    settled()
                    told = True
                    while (event := await call.read()) is not grpc.aio.EOF:
                        last = event
                done = isinstance(last, pb.StreamCompleteResponse) and last.HasField("done")
                outcome.status = "OK" if done else "OK-without-done"
            except grpc.aio.AioRpcError as error:
                outcome.status = error.code().name
    finally:
        if not told:
            settled()


async def _answers(address: str) -> bool:
    """Whether a new connection gets health SERVING and a unary answer."""
    async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)  # its stubs type only the sync API
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        stub = pb_grpc.CompletionServiceStub(channel)
        answer = await stub.Complete(
            pb.CompleteRequest(model="zai/glm-4.7", messages=[_user("hi")]), timeout=10
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING and answer.content)


async def _calls_reach(serve: Serve, address: str, pid: int) -> int:
    """New connections, one unary call each, until worker `pid` has served one (at
    most 60: the kernel picks the listener by a hash); the calls it served."""
    for _ in range(60):
        await serve.access_line(await one_call(address))
        served = sum(1 for p in serve.served_by().values() if p == pid)
        if served:
            return served
    return 0


async def one_call(address: str) -> str:
    """A unary call on a new connection; its request id."""
    async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as channel:
        call = pb_grpc.CompletionServiceStub(channel).Complete(
            pb.CompleteRequest(model="zai/glm-4.7", messages=[_user("hi")]), timeout=10
        )
        await call
        return str(dict(await call.initial_metadata() or ()).get("x-request-id"))


def _ledger(db: Path, request_ids: list[str]) -> dict[str, str]:
    """Request id -> status of its ledger row, for those that have one."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        rows = conn.execute("SELECT request_id, status FROM usage_records").fetchall()
    wanted = set(request_ids)
    return {str(rid): str(status) for rid, status in rows if rid in wanted}


async def _metric_sum(port: int, name: str, **labels: str) -> float:
    """The sum of the parent's /metrics samples `name` with `labels`."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    response.raise_for_status()
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def _requests_counted(port: int, expected: int) -> float:
    """llmgateway_requests_total{status="OK"} once it reaches `expected` (calls are
    counted as they close, just after replying), or after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        counted = await _metric_sum(port, "llmgateway_requests_total", status="OK")
        if counted >= expected or time.monotonic() >= deadline:
            return counted
        await asyncio.sleep(0.1)


async def run(
    fake: FakeUpstream,
    workdir: Path,
    *,
    streams: int = 100,
    ledger_wait: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> Figures:
    """The scenario, against `fake`, with the state database in `workdir`."""
    fake.slow_chunk_delay = SLOW_CHUNK_DELAY
    port, metrics_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    db = workdir / "state.db"
    environment = {**os.environ, **fake.environment(), "LLMGATEWAY_DB": str(db), **(env or {})}
    args = [
        "--address",
        address,
        "--workers",
        "2",
        "--metrics-address",
        f"127.0.0.1:{metrics_port}",
    ]
    figures = Figures()
    async with Serve.running(args, environment) as serve:
        first, second = await serve.workers_started()
        await serve.listening(first)
        await serve.listening(second)

        outcomes = [StreamOutcome() for _ in range(streams)]
        settled = 0
        all_settled = asyncio.Event()

        def one_settled() -> None:
            nonlocal settled
            settled += 1
            if settled == streams:
                all_settled.set()

        tasks = [asyncio.create_task(_stream(address, o, one_settled)) for o in outcomes]
        await asyncio.wait_for(all_settled.wait(), WAIT)

        figures.killed_pid, figures.survivor_pid = first, second
        os.kill(first, signal.SIGKILL)
        # Once the parent has seen it die, its listener is closed: a connection
        # made in the instant before lands in the dying listener's queue and is
        # reset (SO_REUSEPORT gives each worker a queue of its own).
        await serve.line(lambda e: e.message.startswith(f"worker {first} "), "the death logged")
        answered = await _answers(address)
        printed_by_then = len(serve.entries)
        figures.replacement_pid = await serve.replacement_of(first)
        await serve.listening(figures.replacement_pid)
        figures.answered_while_restarting = answered and not any(
            e.pid == figures.replacement_pid and e.message.startswith("llmgateway listening on")
            for e in serve.entries[:printed_by_then]
        )
        figures.calls_served_by_replacement = await _calls_reach(
            serve, address, figures.replacement_pid
        )
        await asyncio.gather(*tasks)
        figures.parent_kept_running = serve.process.returncode is None

        admitted = [o for o in outcomes if o.admitted]
        figures.streams_started = len(admitted)
        await serve.until(
            lambda _: all(o.request_id in serve.served_by() for o in admitted if o.status == "OK"),
            "access lines of the streams that ended OK",
        )
        served_by = serve.served_by()
        for outcome in admitted:
            on_survivor = served_by.get(outcome.request_id) == second
            if outcome.status == "OK":
                figures.completed_ok += 1
            elif outcome.status in GONE and outcome.request_id not in served_by:
                figures.ended_on_killed_worker += 1
            else:
                figures.other_outcomes[outcome.status] += 1
            if on_survivor and outcome.status != "OK":
                figures.survivor_streams_failed += 1
        figures.other_outcomes.update(o.status for o in outcomes if not o.admitted)

        figures.in_flight_after = await _metric_sum(metrics_port, "llmgateway_in_flight_requests")
        figures.access_lines = len(served_by)
        figures.requests_counted_ok = await _requests_counted(metrics_port, len(served_by))

        # The survivor completes its rows in batches; the killed worker's calls
        # stay IN_FLIGHT until their process is found dead and they are reaped.
        ids = [o.request_id for o in admitted]
        deadline = time.monotonic() + ledger_wait
        while True:
            rows = await asyncio.to_thread(_ledger, db, ids)
            settled = len(rows) == len(ids) and IN_FLIGHT not in rows.values()
            if settled or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.5)
        figures.ledger_rows = len(rows)
        figures.ledger_statuses = Counter(rows.values())
        figures.calls_lost = len(ids) - len(rows)

        serve.process.send_signal(signal.SIGTERM)
        figures.parent_exit_code = await serve.exit_code()
        await serve.until(lambda _: serve.ended, "the end of serve's output")
        figures.tracebacks = serve.tracebacks()
    return figures


async def _main(args: argparse.Namespace) -> Figures:
    async with FakeUpstream() as fake:
        with tempfile.TemporaryDirectory(prefix="llmgateway-worker-kill-") as workdir:
            return await run(
                fake, Path(workdir), streams=args.streams, ledger_wait=args.ledger_wait
            )


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100, help="concurrent streams (100)")
    parser.add_argument(
        "--ledger-wait",
        type=float,
        default=30.0,
        help="seconds to wait for every admitted call's ledger row (30)",
    )
    figures = asyncio.run(_main(parser.parse_args()))
    print(figures.summary())


if __name__ == "__main__":
    main()
