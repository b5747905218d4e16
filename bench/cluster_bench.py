"""Many replicas against one, same run: python -m bench.cluster_bench [--smoke] [--out DIR]

Starts the local cluster (scripts/cluster.py: Envoy before three `llmgateway serve`
replicas, one worker each, sharing PostgreSQL and Redis, over the fake upstream with the
benchmark's streams of 50 chunks 5 ms apart) and drives the same loads, from
bench.loadgen in a process of its own (the caller key in --metadata), through:

- one replica directly, and Envoy before all three, with a key without limits (no
  reservation: the path's own cost);
- the same with a key with limits (never reached), so every call reserves and settles in
  Redis; then, after moving every replica's limits to PostgreSQL, in the database.

Prints a table (and writes it as Markdown and the raw figures as JSON into --out) with
each row's requests per second per replica. A benchmark, not a test: it judges nothing.
On a machine with few cores the replicas, Envoy, PostgreSQL, Redis and the load generator
share them, so this measures what the balancer and the shared stores cost, not scale.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from bench.report import Row
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from scripts.cluster import Cluster, ClusterOptions, Limits

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

MODEL = "openrouter/openai/gpt-4o-mini"
REPLICAS = 3
# The main benchmark's streams (bench/__main__.py's full profile).
STREAM_CHUNKS = 50
CHUNK_DELAY = 0.005
# Hang guard for the warm-up only.
WARM_UP_LIMIT_SECONDS = 60.0


@dataclass(frozen=True)
class Load:
    name: str
    mode: str  # "unary" or "stream"
    concurrency: int
    duration: float = 0.0
    waves: int = 1


PROFILES = {
    "full": (
        Load("unary c=32", "unary", 32, duration=10),
        Load("200 streams", "stream", 200, waves=2),
    ),
    "smoke": (
        Load("unary c=8", "unary", 8, duration=1),
        Load("20 streams", "stream", 20, waves=1),
    ),
}


# ---- the run ----


@dataclass(frozen=True)
class Via:
    """Where a load goes: a label, an address and the key it calls with."""

    label: str
    address: str
    key: str
    replicas: int


def load_command(via: Via, load: Load) -> list[str]:
    """bench.loadgen's command line for `load` through `via` (its own process, so it
    shares no core's GIL with what it measures), with the caller key on every call."""
    return [
        sys.executable, "-m", "bench.loadgen", "--target", "gateway",
        "--address", via.address, "--metadata", f"authorization=Bearer {via.key}",
        "--gateway-model", MODEL,
        "--mode", load.mode, "--concurrency", str(load.concurrency),
        "--duration", str(load.duration), "--waves", str(load.waves),
    ]  # fmt: skip


def drive(via: Via, load: Load) -> Row:
    command = load_command(via, load)
    done = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603
    raw = json.loads(done.stdout)
    return Row.from_raw(load.name, load.mode, via.label, load.concurrency, raw, None, None)


def serving(cluster: Cluster, replicas: Iterable[int]) -> None:
    """Calls through Envoy until every one of `replicas` (freshly started) has served one:
    Envoy's worker sends a replica calls about a second after its admin reports it
    healthy."""
    wanted = list(replicas)
    deadline = time.monotonic() + WARM_UP_LIMIT_SECONDS
    message = common.ChatMessage(role=common.ROLE_USER, content="warm up")
    request = pb.CompleteRequest(model=MODEL, messages=[message])
    metadata = (("authorization", f"Bearer {cluster.load_key}"),)
    with grpc.insecure_channel(cluster.address) as channel:
        stub = pb_grpc.CompletionServiceStub(channel)
        while not all(cluster.replica_requests(i, method="Complete") for i in wanted):
            if time.monotonic() > deadline:
                raise SystemExit(f"replicas {wanted} got no call through Envoy")
            for _ in range(10):
                stub.Complete(request, metadata=metadata, timeout=30)
            time.sleep(0.05)


def per_replica(row: Row, via: Via) -> float | None:
    return None if row.rps is None else row.rps / via.replicas


