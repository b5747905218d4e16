"""Benchmark figures: one row per (load, target), tables, target checks, a chart."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

# Measured on a 2-core machine for reference (issue 4), used when LiteLLM is not run.
LITELLM_REFERENCE_RPS = 128.0


@dataclass
class Row:
    """One load through one target."""

    load: str
    mode: str
    target: str
    concurrency: int
    count: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    rps: float | None
    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    total_s: float | None = None
    chunks_per_s: float | None = None
    peak_rss_mb: float | None = None
    peak_pss_mb: float | None = None
    error_samples: list[str] = field(default_factory=list)
    channels: int | None = None  # gRPC channels the load used; None over HTTP
    # CPU time (user + system, whole process tree) per unary call or per
    # stream, warm-up calls included in the count: the target's (None for
    # direct, which has none), the fake upstream's and the load generator's.
    cpu_ms: float | None = None
    fake_cpu_ms: float | None = None
    client_cpu_ms: float | None = None
    # A stream's CPU split in two from the same load at two chunk counts
    # (split_stream_cpu): per stream set-up, and per upstream chunk.
    setup_cpu_ms: float | None = None
    chunk_cpu_us: float | None = None

    @classmethod
    def from_raw(
        cls,
        load: str,
        mode: str,
        target: str,
        concurrency: int,
        raw: dict[str, Any],
        peak_rss_mb: float | None,
        peak_pss_mb: float | None,
    ) -> Row:
        """A row from the load generator's raw figures."""
        latencies = sorted(raw["latencies"])
        ttfts = sorted(raw["ttfts"])
        wall = raw["wall"] or 1e-9
        waves = max(1, raw.get("waves", 1))
        return cls(
            load=load,
            mode=mode,
            target=target,
            concurrency=concurrency,
            count=len(latencies),
            errors=raw["errors"],
            p50_ms=_ms(_quantile(latencies, 0.50)),
            p99_ms=_ms(_quantile(latencies, 0.99)),
            rps=len(latencies) / wall if mode == "unary" else None,
            ttft_p50_ms=_ms(_quantile(ttfts, 0.50)),
            ttft_p99_ms=_ms(_quantile(ttfts, 0.99)),
            total_s=wall / waves if mode == "stream" else None,
            chunks_per_s=raw["chunks"] / wall if mode == "stream" else None,
            peak_rss_mb=peak_rss_mb,
            peak_pss_mb=peak_pss_mb,
            error_samples=raw["error_samples"],
        )

    repeats: int = 1  # rounds this row's figures are the medians of

    def as_dict(self) -> dict[str, Any]:
        """For JSON."""
        return asdict(self)


