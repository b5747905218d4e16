"""The soak: python -m bench.soak [--duration SECONDS] [--smoke].

Minutes of mixed traffic (bench/soak_traffic.py: healthy calls, upstream
faults, callers that leave or cancel, deadlines that expire mid-call) through
one gateway process, with the gateway's resident memory, open file
descriptors and running asyncio tasks measured once traffic has warmed up and
again at the end, each time after traffic has stopped and the gateway has
settled. They must stay flat, and no call may end in an unexpected way; the
exit code says whether both held. A script, not a test: CI runs --smoke.

The gateway runs in its own process (bench/soak_gateway.py), which reports
its own task count on a pipe; memory and descriptors are read from /proc, and
connections to the fake upstream (also its own process) from /proc/net/tcp.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import re
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bench import processes as procs
from bench.__main__ import describe_machine
from bench.soak_traffic import SCENARIOS, Traffic

if TYPE_CHECKING:
    from collections.abc import Iterator

# Gateway settings for the soak: short enough that every fault ends within a
# second or two, so a few minutes hold many thousands of them.
SOAK_SETTINGS = {
    # A stalled stream fails after 1 s of silence (the default is 5 minutes).
    "LLMGATEWAY_STREAM_IDLE_TIMEOUT": "1",
    # The fake's Retry-After is 7 s: hand it back to the caller instead of waiting.
    "LLMGATEWAY_MAX_RETRY_AFTER": "0",
    "LLMGATEWAY_RETRY_INITIAL_BACKOFF": "0.05",
    "LLMGATEWAY_RETRY_MAX_BACKOFF": "0.2",
    # Where circuit breakers exist, a tripped one skips its provider for 1 s, not 30.
    "LLMGATEWAY_CIRCUIT_COOL_DOWN": "1",
}
# Streams of 20 content chunks 5 ms apart: long enough to leave mid-stream.
STREAM_CHUNKS = 20
CHUNK_DELAY = 0.005
# Descriptors other than upstream connections that may differ between the two
# measurements without a leak: see docs/performance.md ("Soak").
FD_SLACK = 2
# Frames tracemalloc keeps per allocation with --trace-memory: enough to see
# who, above the library that allocated, holds on.
TRACE_FRAMES = 12
SHOWN_FRAMES = 6
# ERROR entries of the gateway's log that are known and reported, not a leak:
# listed and counted, but they do not fail the soak.
KNOWN_LOG_ERRORS = {
    "ExecuteBatchError raised in core by servicer method": (
        "the caller's deadline passed just as the gateway sent its own error status for "
        "the same deadline (an upstream budget ends exactly at the caller's deadline); "
        "grpc logs the failed send; the caller got DEADLINE_EXCEEDED either way"
    ),
}


@dataclass(frozen=True)
class Profile:
    """How long, how hard, and how much memory growth is allowed."""

    duration: float
    callers: int
    rss_slack_mb: float
    rss_slack_fraction: float
    settle_max: float


FULL = Profile(duration=300, callers=48, rss_slack_mb=15, rss_slack_fraction=0.10, settle_max=20)
# A few seconds of warm-up leave the allocator short of its steady state.
SMOKE = Profile(duration=8, callers=32, rss_slack_mb=25, rss_slack_fraction=0.25, settle_max=5)


@dataclass
class Sample:
    """One measurement of the gateway process."""

    rss_mb: float
    fds: int
    upstream: int  # the gateway's sockets to the fake upstream
    upstream_close_wait: int  # of those, the ones the fake already closed
    fake_connections: int  # connections the fake upstream holds open
    tasks: int
    objects: int = 0
    types: dict[str, int] = field(default_factory=dict)
    blocks: int = 0  # blocks Python's allocator holds
    traced_mb: float | None = None  # the Python heap, when tracemalloc traces

    @property
    def other_fds(self) -> int:
        """Descriptors other than upstream connections."""
        return self.fds - self.upstream


class GatewayProbe:
    """The pipe to bench/soak_gateway.py: one JSON line back for each command."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        if process.stdin is None or process.stdout is None:
            raise ValueError("the gateway must be started with piped=True")
        self.process = process
        self._commands: IO[bytes] = process.stdin
        self._replies: IO[bytes] = process.stdout
        self.port = int(self._read(60)["port"])

    def ask(self, command: str) -> dict[str, Any]:
        """Send `command`, return its reply."""
        self._commands.write(command.encode() + b"\n")
        self._commands.flush()
        return self._read(30)

    def close(self, seconds: float = 15) -> int | None:
        """Close stdin (the gateway drains and exits); its exit code, None if it hung."""
        with contextlib.suppress(BrokenPipeError):
            self._commands.close()
        try:
            code = self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            code = None
        self._replies.close()
        return code

    def _read(self, seconds: float) -> dict[str, Any]:
        ready, _, _ = select.select([self._replies], [], [], seconds)
        line = self._replies.readline() if ready else b""
        if not line:
            raise RuntimeError(
                f"the gateway did not answer within {seconds} s "
                f"(exit code {self.process.poll()}; see its log)"
            )
        reply: dict[str, Any] = json.loads(line)
        return reply


