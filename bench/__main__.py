"""The gateway benchmark: python -m bench [--quick | --smoke] [--compare | --litellm --portkey].

Starts a fake upstream (instant unary answers; streams of N chunks D ms
apart), the two reference servers (bench/reference/: a bare grpc.aio server
with no upstream, and a minimal aiohttp relay before the same fake), the
gateway with its default settings and, with --litellm / --portkey (both with
--compare), LiteLLM's proxy and Portkey's gateway with the same number of
workers; drives the same loads through each in turn from a separate load
generator process (the Go one when it builds, bench/goload.py); samples each
party's CPU time around every load; then does one stream load again with a
short stream, so a stream's CPU splits into set-up and per chunk. Prints a
table and the issue's targets, writes JSON, Markdown and a PNG chart. A
benchmark, not a test: it judges nothing, but it exits non-zero if the direct
path, a reference server or the gateway had errors.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import processes as procs
from bench.report import (
    Row,
    check_targets,
    markdown_table,
    median_row,
    split_stream_cpu,
    text_table,
    write_chart,
)

if TYPE_CHECKING:
    from types import ModuleType

# Calls each load generator makes before it measures (loadgen.py's _warm_up,
# and the Go one's): the CPU sampled around a run covers them too.
WARM_UP_CALLS = 20
OWN_TARGETS = ("direct", "bare", "relay", "gateway")


@dataclass(frozen=True)
class Load:
    """One load to drive through every target."""

    name: str
    mode: str  # "unary" or "stream"
    concurrency: int
    requests: int = 0
    duration: float = 0.0
    waves: int = 1
    channels: int = 8  # gRPC channels (TCP connections); HTTP targets pool their own


@dataclass(frozen=True)
class Profile:
    """How big a run is."""

    loads: tuple[Load, ...]
    chunks: int
    chunk_delay: float
    # The stream load run again with streams of `split_chunks` chunks (a second
    # fake upstream and servers), so CPU per stream splits into set-up and per
    # chunk; None: not split.
    split_load: str | None = None
    split_chunks: int = 5
    # Seconds between loads, for a target to settle (the smoke judges only errors).
    settle: float = 0.5


def _loads(requests: int, seconds: float, waves: int) -> tuple[Load, ...]:
    return (
        Load("unary c=1", "unary", 1, requests=requests),
        Load("unary c=32", "unary", 32, duration=seconds),
        Load("unary c=128", "unary", 128, duration=seconds),
        Load("200 streams 1ch", "stream", 200, waves=waves, channels=1),
        Load("200 streams 8ch", "stream", 200, waves=waves, channels=8),
        Load("1000 streams", "stream", 1000, waves=waves, channels=8),
    )


PROFILES = {
    "full": Profile(
        _loads(2000, 10, 3), chunks=50, chunk_delay=0.005, split_load="200 streams 8ch"
    ),
    "quick": Profile(_loads(300, 3, 1), chunks=50, chunk_delay=0.005, split_load="200 streams 8ch"),
    "smoke": Profile(
        loads=(
            Load("unary c=1", "unary", 1, requests=20),
            Load("unary c=8", "unary", 8, duration=0.5),
            Load("20 streams 1ch", "stream", 20, channels=1),
            Load("20 streams 8ch", "stream", 20, channels=8),
        ),
        chunks=5,
        chunk_delay=0.005,
        settle=0.1,
    ),
}


@dataclass
class Target:
    """One thing a load is driven through."""

    name: str
    grpc: bool
    args: list[str]
    process: subprocess.Popen[bytes] | None = None  # None: the fake upstream itself
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Loadgen:
    """The load generator's command prefix, and which one it is."""

    kind: str  # "go" or "python"
    command: tuple[str, ...]


