"""The benchmark's accounting: CPU per party, the set-up/per-chunk split, and
issue 16's targets judged against the relay measured in the same run."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import TYPE_CHECKING

from bench import processes as procs
from bench.report import Row, check_targets, median_row, split_stream_cpu, write_chart

if TYPE_CHECKING:
    from pathlib import Path


def row(load: str, target: str, **figures: float | None) -> Row:
    mode = "unary" if load.startswith("unary") else "stream"
    concurrency = int(load.split("=")[1]) if "=" in load else int(load.split()[0])
    made = Row(
        load, mode, target, concurrency, count=100, errors=0, p50_ms=None, p99_ms=None, rps=None
    )
    for name, value in figures.items():
        setattr(made, name, value)
    return made


def test_cpu_seconds_counts_a_busy_child_of_the_process() -> None:
    spin = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    parent = subprocess.Popen(  # a shell whose child does the work
        ["/bin/sh", "-c", f"{sys.executable} -c '{spin}'; sleep 30"]
    )
    try:
        before = procs.cpu_seconds(parent.pid)
        waits = 300  # at most 30 s on a busy machine
        while procs.cpu_seconds(parent.pid) - before < 0.25 and waits:
            time.sleep(0.1)
            waits -= 1
        assert procs.cpu_seconds(parent.pid) - before >= 0.25
    finally:
        parent.kill()
        parent.wait()


def test_a_stream_splits_into_set_up_and_per_chunk() -> None:
    rows = [
        row("200 streams 8ch", "gateway", cpu_ms=2.0 + 50 * 0.07),
        row("200 streams 8ch x5", "gateway", cpu_ms=2.0 + 5 * 0.07),
        row("200 streams 8ch", "direct"),  # no target process: nothing to split
    ]
    split_stream_cpu(rows, "200 streams 8ch", "200 streams 8ch x5", 50, 5)
    assert rows[0].setup_cpu_ms is not None
    assert abs(rows[0].setup_cpu_ms - 2.0) < 1e-9
    assert rows[0].chunk_cpu_us is not None
    assert abs(rows[0].chunk_cpu_us - 70.0) < 1e-6
    assert rows[2].setup_cpu_ms is None


def test_targets_are_judged_against_the_relay_and_the_peers() -> None:
    rows = [
        row("unary c=1", "relay", p50_ms=0.65),
        row("unary c=1", "gateway", p50_ms=0.90),
        row("unary c=32", "relay", rps=2000),
        row("unary c=32", "gateway", rps=1500),
        row("unary c=32", "litellm", rps=100),
        row("unary c=32", "portkey", rps=1600),
        row("200 streams 1ch", "relay", total_s=1.0, ttft_p50_ms=30),
        row("200 streams 1ch", "gateway", total_s=1.2, ttft_p50_ms=35),
        row("1000 streams", "gateway", peak_pss_mb=140),
    ]
    rows[1].setup_cpu_ms, rows[1].chunk_cpu_us = 0.4, 60
    lines = "\n".join(check_targets(rows))
    assert "[met] unary p50 at c=1: 0.90 ms, +0.25 ms" in lines
    assert "[MISSED] unary req/s at c=32: 1500 = 0.75x the relay's 2000" in lines
    assert "[met] stream set-up CPU (unary c=1): 0.40 ms" in lines
    assert "[MISSED] 200 streams 1ch: wall 1.200 s = 1.20x" in lines
    assert "[met] 200 streams 1ch: TTFT p50 35.0 ms, +5.0 ms" in lines
    assert "[met] unary throughput: 1500 req/s = 15.0x litellm's 100" in lines
    assert "[MISSED] unary throughput: 1500 req/s = 0.9x portkey's 1600" in lines
    assert "[met] 1000 streams: 0 errors" in lines
    assert "[met] 1000 streams: peak PSS 140 MB" in lines


def test_the_chart_is_a_png_with_the_new_figures(tmp_path: Path) -> None:
    rows = [
        row("unary c=1", "relay", p50_ms=0.65, cpu_ms=0.4),
        row("unary c=1", "gateway", p50_ms=0.90, cpu_ms=0.9),
        row("200 streams 8ch", "relay", total_s=1.0, ttft_p50_ms=30, cpu_ms=3.0),
        row("200 streams 8ch", "gateway", total_s=1.2, ttft_p50_ms=35, cpu_ms=5.0),
    ]
    rows[3].setup_cpu_ms = 1.5
    chart = write_chart(rows, tmp_path / "chart.png")
    assert chart is not None
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_rounds_merge_into_medians_with_counts_summed_and_the_highest_memory() -> None:
    rounds = [
        row("unary c=32", "gateway", rps=900, cpu_ms=1.1, p50_ms=30, peak_pss_mb=90),
        row("unary c=32", "gateway", rps=1100, cpu_ms=0.9, p50_ms=None, peak_pss_mb=95),
        row("unary c=32", "gateway", rps=1000, cpu_ms=1.0, p50_ms=20, peak_pss_mb=None),
    ]
    rounds[1].errors, rounds[1].error_samples = 2, ["UNAVAILABLE: a", "UNAVAILABLE: b"]
    merged = median_row(rounds)
    assert (merged.rps, merged.cpu_ms) == (1000, 1.0)
    assert merged.p50_ms == 20  # of the rounds that measured it, the lower middle
    assert (merged.count, merged.errors, merged.repeats) == (300, 2, 3)
    assert merged.peak_pss_mb == 95
    assert merged.error_samples == ["UNAVAILABLE: a", "UNAVAILABLE: b"]
    assert median_row(rounds[:1]) is rounds[0]
