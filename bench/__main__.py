"""The gateway benchmark: python -m bench [--quick | --smoke] [--litellm].

Starts a fake upstream (instant unary answers; streams of N chunks D ms
apart), the gateway with its default settings and, with --litellm, LiteLLM's
proxy with the same number of workers; drives the same loads through each in
turn from a separate load-generator process; prints a table and writes JSON,
Markdown and a PNG chart. A benchmark, not a test: it judges nothing, but it
exits non-zero if the direct path or the gateway had errors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import processes as procs
from bench.report import Row, check_targets, markdown_table, text_table, write_chart


@dataclass(frozen=True)
class Load:
    """One load to drive through every target."""

    name: str
    mode: str  # "unary" or "stream"
    concurrency: int
    requests: int = 0
    duration: float = 0.0
    waves: int = 1


@dataclass(frozen=True)
class Profile:
    """How big a run is."""

    loads: tuple[Load, ...]
    chunks: int
    chunk_delay: float


PROFILES = {
    "full": Profile(
        loads=(
            Load("unary c=1", "unary", 1, requests=2000),
            Load("unary c=32", "unary", 32, duration=10),
            Load("unary c=128", "unary", 128, duration=10),
            Load("200 streams", "stream", 200, waves=3),
            Load("1000 streams", "stream", 1000, waves=3),
        ),
        chunks=50,
        chunk_delay=0.005,
    ),
    "quick": Profile(
        loads=(
            Load("unary c=1", "unary", 1, requests=300),
            Load("unary c=32", "unary", 32, duration=3),
            Load("unary c=128", "unary", 128, duration=3),
            Load("200 streams", "stream", 200),
            Load("1000 streams", "stream", 1000),
        ),
        chunks=50,
        chunk_delay=0.005,
    ),
    "smoke": Profile(
        loads=(
            Load("unary c=1", "unary", 1, requests=20),
            Load("unary c=8", "unary", 8, duration=0.5),
            Load("20 streams", "stream", 20),
        ),
        chunks=5,
        chunk_delay=0.005,
    ),
}


def main() -> int:
    """Run the benchmark; the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="shorter runs (about a minute)")
    size.add_argument("--smoke", action="store_true", help="tiny runs, for CI")
    parser.add_argument(
        "--litellm",
        action="store_true",
        help=f"also run LiteLLM {procs.LITELLM_VERSION}'s proxy (installed once "
        "into bench/.venv-litellm)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="gateway (and LiteLLM) workers; default: the gateway's own default, one per core",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results"),
        help="where results.json, results.md and results.png go",
    )
    args = parser.parse_args()
    profile = PROFILES["smoke" if args.smoke else "quick" if args.quick else "full"]
    workers = args.workers or len(os.sched_getaffinity(0))
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run(profile, workers, with_litellm=args.litellm, out=args.out)
    machine = describe_machine()
    report: dict[str, Any] = {
        "machine": machine,
        "profile": "smoke" if args.smoke else "quick" if args.quick else "full",
        "workers": workers,
        "stream_chunks": profile.chunks,
        "chunk_delay_ms": profile.chunk_delay * 1000,
        "litellm_version": procs.LITELLM_VERSION if args.litellm else None,
        "rows": [row.as_dict() for row in rows],
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown_table(rows) + "\n")
    print(text_table(rows))
    print()
    for line in check_targets(rows):
        print(line)
    chart = write_chart(rows, args.out / "results.png")
    print(
        f"\nwrote {args.out / 'results.json'}, {args.out / 'results.md'}"
        + (f", {chart}" if chart else " (no chart: matplotlib is not installed)")
    )
    failed = [r for r in rows if r.target in ("direct", "gateway") and r.errors]
    for row in failed:
        print(
            f"ERRORS in {row.load} via {row.target}: {row.errors}; e.g. {row.error_samples[:1]}",
            file=sys.stderr,
        )
    return 1 if failed else 0


def run(profile: Profile, workers: int, *, with_litellm: bool, out: Path) -> list[Row]:
    """Start everything, drive every load through every target, stop everything."""
    rows: list[Row] = []
    fake_port, gateway_port, litellm_port = (procs.free_port() for _ in range(3))
    env = procs.fake_environment(fake_port)
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        fake = stack.enter_context(
            procs.running(
                procs.fake_upstream_command(fake_port, profile.chunks, profile.chunk_delay),
                log=out / "fake_upstream.log",
            )
        )
        gateway = stack.enter_context(
            procs.running(
                procs.gateway_command(gateway_port, workers), env=env, log=out / "gateway.log"
            )
        )
        procs.wait_for_port(fake_port, fake)
        procs.wait_for_port(gateway_port, gateway)
        targets: list[tuple[str, list[str], subprocess.Popen[bytes] | None]] = [
            (
                "direct",
                [
                    "--url",
                    f"http://127.0.0.1:{fake_port}/openrouter/api/v1/chat/completions",
                    "--key",
                    procs.FAKE_OPENROUTER_KEY,
                ],
                None,
            ),
            ("gateway", ["--address", f"127.0.0.1:{gateway_port}"], gateway),
        ]
        if with_litellm:
            command = procs.litellm_command(litellm_port, fake_port, workers, scratch)
            litellm = stack.enter_context(procs.running(command, log=out / "litellm.log"))
            procs.wait_for_http(f"http://127.0.0.1:{litellm_port}/health/liveliness", litellm)
            targets.append(
                (
                    "litellm",
                    [
                        "--url",
                        f"http://127.0.0.1:{litellm_port}/v1/chat/completions",
                        "--key",
                        "sk-bench-master",
                        "--model",
                        "bench",
                    ],
                    litellm,
                )
            )
        for load in profile.loads:
            for name, target_args, process in targets:
                print(f"running {load.name} via {name}...", file=sys.stderr, flush=True)
                rows.append(drive(load, name, target_args, process))
    return rows


def drive(
    load: Load, target: str, target_args: list[str], process: subprocess.Popen[bytes] | None
) -> Row:
    """One load through one target, from a separate load-generator process."""
    command = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--target",
        target,
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
        *target_args,
    ]
    with contextlib.ExitStack() as stack:
        sampler = (
            stack.enter_context(procs.MemorySampler(process.pid)) if process is not None else None
        )
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed for {load.name} via {target}:\n{done.stderr}")
    raw = json.loads(done.stdout)
    time.sleep(0.5)  # let the target settle before the next load
    return Row.from_raw(
        load.name,
        load.mode,
        target,
        load.concurrency,
        raw,
        sampler.peak_mb if sampler else None,
        sampler.peak_pss_mb if sampler else None,
    )


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