def main() -> int:
    """Run the benchmark; the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="shorter runs (a few minutes)")
    size.add_argument("--smoke", action="store_true", help="tiny runs, for CI")
    parser.add_argument(
        "--compare", action="store_true", help="the whole comparison: --litellm and --portkey"
    )
    parser.add_argument(
        "--litellm",
        action="store_true",
        help=f"also run LiteLLM {procs.LITELLM_VERSION}'s proxy (installed once "
        "into bench/.venv-litellm)",
    )
    parser.add_argument(
        "--portkey",
        action="store_true",
        help="also run Portkey's gateway (installed once from npm; needs the Go load generator)",
    )
    parser.add_argument(
        "--loadgen",
        choices=["go", "python"],
        default=None,
        help="the load generator: go (bench/goload.py; the default when it builds, except for "
        "--smoke) or python (bench/loadgen.py)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of each load, targets alternating; each figure is the median (3 on a "
        "shared machine)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="workers of the gateway, the reference servers and the peers; default: the "
        "gateway's own default, one per core",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results"),
        help="where results.json, results.md and results.png go",
    )
    args = parser.parse_args()
    profile_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    profile = PROFILES[profile_name]
    workers = args.workers or len(os.sched_getaffinity(0))
    peers = [
        name
        for name, wanted in (("litellm", args.litellm), ("portkey", args.portkey))
        if wanted or args.compare
    ]
    # The CI smoke judges errors, not speed: Python's generator spares it a cold Go build.
    loadgen = choose_loadgen(args.loadgen or ("python" if args.smoke else None))
    if "portkey" in peers and loadgen.kind != "go":
        parser.error(
            "--portkey needs the Go load generator (Portkey is told where to go by headers)"
        )
    if args.repeat < 1:
        parser.error("--repeat needs 1 or more")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run(profile, workers, peers=peers, loadgen=loadgen, out=args.out, repeat=args.repeat)
    machine = describe_machine()
    report: dict[str, Any] = {
        "machine": machine,
        "profile": profile_name,
        "workers": workers,
        "repeat": args.repeat,
        "loadgen": loadgen.kind,
        "stream_chunks": profile.chunks,
        "split_chunks": profile.split_chunks if profile.split_load else None,
        "chunk_delay_ms": profile.chunk_delay * 1000,
        "litellm_version": procs.LITELLM_VERSION if "litellm" in peers else None,
        "portkey_version": portkey_version() if "portkey" in peers else None,
        "rows": [row.as_dict() for row in rows],
        "targets": check_targets(rows),
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown_table(rows) + "\n")
    print(f"load generator: {loadgen.kind}; workers: {workers}")
    print(text_table(rows))
    print()
    for line in report["targets"]:
        print(line)
    chart = write_chart(rows, args.out / "results.png")
    print(
        f"\nwrote {args.out / 'results.json'}, {args.out / 'results.md'}"
        + (f", {chart}" if chart else " (no chart: matplotlib is not installed)")
    )
    failed = [r for r in rows if r.target in OWN_TARGETS and r.errors]
    for row in failed:
        print(
            f"ERRORS in {row.load} via {row.target}: {row.errors}; e.g. {row.error_samples[:1]}",
            file=sys.stderr,
        )
    return 1 if failed else 0


def choose_loadgen(wanted: str | None) -> Loadgen:
    """The Go load generator when asked for, or by default when it builds; else Python's."""
    python = Loadgen("python", (sys.executable, "-m", "bench.loadgen"))
    if wanted == "python" or (wanted is None and importlib.util.find_spec("bench.goload") is None):
        return python
    try:
        goload = importlib.import_module("bench.goload")  # builds bench/go once, cached
        return Loadgen("go", (str(goload.binary()),))
    except Exception as exc:
        if wanted == "go":
            raise
        print(f"the Go load generator did not build ({exc}); using Python's", file=sys.stderr)
        return python


def portkey_version() -> str:
    """The pinned version of Portkey's gateway."""
    return str(_portkey().VERSION)


