"""Per-call cost of the gateway: python -m bench.per_call [--workers N] [--repeat K] [--b-env K=V ...].

Starts the fake upstream and `llmgateway serve --workers N`, warms up, then
drives three loads from a separate load-generator process (bench/loadgen.py):
unary at concurrency 1, unary at concurrency 32 for a fixed time, and 200
concurrent streams of 50 chunks 5 ms apart. For each it prints the gateway
process tree's CPU milliseconds per call (utime + stime of every process in
the tree from /proc, read before and after the load, divided by the calls the
load generator made, its own warm-up calls included), latency p50/p99, req/s,
time to first token p50 and wall time. The gateway logs at INFO, its default,
so every call's access line is written (to a file under --logs) and paid for.

CPU per call is the figure to compare: the machine is shared, and wall-clock
figures move with whatever else runs; the CPU the gateway spent per call
moves far less.

A/B: `--b-env KEY=VALUE` (repeatable) and/or `--b-checkout PATH` define a
variant B: the gateway started with those environment variables, or from
another checkout's service/ directory, or `--b-python PATH` (another
interpreter, e.g. a venv with the gateway's dependencies installed). `--a-env`,
`--a-checkout` and `--a-python` do the same for A, which is otherwise this
checkout as it is. With a B, every repeat runs A then B, each on a fresh
gateway, so the two alternate. Figures are printed per run and as medians
per variant.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import processes as procs
from bench.report import _quantile

if TYPE_CHECKING:
    from collections.abc import Iterator

WARM_UP_CALLS = 20  # bench/loadgen.py makes this many calls of the load's kind first
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Load:
    """One load: its name and its load-generator arguments."""

    name: str
    mode: str
    concurrency: int
    args: tuple[str, ...]


LOADS = (
    Load("unary c=1", "unary", 1, ("--requests", "2000")),
    Load("unary c=32", "unary", 32, ("--duration", "5")),
    Load("200 streams", "stream", 200, ("--waves", "1")),
)
QUICK_LOADS = (
    Load("unary c=1", "unary", 1, ("--requests", "500")),
    Load("unary c=32", "unary", 32, ("--duration", "2")),
    Load("200 streams", "stream", 200, ("--waves", "1")),
)


@dataclass
class Figures:
    """One load's figures through one gateway."""

    variant: str
    load: str
    calls: int
    errors: int
    cpu_ms_per_call: float
    p50_ms: float | None
    p99_ms: float | None
    rps: float | None
    ttft_p50_ms: float | None
    wall_s: float
    error_samples: list[str] = field(default_factory=list)


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and all its descendants, in seconds.

    Read from /proc/<pid>/stat (fields 14 and 15, clock ticks). A process that
    exited during the load is missing from the "after" reading; the gateway's
    workers live for the whole run, so the difference is what the tree spent.
    """
    total = 0
    for member in procs._tree(pid):  # the same tree MemorySampler walks
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{member}/stat").read_text()
            # The command name (field 2) may hold spaces; it ends at the last ")".
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def drive(load: Load, address: str, gateway_pid: int, variant: str) -> Figures:
    """One load from a separate load-generator process; the tree's CPU around it."""
    command = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--target",
        "gateway",
        "--mode",
        load.mode,
        "--concurrency",
        str(load.concurrency),
        "--address",
        address,
        *load.args,
    ]
    before = tree_cpu_seconds(gateway_pid)
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    after = tree_cpu_seconds(gateway_pid)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed for {load.name}:\n{done.stderr}")
    raw: dict[str, Any] = json.loads(done.stdout)
    latencies = sorted(raw["latencies"])
    ttfts = sorted(raw["ttfts"])
    calls = len(latencies) + raw["errors"] + WARM_UP_CALLS
    wall = raw["wall"] or 1e-9
    time.sleep(0.3)  # let the gateway settle (access lines, ledger writes) before the next load
    return Figures(
        variant=variant,
        load=load.name,
        calls=len(latencies),
        errors=raw["errors"],
        cpu_ms_per_call=(after - before) * 1000 / calls,
        p50_ms=_ms(_quantile(latencies, 0.5)),
        p99_ms=_ms(_quantile(latencies, 0.99)),
        rps=len(latencies) / wall if load.mode == "unary" else None,
        ttft_p50_ms=_ms(_quantile(ttfts, 0.5)),
        wall_s=wall,
        error_samples=raw["error_samples"],
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


@dataclass(frozen=True)
class Variant:
    """One side of an A/B: how its gateway is started."""

    name: str
    env: dict[str, str]
    checkout: Path | None
    python: str | None
    workers: int | None = None  # None: --workers


@contextlib.contextmanager
def started_gateway(
    variant: Variant, workers: int, fake_port: int, log_dir: Path, log_level: str
) -> Iterator[tuple[str, int]]:
    """A fresh, warmed-up gateway before the running fake upstream: (address, pid)."""
    port = procs.free_port()
    env = {**procs.fake_environment(fake_port), **variant.env}
    if variant.checkout is not None:
        env["PYTHONPATH"] = str(variant.checkout / "service")
    command = procs.gateway_command(port, variant.workers or workers, log_level)
    if variant.python is not None:
        command[0] = variant.python
    log = log_dir / f"gateway-{variant.name}.log"
    with procs.running(command, env=env, log=log) as gateway:
        procs.wait_for_port(port, gateway)
        address = f"127.0.0.1:{port}"
        drive(Load("warm-up", "unary", 8, ("--requests", "400")), address, gateway.pid, "")
        yield address, gateway.pid


def run_all(
    variants: list[Variant], loads: tuple[Load, ...], args: argparse.Namespace, fake_port: int
) -> Iterator[Figures]:
    """Every load through every variant, `args.repeat` times.

    Without --interleave each repeat of a variant gets a fresh gateway and
    runs all the loads (A's loads, then B's). With it, every variant's gateway
    is started once and each load alternates between them (A, B, then B, A
    on the next repeat...), so a change in the machine's load lands on both
    sides alike."""
    start = functools.partial(
        started_gateway,
        workers=args.workers,
        fake_port=fake_port,
        log_dir=args.logs,
        log_level=args.log_level,
    )
    if not args.interleave:
        for _ in range(args.repeat):
            for variant in variants:
                with start(variant) as (address, pid):
                    for load in loads:
                        yield drive(load, address, pid, variant.name)
        return
    with contextlib.ExitStack() as stack:
        running = [(v, stack.enter_context(start(v))) for v in variants]
        for repeat in range(args.repeat):
            # A then B on even repeats, B then A on odd ones: the second of
            # two back-to-back stream loads meets the first one's leftovers
            # (sockets closing, the fake upstream's garbage).
            order = running if repeat % 2 == 0 else running[::-1]
            for load in loads:
                for variant, (address, pid) in order:
                    yield drive(load, address, pid, variant.name)


def _env_pairs(values: list[str]) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise SystemExit(f"--a-env/--b-env want KEY=VALUE, not {value!r}")
        pairs[key] = rest
    return pairs


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


HEADER = (
    f"{'variant':8} {'load':12} {'calls':>6} {'err':>4} {'CPU ms/call':>11} {'p50 ms':>8} "
    f"{'p99 ms':>8} {'req/s':>7} {'TTFT p50':>9} {'wall s':>7}"
)


def line(f: Figures) -> str:
    """One row of the table."""
    return (
        f"{f.variant:8} {f.load:12} {f.calls:6d} {f.errors:4d} {f.cpu_ms_per_call:11.3f} "
        f"{_fmt(f.p50_ms, '8.2f')} {_fmt(f.p99_ms, '8.2f')} {_fmt(f.rps, '7.0f')} "
        f"{_fmt(f.ttft_p50_ms, '9.1f')} {f.wall_s:7.3f}"
    )


def medians(results: list[Figures]) -> list[Figures]:
    """Per (variant, load), the median of each figure over the repeats."""
    out = []
    keys = list(dict.fromkeys((f.variant, f.load) for f in results))
    for variant, load in keys:
        group = [f for f in results if (f.variant, f.load) == (variant, load)]

        def med(attr: str, group: list[Figures] = group) -> float | None:
            values = [getattr(f, attr) for f in group if getattr(f, attr) is not None]
            return statistics.median(values) if values else None

        out.append(
            Figures(
                variant=variant,
                load=load,
                calls=int(med("calls") or 0),
                errors=sum(f.errors for f in group),
                cpu_ms_per_call=med("cpu_ms_per_call") or 0.0,
                p50_ms=med("p50_ms"),
                p99_ms=med("p99_ms"),
                rps=med("rps"),
                ttft_p50_ms=med("ttft_p50_ms"),
                wall_s=med("wall_s") or 0.0,
            )
        )
    return out


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    """Run the loads; print the table; non-zero if any call failed."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.per_call",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workers", type=int, default=1, help="gateway workers (default 1)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant (default 1)")
    parser.add_argument("--quick", action="store_true", help="500 calls at c=1, 2 s at c=32")
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="start each variant's gateway once and alternate every load between them "
        "(best on a busy machine); default: a fresh gateway per repeat and variant",
    )
    parser.add_argument("--a-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--a-checkout", type=Path, default=None, metavar="PATH")
    parser.add_argument("--a-python", default=None, metavar="PATH", help="A's interpreter")
    parser.add_argument("--b-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--b-checkout", type=Path, default=None, metavar="PATH")
    parser.add_argument("--b-python", default=None, metavar="PATH", help="B's interpreter")
    parser.add_argument(
        "--b-workers", type=int, default=None, help="B's workers (default --workers)"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="the gateway's --log-level (default INFO, its own default: an access line per call)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every run here")
    parser.add_argument("--logs", type=Path, default=Path("bench/results/per_call"))
    args = parser.parse_args()
    # SIGTERM (and SIGINT, which a shell's background job ignores) unwinds:
    # the load generator, gateway and fake upstream are stopped on the way out.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    loads = QUICK_LOADS if args.quick else LOADS
    b_env = _env_pairs(args.b_env)
    variants = [Variant("A", _env_pairs(args.a_env), args.a_checkout, args.a_python)]
    if b_env or args.b_checkout or args.b_python or args.b_workers:
        variants.append(Variant("B", b_env, args.b_checkout, args.b_python, args.b_workers))
    args.logs.mkdir(parents=True, exist_ok=True)
    fake_port = procs.free_port()
    results: list[Figures] = []
    print(HEADER, flush=True)
    with procs.running(
        procs.fake_upstream_command(fake_port, 50, 0.005), log=args.logs / "fake_upstream.log"
    ) as fake:
        procs.wait_for_port(fake_port, fake)
        for figures in run_all(variants, loads, args, fake_port):
            results.append(figures)
            print(line(figures), flush=True)
    if args.repeat > 1 or len(variants) > 1:
        print(f"\nmedians over {args.repeat} run(s) per variant:")
        print(HEADER)
        for figures in medians(results):
            print(line(figures))
    if args.json:
        args.json.write_text(json.dumps([f.__dict__ for f in results], indent=2) + "\n")
    failed = [f for f in results if f.errors]
    for f in failed:
        print(f"ERRORS {f.variant} {f.load}: {f.errors}; e.g. {f.error_samples[:1]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