def _sockets() -> dict[int, tuple[int, int, str]]:
    """Every TCP socket on the machine: inode -> (local port, remote port, state)."""
    found = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(name).read_text().splitlines()[1:]:
                parts = line.split()
                local, remote, state, inode = parts[1], parts[2], parts[3], int(parts[9])
                found[inode] = (
                    int(local.rsplit(":", 1)[1], 16),
                    int(remote.rsplit(":", 1)[1], 16),
                    state,
                )
    return found


def measure(probe: GatewayProbe, fake_port: int, *, census: bool) -> Sample:
    """The gateway's memory, descriptors, upstream connections and tasks, now."""
    pid = probe.process.pid
    reply = probe.ask("census" if census else "tasks")
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed between listing and reading
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    sockets = _sockets()
    mine = [int(m.group(1)) for link in links if (m := re.fullmatch(r"socket:\[(\d+)\]", link))]
    upstream = [sockets[i][2] for i in mine if i in sockets and sockets[i][1] == fake_port]
    fake_side = [
        state
        for inode, (local, _, state) in sockets.items()
        if local == fake_port and inode and state != "0A"
    ]
    return Sample(
        rss_mb=procs.rss_kb(pid) / 1024,
        fds=len(links),
        upstream=len(upstream),
        upstream_close_wait=upstream.count("08"),
        fake_connections=len(fake_side),
        tasks=int(reply["tasks"]),
        objects=int(reply.get("objects", 0)),
        types=dict(reply.get("types", {})),
        blocks=int(reply.get("blocks", 0)),
        traced_mb=reply.get("traced_mb"),
    )