_COLUMNS = [
    ("load", "load", "{}"),
    ("target", "via", "{}"),
    ("p50_ms", "p50 ms", "{:.2f}"),
    ("p99_ms", "p99 ms", "{:.2f}"),
    ("rps", "req/s", "{:.0f}"),
    ("ttft_p50_ms", "TTFT p50 ms", "{:.1f}"),
    ("ttft_p99_ms", "TTFT p99 ms", "{:.1f}"),
    ("total_s", "total s", "{:.3f}"),
    ("chunks_per_s", "chunks/s", "{:.0f}"),
    ("errors", "errors", "{}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    ("peak_pss_mb", "peak PSS MB", "{:.0f}"),
    ("cpu_ms", "CPU ms/call", "{:.3f}"),
    ("setup_cpu_ms", "set-up CPU ms", "{:.3f}"),
    ("chunk_cpu_us", "CPU us/chunk", "{:.1f}"),
    ("fake_cpu_ms", "fake CPU ms", "{:.3f}"),
    ("client_cpu_ms", "client CPU ms", "{:.3f}"),
]


def median_row(rounds: list[Row]) -> Row:
    """One row for several rounds of the same load through the same target:
    each figure the median of the rounds' (the lower middle one of an even
    count, a figure some round measured), counts and errors summed, peak
    memory the highest, error samples kept up to five."""
    if not rounds:
        raise ValueError("no rounds")
    first = rounds[0]
    if len(rounds) == 1:
        return first
    merged = dataclasses.replace(first, repeats=len(rounds))
    for name in _MEDIAN_FIELDS:
        values = sorted(v for r in rounds if (v := getattr(r, name)) is not None)
        setattr(merged, name, values[(len(values) - 1) // 2] if values else None)
    merged.count = sum(r.count for r in rounds)
    merged.errors = sum(r.errors for r in rounds)
    merged.peak_rss_mb = _highest(r.peak_rss_mb for r in rounds)
    merged.peak_pss_mb = _highest(r.peak_pss_mb for r in rounds)
    merged.error_samples = [e for r in rounds for e in r.error_samples][:5]
    return merged


_MEDIAN_FIELDS = (
    "p50_ms",
    "p99_ms",
    "rps",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "total_s",
    "chunks_per_s",
    "cpu_ms",
    "fake_cpu_ms",
    "client_cpu_ms",
)


def _highest(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


# The order targets appear in, in the chart's legend.
TARGET_ORDER = ["direct", "bare", "relay", "gateway", "litellm", "portkey"]


def split_stream_cpu(
    rows: list[Row], long_load: str, short_load: str, long_chunks: int, short_chunks: int
) -> None:
    """Per target, the CPU of one stream as set-up + chunks x per chunk, from
    the same stream load at two chunk counts; written on the long load's row.

    Two equations, two unknowns: cpu_long = setup + long_chunks * chunk and
    cpu_short = setup + short_chunks * chunk.
    """
    if long_chunks == short_chunks:
        raise ValueError("the two loads need different chunk counts")
    for long_row in rows:
        if long_row.load != long_load or long_row.cpu_ms is None:
            continue
        short_row = _find(rows, short_load, long_row.target)
        if short_row is None or short_row.cpu_ms is None:
            continue
        chunk_ms = (long_row.cpu_ms - short_row.cpu_ms) / (long_chunks - short_chunks)
        long_row.chunk_cpu_us = chunk_ms * 1000
        long_row.setup_cpu_ms = short_row.cpu_ms - short_chunks * chunk_ms


def _cells(row: Row) -> list[str]:
    cells = []
    for attr, _, fmt in _COLUMNS:
        value = getattr(row, attr)
        cells.append("-" if value is None else fmt.format(value))
    return cells


def text_table(rows: list[Row]) -> str:
    """A fixed-width table for the terminal."""
    header = [title for _, title, _ in _COLUMNS]
    body = [_cells(r) for r in rows]
    widths = [max(len(x) for x in column) for column in zip(header, *body, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += [
        "  ".join(
            c.rjust(w) if i > 1 else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        for cells in body
    ]
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    """The same table in Markdown, for docs/performance.md."""
    header = [title for _, title, _ in _COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def _find(rows: list[Row], load: str, target: str) -> Row | None:
    return next((r for r in rows if r.load == load and r.target == target), None)


def check_targets(rows: list[Row]) -> list[str]:
    """Issue 16's targets, each marked met or missed with the figures behind it
    (the gateway against the minimal relay and the peers measured in the same run)."""
    lines = ["targets of issue 16 (2 cores, fake upstream on loopback; the gateway vs the relay):"]

    def verdict(ok: bool, text: str) -> None:
        lines.append(f"  [{'met' if ok else 'MISSED'}] {text}")

    def both(load: str, attr: str) -> tuple[float, float] | None:
        gateway, relay = _find(rows, load, "gateway"), _find(rows, load, "relay")
        if gateway is None or relay is None:
            return None
        ours, theirs = getattr(gateway, attr), getattr(relay, attr)
        return None if ours is None or theirs is None else (ours, theirs)

    if pair := both("unary c=1", "p50_ms"):
        added = pair[0] - pair[1]
        verdict(
            added <= 0.3,
            f"unary p50 at c=1: {pair[0]:.2f} ms, {added:+.2f} ms against the relay's "
            f"{pair[1]:.2f} (target <= +0.3)",
        )
    if (pair := both("unary c=32", "rps")) and pair[1]:
        verdict(
            pair[0] >= 0.8 * pair[1],
            f"unary req/s at c=32: {pair[0]:.0f} = {pair[0] / pair[1]:.2f}x the relay's "
            f"{pair[1]:.0f} (target >= 0.8x)",
        )
    setups = [r for r in rows if r.target == "gateway" and r.setup_cpu_ms is not None]
    for row in setups:
        assert row.setup_cpu_ms is not None  # noqa: S101  # filtered just above
        verdict(
            row.setup_cpu_ms <= 0.5,
            f"stream set-up CPU ({row.load}): {row.setup_cpu_ms:.2f} ms per stream, "
            f"{row.chunk_cpu_us or 0:.0f} us per chunk (target <= 0.5 ms)",
        )
    if not setups:
        lines.append("  [not judged] stream set-up CPU: no split load in this profile")
    # The 200-stream loads, not the split's short streams (" x5"), which have no target.
    streams = {r.load for r in rows if r.mode == "stream" and r.load.startswith("200 ")}
    for load in sorted(s for s in streams if " x" not in s):
        if (pair := both(load, "total_s")) and pair[1]:
            verdict(
                pair[0] <= 1.1 * pair[1],
                f"{load}: wall {pair[0]:.3f} s = {pair[0] / pair[1]:.2f}x the relay's "
                f"{pair[1]:.3f} (target <= 1.1x)",
            )
        if pair := both(load, "ttft_p50_ms"):
            verdict(
                pair[0] - pair[1] <= 10,
                f"{load}: TTFT p50 {pair[0]:.1f} ms, {pair[0] - pair[1]:+.1f} ms against the "
                f"relay's {pair[1]:.1f} (target <= +10)",
            )
    best = _best_rps(rows, "gateway")
    for peer, need, rule in (("litellm", 15.0, ">= 15x"), ("portkey", 1.0, "> 1x")):
        theirs = _best_rps(rows, peer)
        if best and theirs:
            ok = best >= need * theirs if peer == "litellm" else best > theirs
            verdict(
                ok,
                f"unary throughput: {best:.0f} req/s = {best / theirs:.1f}x {peer}'s "
                f"{theirs:.0f} with the same workers (target {rule})",
            )
        elif best:
            hint = f"--{peer} or --compare"
            if peer == "litellm":
                hint += (
                    f"; its one-worker reference, {LITELLM_REFERENCE_RPS:.0f} req/s, "
                    "is not comparable"
                )
            lines.append(
                f"  [not judged] unary throughput vs {peer}: {best:.0f} req/s; run with {hint}"
            )
    big = _find(rows, "1000 streams", "gateway")
    if big:
        verdict(big.errors == 0, f"1000 streams: {big.errors} errors (target 0)")
        if big.peak_pss_mb is not None:
            verdict(
                big.peak_pss_mb <= 150,
                f"1000 streams: peak PSS {big.peak_pss_mb:.0f} MB, all processes (target <= 150)",
            )
    return lines


def _best_rps(rows: list[Row], target: str) -> float:
    """A target's best unary throughput with more than one caller."""
    return max(
        (
            r.rps or 0
            for r in rows
            if r.target == target and r.mode == "unary" and r.concurrency > 1
        ),
        default=0,
    )


def _relay_times(
    attr: str, factor: float = 1.0, plus: float = 0.0, loads: str = ""
) -> Callable[[list[Row], str], float | None]:
    """A target line at the relay's figure for a load (those whose name starts
    with `loads`), times `factor` plus `plus`."""

    def line(rows: list[Row], load: str) -> float | None:
        if not load.startswith(loads) or " x" in load:  # not the split's short streams
            return None
        relay = _find(rows, load, "relay")
        value = getattr(relay, attr) if relay else None
        return None if value is None else value * factor + plus

    return line


def _fixed(value: float, loads: str = "") -> Callable[[list[Row], str], float | None]:
    """A target line at `value` for the loads whose name starts with `loads`."""
    return lambda _rows, load: value if load.startswith(loads) else None


_Panel = tuple[str, str, "Callable[[Row], bool]", "Callable[[list[Row], str], float | None] | None"]


def write_chart(rows: list[Row], path: Path) -> Path | None:
    """A PNG with one panel per figure of merit, issue 16's target (where it
    has one) drawn as a dashed line over each load; None without matplotlib."""
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels: list[_Panel] = [
        (
            "unary latency p50 (ms), c=1",
            "p50_ms",
            lambda r: r.load == "unary c=1",
            _relay_times("p50_ms", plus=0.3),
        ),
        (
            "unary throughput (req/s)",
            "rps",
            lambda r: r.mode == "unary" and r.concurrency > 1,
            _relay_times("rps", factor=0.8, loads="unary c=32"),
        ),
        (
            "stream TTFT p50 (ms)",
            "ttft_p50_ms",
            lambda r: r.mode == "stream",
            _relay_times("ttft_p50_ms", plus=10, loads="200 "),
        ),
        (
            "stream total time per wave (s)",
            "total_s",
            lambda r: r.mode == "stream",
            _relay_times("total_s", factor=1.1, loads="200 "),
        ),
        (
            "peak PSS, whole tree (MB)",
            "peak_pss_mb",
            lambda r: r.peak_pss_mb is not None,
            _fixed(150, loads="1000 streams"),
        ),
        (
            "target CPU ms per unary call",
            "cpu_ms",
            lambda r: r.mode == "unary" and r.cpu_ms is not None,
            None,
        ),
        (
            "target CPU ms per stream",
            "cpu_ms",
            lambda r: r.mode == "stream" and r.cpu_ms is not None,
            None,
        ),
        (
            "stream set-up CPU (ms)",
            "setup_cpu_ms",
            lambda r: r.setup_cpu_ms is not None,
            _fixed(0.5),
        ),
    ]
    panels = [p for p in panels if any(p[2](r) for r in rows)]
    targets = sorted({r.target for r in rows}, key=_target_rank)
    columns = math.ceil(len(panels) / 2)
    figure, grid = plt.subplots(2, columns, figsize=(4.2 * columns, 7.6), squeeze=False)
    axes = list(grid.flat)
    for axis in axes[len(panels) :]:
        axis.set_visible(False)
    for axis, (title, attr, keep, target_line) in zip(axes, panels, strict=False):
        loads = list(dict.fromkeys(r.load for r in rows if keep(r)))
        width = 0.8 / max(1, len(targets))
        drawn: list[float] = []
        for i, target in enumerate(targets):
            values = []
            for load in loads:
                row = _find(rows, load, target)
                values.append(getattr(row, attr) or 0 if row else 0)
            axis.bar([x + i * width for x in range(len(loads))], values, width, label=target)
            drawn += [v for v in values if v > 0]
        if drawn and max(drawn) > 30 * min(drawn):
            # A peer tens of times slower would flatten every other bar.
            axis.set_yscale("log")
        for x, load in enumerate(loads):
            level = target_line(rows, load) if target_line else None
            if level is not None:
                axis.hlines(
                    level,
                    x - width / 2,
                    x + 0.8 - width / 2,
                    colors="black",
                    linestyles="dashed",
                    linewidth=1,
                )
        axis.set_xticks([x + width * (len(targets) - 1) / 2 for x in range(len(loads))])
        axis.set_xticklabels(loads, fontsize=7, rotation=20)
        axis.set_title(title, fontsize=9)
    axes[0].legend(fontsize=8)
    figure.text(
        0.01,
        0.005,
        "dashed: issue 16's target for the gateway (from the relay's figure "
        "in the same run, or fixed)",
        fontsize=7,
    )
    figure.tight_layout(rect=(0, 0.02, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _target_rank(target: str) -> int:
    return TARGET_ORDER.index(target) if target in TARGET_ORDER else len(TARGET_ORDER)


def _quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile of sorted `values`."""
    if not values:
        return None
    return values[max(0, math.ceil(q * len(values)) - 1)]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000