def run(
    profile: Profile,
    workers: int,
    *,
    peers: list[str],
    loadgen: Loadgen,
    out: Path,
    repeat: int = 1,
) -> list[Row]:
    """Every load through every target, then the split load; everything stopped after."""
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        targets, fake = start_targets(stack, profile.chunks, profile, workers, peers, out)
        for load in profile.loads:
            chosen = [t for t in targets if t.grpc or load.channels > 1]
            # One gRPC channel means nothing to an HTTP client: those skip it.
            rows += drive_each(load, chosen, fake, loadgen, repeat, profile.settle)
    split = next((load for load in profile.loads if load.name == profile.split_load), None)
    if split is None:
        return rows
    short = Load(
        f"{split.name} x{profile.split_chunks}",
        split.mode,
        split.concurrency,
        waves=split.waves,
        channels=split.channels,
    )
    with contextlib.ExitStack() as stack:
        targets, fake = start_targets(stack, profile.split_chunks, profile, workers, [], out)
        rows += drive_each(short, targets, fake, loadgen, repeat, profile.settle)
    split_stream_cpu(rows, split.name, short.name, profile.chunks, profile.split_chunks)
    return rows


def drive_each(
    load: Load,
    targets: list[Target],
    fake: subprocess.Popen[bytes],
    loadgen: Loadgen,
    repeat: int,
    settle: float,
) -> list[Row]:
    """`load` through each target, `repeat` rounds alternating the targets (each
    round starts one target later), so another process's burst on the shared
    machine spreads over them; one row per target, each figure its median."""
    runs: dict[str, list[Row]] = {t.name: [] for t in targets}
    for round_ in range(repeat):
        shift = round_ % len(targets)
        for target in targets[shift:] + targets[:shift]:
            note = f" (round {round_ + 1} of {repeat})" if repeat > 1 else ""
            print(f"running {load.name} via {target.name}{note}...", file=sys.stderr, flush=True)
            runs[target.name].append(drive(load, target, fake, loadgen, settle))
    return [median_row(runs[t.name]) for t in targets]


def start_targets(
    stack: contextlib.ExitStack,
    chunks: int,
    profile: Profile,
    workers: int,
    peers: list[str],
    out: Path,
) -> tuple[list[Target], subprocess.Popen[bytes]]:
    """A fake upstream streaming `chunks` chunks and every target before it; the fake."""
    tag = "" if chunks == profile.chunks else f"-{chunks}"
    fake_port, bare_port, relay_port, gateway_port = (procs.free_port() for _ in range(4))
    env = procs.fake_environment(fake_port)
    fake = stack.enter_context(
        procs.running(
            procs.fake_upstream_command(fake_port, chunks, profile.chunk_delay),
            log=out / f"fake_upstream{tag}.log",
        )
    )
    procs.wait_for_port(fake_port, fake)
    targets = [
        Target(
            "direct",
            grpc=False,
            args=[
                "--url",
                f"http://127.0.0.1:{fake_port}/openrouter/api/v1/chat/completions",
                "--key",
                procs.FAKE_OPENROUTER_KEY,
            ],
        )
    ]
    for name, port in (("bare", bare_port), ("relay", relay_port)):
        log = out / f"{name}{tag}.log"
        command = procs.reference_command(name, port, workers, chunks, profile.chunk_delay)
        process = stack.enter_context(procs.running(command, env=env, log=log))
        procs.wait_for_line(log, "serving", process)
        targets.append(
            Target(name, grpc=True, args=["--address", f"127.0.0.1:{port}"], process=process)
        )
    gateway = stack.enter_context(
        procs.running(
            procs.gateway_command(gateway_port, workers), env=env, log=out / f"gateway{tag}.log"
        )
    )
    procs.wait_for_port(gateway_port, gateway)
    procs.wait_for_workers(gateway, workers)
    targets.append(
        Target(
            "gateway", grpc=True, args=["--address", f"127.0.0.1:{gateway_port}"], process=gateway
        )
    )
    if "litellm" in peers:
        port = procs.free_port()
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        command = procs.litellm_command(port, fake_port, workers, scratch)
        litellm = stack.enter_context(
            procs.running(command, env=procs.LITELLM_ENV, log=out / "litellm.log")
        )
        procs.wait_for_http(
            f"http://127.0.0.1:{port}/health/liveliness", litellm, procs.LITELLM_START_SECONDS
        )
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        targets.append(
            Target(
                "litellm",
                grpc=False,
                args=["--url", url, "--key", "sk-bench-master", "--model", "bench"],
                process=litellm,
            )
        )
    if "portkey" in peers:
        targets.append(start_portkey(stack, fake_port, workers, out))
    return targets, fake