def table(rows: Sequence[tuple[Row, Via]]) -> list[list[str]]:
    header = ["load", "via", "p50 ms", "p99 ms", "req/s", "req/s per replica",
              "TTFT p50 ms", "TTFT p99 ms", "total s", "errors"]  # fmt: skip

    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None else fmt.format(value)

    body = [
        [
            row.load,
            row.target,
            cell(row.p50_ms, "{:.2f}"),
            cell(row.p99_ms, "{:.2f}"),
            cell(row.rps, "{:.0f}"),
            cell(per_replica(row, via), "{:.0f}"),
            cell(row.ttft_p50_ms, "{:.1f}"),
            cell(row.ttft_p99_ms, "{:.1f}"),
            cell(row.total_s, "{:.3f}"),
            str(row.errors),
        ]
        for row, via in rows
    ]
    return [header, *body]


def markdown(cells: list[list[str]]) -> str:
    header, *body = cells
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(line) + " |" for line in body)])


def text(cells: list[list[str]]) -> str:
    widths = [max(len(line[c]) for line in cells) for c in range(len(cells[0]))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in cells
    )


def run(profile: str, out: Path) -> int:
    loads = PROFILES[profile]
    parent = Path(tempfile.mkdtemp(prefix="llmgateway-cluster-bench-"))
    parent.chmod(0o755)  # as root, PostgreSQL runs as the postgres user
    options = ClusterOptions(
        replicas=REPLICAS,
        port=0,
        run_dir=parent / "cluster",
        fake_chunk_delay=CHUNK_DELAY,
        fake_stream_chunks=STREAM_CHUNKS,
    )
    rows: list[tuple[Row, Via]] = []
    began = time.monotonic()
    cluster = Cluster.up(options)
    try:
        serving(cluster, range(REPLICAS))
        # Limits that are never reached: every call reserves and settles, none is refused.
        limited = cluster.create_key("bench-limited", rpm=10**9, budget_usd=10.0**9, per="day")
        direct = cluster.replicas[0].address
        phases: list[tuple[Limits, list[Via]]] = [
            ("redis", [
                Via("1 replica, no limits", direct, cluster.load_key, 1),
                Via("Envoy + 3, no limits", cluster.address, cluster.load_key, REPLICAS),
                Via("1 replica, limits in Redis", direct, limited, 1),
                Via("Envoy + 3, limits in Redis", cluster.address, limited, REPLICAS),
            ]),
            ("postgres", [
                Via("1 replica, limits in PostgreSQL", direct, limited, 1),
                Via("Envoy + 3, limits in PostgreSQL", cluster.address, limited, REPLICAS),
            ]),
        ]  # fmt: skip
        for limits, vias in phases:
            if cluster.limits != limits:
                cluster.restart_all(limits)
                serving(cluster, range(REPLICAS))
            for load in loads:
                for via in vias:
                    print(f"{load.name} via {via.label}...", file=sys.stderr, flush=True)
                    rows.append((drive(via, load), via))
    finally:
        cluster.down()
        shutil.rmtree(parent, ignore_errors=True)
    cells = table(rows)
    print(text(cells))
    out.mkdir(parents=True, exist_ok=True)
    (out / "cluster_bench.md").write_text(markdown(cells) + "\n")
    results: dict[str, Any] = {
        "machine": {"cpus": _cpus(), "python": platform.python_version()},
        "profile": profile,
        "replicas": REPLICAS,
        "stream_chunks": STREAM_CHUNKS,
        "chunk_delay_ms": CHUNK_DELAY * 1000,
        "seconds": round(time.monotonic() - began, 1),
        "rows": [{**row.as_dict(), "replicas": via.replicas} for row, via in rows],
    }
    (out / "cluster_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out / 'cluster_bench.md'} and {out / 'cluster_bench.json'}", file=sys.stderr)
    return 1 if any(row.errors for row, _ in rows) else 0


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a few seconds: does it run")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the table and JSON (default: a temp dir)",
    )
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="cluster-bench-out-"))
    return run("smoke" if args.smoke else "full", out)


if __name__ == "__main__":
    sys.exit(main())