async def settle(
    probe: GatewayProbe, fake_port: int, reference_tasks: int, most: float
) -> tuple[Sample, float]:
    """Wait (1 s at least, `most` at most) until the gateway runs no more tasks
    than `reference_tasks`; then a full measurement, and how long it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.sleep(1)
    while loop.time() - started < most:
        tasks = (await asyncio.to_thread(probe.ask, "tasks"))["tasks"]
        if tasks <= reference_tasks:
            break
        await asyncio.sleep(0.25)
    waited = loop.time() - started
    return await asyncio.to_thread(measure, probe, fake_port, census=True), waited


@dataclass
class Run:
    """What a soak saw."""

    idle: Sample
    start: Sample
    end: Sample
    traffic: Traffic
    warmup: float
    settled: tuple[float, float]
    # With --trace-memory: where the Python heap grew most between start and end.
    growth: list[dict[str, Any]] = field(default_factory=list)


async def drive(
    probe: GatewayProbe,
    fake_port: int,
    profile: Profile,
    traffic: Traffic,
    *,
    trace: bool,
) -> Run:
    """Idle measurement, warm-up, start measurement, the soak, end measurement."""
    idle = await asyncio.to_thread(measure, probe, fake_port, census=True)
    warmup = max(0.1 * profile.duration, min(5.0, 0.25 * profile.duration))
    say(f"warm-up: {warmup:.0f} s of traffic from {profile.callers} callers")
    await traffic.run(warmup)
    start, settled_start = await settle(probe, fake_port, idle.tasks, profile.settle_max)
    say(f"start measured (settled in {settled_start:.1f} s): {_brief(start)}")
    if trace:
        await asyncio.to_thread(probe.ask, "mark")
    soak_for = profile.duration - warmup
    interval = min(30.0, max(2.0, soak_for / 10))
    say(f"soak: {soak_for:.0f} s; a line every {interval:.0f} s")
    loop = asyncio.get_running_loop()
    began, calls_before = loop.time(), traffic.tally.calls

    async def watch() -> None:
        last_time, last_calls = began, calls_before
        while True:
            await asyncio.sleep(interval)
            sample = await asyncio.to_thread(measure, probe, fake_port, census=False)
            now, calls = loop.time(), traffic.tally.calls
            say(
                f"t={now - began:5.0f} s  calls {calls:>7}  "
                f"({(calls - last_calls) / (now - last_time):5.0f}/s)  "
                f"unexpected {traffic.tally.unexpected}  {_brief(sample)}"
            )
            last_time, last_calls = now, calls

    watcher = asyncio.create_task(watch())
    try:
        await traffic.run(soak_for)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    end, settled_end = await settle(probe, fake_port, start.tasks, profile.settle_max)
    say(f"end measured (settled in {settled_end:.1f} s): {_brief(end)}")
    growth = (await asyncio.to_thread(probe.ask, "growth"))["growth"] if trace else []
    return Run(idle, start, end, traffic, warmup, (settled_start, settled_end), growth)


def _brief(sample: Sample) -> str:
    return (
        f"RSS {sample.rss_mb:.1f} MB, fds {sample.fds} (upstream {sample.upstream}), "
        f"tasks {sample.tasks}, blocks {sample.blocks / 1000:.0f}k, "
        f"fake's connections {sample.fake_connections}"
    )


def say(line: str) -> None:
    """Progress, part of the record: on stdout, at once."""
    print(line, flush=True)


@dataclass
class Verdict:
    """Each check, and whether it held."""

    checks: list[tuple[bool, str]] = field(default_factory=list)

    def check(self, held: bool, what: str) -> None:
        """Record one check."""
        self.checks.append((held, what))

    @property
    def flat(self) -> bool:
        """Whether every check held."""
        return all(held for held, _ in self.checks)


def judge(run: Run, profile: Profile, log: GatewayLog, exit_code: int | None) -> Verdict:
    """The checks a soak must pass."""
    start, end = run.start, run.end
    verdict = Verdict()
    verdict.check(
        end.tasks <= start.tasks,
        f"tasks back to the start's count: {start.tasks} -> {end.tasks}",
    )
    verdict.check(
        end.other_fds - start.other_fds <= FD_SLACK,
        f"descriptors other than upstream connections within +{FD_SLACK}: "
        f"{start.other_fds} -> {end.other_fds}",
    )
    # The pool keeps what was in use at once: a call's connection, and the last
    # call's, which a stream still drains after its `done` reached the caller.
    pool_bound = 2 * profile.callers
    verdict.check(
        end.upstream <= pool_bound,
        f"upstream connections within {pool_bound} (two per caller, the most the pool may "
        f"keep): {end.upstream}",
    )
    verdict.check(
        end.upstream_close_wait == 0,
        f"no upstream connection left half-closed (CLOSE_WAIT): {end.upstream_close_wait}",
    )
    # Under tracemalloc, RSS holds tracemalloc's own records: judge the heap it traces.
    memory, first, last = "RSS", start.rss_mb, end.rss_mb
    if start.traced_mb is not None and end.traced_mb is not None:
        memory, first, last = "Python heap (tracemalloc)", start.traced_mb, end.traced_mb
    limit = max(profile.rss_slack_mb, profile.rss_slack_fraction * first)
    verdict.check(
        last - first <= limit,
        f"{memory} growth within {limit:.1f} MB (the larger of {profile.rss_slack_mb:.0f} MB and "
        f"{profile.rss_slack_fraction:.0%}): {last - first:+.1f} MB",
    )
    unexpected = run.traffic.tally.unexpected
    verdict.check(unexpected == 0, f"no unexpected outcome: {unexpected}")
    verdict.check(
        not log.unknown,
        f"no ERROR or traceback in the gateway's log, other than known ones: {len(log.unknown)}",
    )
    verdict.check(
        exit_code == 0,
        f"the gateway stopped cleanly when asked: exit code {exit_code}"
        + (" (still running after 15 s)" if exit_code is None else ""),
    )
    return verdict


def figures(run: Run) -> list[str]:
    """The table of idle, start and end measurements."""
    start, end = run.start, run.end
    rows: list[tuple[str, float, float, float, str]] = [
        ("RSS MB", run.idle.rss_mb, start.rss_mb, end.rss_mb, "{:.1f}"),
        ("open fds", run.idle.fds, start.fds, end.fds, "{:.0f}"),
        ("  upstream connections", run.idle.upstream, start.upstream, end.upstream, "{:.0f}"),
        ("  other fds", run.idle.other_fds, start.other_fds, end.other_fds, "{:.0f}"),
        ("asyncio tasks", run.idle.tasks, start.tasks, end.tasks, "{:.0f}"),
        ("Python objects (tracked by gc)", run.idle.objects, start.objects, end.objects, "{:.0f}"),
        ("Python allocator blocks", run.idle.blocks, start.blocks, end.blocks, "{:.0f}"),
        (
            "fake upstream's open connections",
            run.idle.fake_connections,
            start.fake_connections,
            end.fake_connections,
            "{:.0f}",
        ),
    ]
    if run.idle.traced_mb is not None and start.traced_mb is not None and end.traced_mb:
        rows.append(
            (
                "Python heap MB (tracemalloc)",
                run.idle.traced_mb,
                start.traced_mb,
                end.traced_mb,
                "{:.1f}",
            )
        )
    lines = [f"{'gateway process':<34}{'idle':>10}{'start':>10}{'end':>10}{'change':>10}"]
    for name, idle, first, last, form in rows:
        change = form.replace("{:", "{:+").format(last - first)
        lines.append(
            f"{name:<34}{form.format(idle):>10}{form.format(first):>10}"
            f"{form.format(last):>10}{change:>10}"
        )
    return lines


def report(run: Run, verdict: Verdict, log: GatewayLog, started: float) -> None:
    """The figures, on stdout."""
    print()
    for line in figures(run):
        print(line)
    print(
        "\nidle: before any traffic; start: after the warm-up "
        f"({run.warmup:.0f} s of traffic) and {run.settled[0]:.1f} s of settling; "
        f"end: after the soak and {run.settled[1]:.1f} s of settling."
    )
    start, end = run.start, run.end
    grown = sorted(((n - start.types.get(t, 0), t) for t, n in end.types.items()), reverse=True)
    print(
        "object types that grew most (start -> end): "
        + (", ".join(f"{t} {n:+d}" for n, t in grown[:5] if n > 0) or "none")
    )
    if run.growth:
        print("where the Python heap grew most (start -> end, tracemalloc):")
        for place in run.growth:
            print(f"  {place['kb']:+9.1f} KiB {place['blocks']:+7d} blocks  {place['where'][-1]}")
            for frame in list(reversed(place["where"][:-1]))[:SHOWN_FRAMES]:
                print(f"  {'':>30}{frame}")
    tally = run.traffic.tally
    print()
    for line in tally.table():
        print(line)
    print(
        "\nexpected errors seen: "
        + ", ".join(f"{status} {n}" for status, n in tally.statuses.most_common())
    )
    for sample in tally.samples:
        print(f"UNEXPECTED {sample}")
    for line in log.unknown[:10]:
        print(f"GATEWAY LOG {line}")
    for known, count in log.known.items():
        print(f"gateway log, known issue ({count}x): {known}: {KNOWN_LOG_ERRORS[known]}")
    print(f"\nverdict ({time.monotonic() - started:.0f} s in all):")
    for held, what in verdict.checks:
        print(f"  {'ok  ' if held else 'FAIL'} {what}")
    print("FLAT" if verdict.flat else "NOT FLAT")


@dataclass
class GatewayLog:
    """The ERROR entries of the gateway's log (tracebacks included)."""

    unknown: list[str] = field(default_factory=list)  # the first line of each
    known: collections.Counter[str] = field(default_factory=collections.Counter)

    @classmethod
    def read(cls, log: Path) -> GatewayLog:
        """Entries at ERROR or worse, and tracebacks logged outside any entry."""
        found = cls()
        with contextlib.suppress(OSError):
            for entry in re.split(r"\n(?=\d{4}-\d\d-\d\d )", log.read_text(errors="replace")):
                first = entry.split("\n", 1)[0]
                if not re.search(r"^\S+ \S+ (ERROR|CRITICAL) |^Traceback", entry, re.MULTILINE):
                    continue
                known = next((k for k in KNOWN_LOG_ERRORS if k in first), None)
                if known is None:
                    found.unknown.append(first)
                else:
                    found.known[known] += 1
        return found