def start_portkey(stack: contextlib.ExitStack, fake_port: int, workers: int, out: Path) -> Target:
    """Portkey's gateway (bench/peers/portkey.py) before the fake upstream."""
    portkey = _portkey()
    port = procs.free_port()
    process = stack.enter_context(
        procs.running(
            portkey.command(port, workers),  # installs it once; the upstream is per request
            env=portkey.environment(),
            log=out / "portkey.log",
        )
    )
    portkey.wait_ready(port, process, out / "portkey.log", workers)
    return Target(
        "portkey",
        grpc=False,
        args=["--url", portkey.url(port), "--key", portkey.KEY, "--model", portkey.MODEL],
        process=process,
        headers=dict(portkey.headers(fake_port)),
    )


def _portkey() -> ModuleType:
    """bench/peers/portkey.py, imported only with --portkey (it installs Node packages)."""
    return importlib.import_module("bench.peers.portkey")


def loadgen_command(load: Load, target: Target, loadgen: Loadgen) -> list[str]:
    """The load generator's command line for `load` through `target`."""
    if target.grpc:
        kind = "gateway"  # both generators speak the gateway's gRPC contract as "gateway"
    elif loadgen.kind == "go" or target.name in ("direct", "litellm"):
        kind = target.name
    else:
        kind = "direct"  # Python's knows direct and litellm, the same OpenAI wire
    command = [
        *loadgen.command,
        "--target",
        kind,
        "--mode",
        load.mode,
        "--concurrency",
        str(load.concurrency),
        "--requests",
        str(load.requests),
        "--duration",
        str(load.duration),
        "--waves",
        str(load.waves),
        "--channels",
        str(load.channels),
        *target.args,
    ]
    for name, value in target.headers.items():
        command += ["--header", f"{name}: {value}"]
    return command


def drive(
    load: Load,
    target: Target,
    fake: subprocess.Popen[bytes],
    loadgen: Loadgen,
    settle: float = 0.5,
) -> Row:
    """One load through one target, from a separate load-generator process, with
    each party's CPU time sampled before and after."""
    command = loadgen_command(load, target, loadgen)
    process = target.process
    with contextlib.ExitStack() as stack:
        sampler = stack.enter_context(procs.MemorySampler(process.pid)) if process else None
        target_cpu = procs.cpu_seconds(process.pid) if process else 0.0
        fake_cpu = procs.cpu_seconds(fake.pid)
        client_cpu = _children_cpu()
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        client_cpu = _children_cpu() - client_cpu
        fake_cpu = procs.cpu_seconds(fake.pid) - fake_cpu
        target_cpu = procs.cpu_seconds(process.pid) - target_cpu if process else 0.0
    if done.returncode != 0:
        raise RuntimeError(
            f"load generator failed for {load.name} via {target.name}:\n{done.stderr}"
        )
    raw = json.loads(done.stdout)
    # The Go generator reports its own CPU over the measured load (getrusage);
    # Python's is the whole process's, warm-up, interpreter start-up and
    # imports included (about 0.3-0.5 s: read its per-call figure as an upper bound).
    calls = len(raw["latencies"]) + raw["errors"] + WARM_UP_CALLS
    client_calls = calls
    if "client_cpu_seconds" in raw:  # the measured load's only, warm-up left out
        client_cpu, client_calls = float(raw["client_cpu_seconds"]), calls - WARM_UP_CALLS
    time.sleep(settle)  # let the target settle before the next load
    row = Row.from_raw(
        load.name,
        load.mode,
        target.name,
        load.concurrency,
        raw,
        sampler.peak_mb if sampler else None,
        sampler.peak_pss_mb if sampler else None,
    )
    row.channels = load.channels if target.grpc else None
    row.cpu_ms = target_cpu * 1000 / calls if process else None
    row.fake_cpu_ms = fake_cpu * 1000 / calls
    row.client_cpu_ms = client_cpu * 1000 / max(1, client_calls)
    return row


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def describe_machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
    }


if __name__ == "__main__":
    raise SystemExit(main())