@contextlib.contextmanager
def started_gateway(fake_port: int, out: Path, *, trace: bool) -> Iterator[GatewayProbe]:
    """The fake upstream and the gateway under soak, each its own process."""
    env = {**procs.fake_environment(fake_port), **SOAK_SETTINGS}
    tracing = ["-X", f"tracemalloc={TRACE_FRAMES}"] if trace else []
    with (
        procs.running(
            procs.fake_upstream_command(fake_port, STREAM_CHUNKS, CHUNK_DELAY),
            log=out / "fake_upstream.log",
        ) as fake,
        procs.running(
            [sys.executable, *tracing, "-m", "bench.soak_gateway"],
            env=env,
            log=out / "gateway.log",
            piped=True,
        ) as gateway,
    ):
        procs.wait_for_port(fake_port, fake)
        yield GatewayProbe(gateway)


def main() -> int:
    """Run the soak; the exit code (0: flat, 1: not)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results/soak"),
        help="where the gateway's and the fake upstream's logs go",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="about 15 s in all, looser on memory (CI)"
    )
    parser.add_argument(
        "--duration", type=float, help="seconds of traffic, warm-up included (default 300)"
    )
    parser.add_argument("--callers", type=int, help="concurrent callers (default 48)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the traffic mix")
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="run the gateway under tracemalloc and show where its Python heap grew (slower; "
        "RSS and allocator blocks then include tracemalloc's own, so judge the heap figure)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="KIND",
        choices=list(dict.fromkeys(s.kind for s in SCENARIOS)),
        help="run only this kind of call (repeatable; the kinds are the rows of the calls "
        "table: 'unary', 'stream', 'stream, caller leaves', ...), to find which traffic makes "
        "something grow",
    )
    args = parser.parse_args()
    scenarios = [s for s in SCENARIOS if not args.only or s.kind in args.only]
    profile = dataclasses.replace(
        SMOKE if args.smoke else FULL,
        **{name: value for name in ("duration", "callers") if (value := getattr(args, name))},
    )
    args.out.mkdir(parents=True, exist_ok=True)
    machine = describe_machine()
    print(
        f"soak: {profile.duration:.0f} s, {profile.callers} callers, seed {args.seed}"
        + (f", only {' / '.join(args.only)}" if args.only else "")
        + "; "
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"Python {machine['python']}, {machine['date']}"
    )
    started = time.monotonic()
    fake_port = procs.free_port()
    with started_gateway(fake_port, args.out, trace=args.trace_memory) as probe:
        traffic = Traffic(f"127.0.0.1:{probe.port}", profile.callers, args.seed, scenarios)
        run = asyncio.run(drive(probe, fake_port, profile, traffic, trace=args.trace_memory))
        exit_code = probe.close()
    log = GatewayLog.read(args.out / "gateway.log")
    verdict = judge(run, profile, log, exit_code)
    report(run, verdict, log, started)
    if not verdict.flat:
        print(
            f"logs: {args.out / 'gateway.log'}, {args.out / 'fake_upstream.log'}", file=sys.stderr
        )
    return 0 if verdict.flat else 1


if __name__ == "__main__":
    raise SystemExit(main())
