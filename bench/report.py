"""Benchmark figures: one row per (load, target), tables, target checks, a chart."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
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
]


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
    """The issue's targets, each marked met or missed, with the figures behind it."""
    lines = ["targets (2-core machine, fake upstream on loopback):"]

    def verdict(ok: bool, text: str) -> None:
        lines.append(f"  [{'met' if ok else 'MISSED'}] {text}")

    direct, gateway = _find(rows, "unary c=1", "direct"), _find(rows, "unary c=1", "gateway")
    if direct and gateway and direct.p50_ms is not None and gateway.p50_ms is not None:
        added = gateway.p50_ms - direct.p50_ms
        verdict(added <= 0.5, f"unary added latency p50 at c=1: {added:.3f} ms (target <= 0.5)")
    best = max(
        (
            r.rps or 0
            for r in rows
            if r.target == "gateway" and r.mode == "unary" and r.concurrency > 1
        ),
        default=0,
    )
    litellm = max(
        (
            r.rps or 0
            for r in rows
            if r.target == "litellm" and r.mode == "unary" and r.concurrency > 1
        ),
        default=0,
    )
    if best and litellm:
        verdict(
            best >= 15 * litellm,
            f"unary throughput: {best:.0f} req/s = {best / litellm:.1f}x LiteLLM with the same "
            f"workers ({litellm:.0f} req/s; target >= 15x)",
        )
    elif best:
        lines.append(
            f"  [not judged] unary throughput: {best:.0f} req/s; the target compares with "
            "LiteLLM on the same workers: run with --litellm (its one-worker reference, "
            f"{LITELLM_REFERENCE_RPS:.0f} req/s, is not comparable)"
        )
    direct, gateway = _find(rows, "200 streams", "direct"), _find(rows, "200 streams", "gateway")
    if (
        direct is not None
        and gateway is not None
        and direct.ttft_p50_ms is not None
        and gateway.ttft_p50_ms is not None
        and direct.total_s
        and gateway.total_s is not None
    ):
        gap = gateway.ttft_p50_ms - direct.ttft_p50_ms
        verdict(gap <= 10, f"200 streams: TTFT p50 {gap:+.1f} ms against direct (target <= 10)")
        ratio = gateway.total_s / direct.total_s
        verdict(ratio <= 1.5, f"200 streams: total time {ratio:.2f}x direct (target <= 1.5x)")
    big = _find(rows, "1000 streams", "gateway")
    if big:
        verdict(big.errors == 0, f"1000 streams: {big.errors} errors (target 0)")
        if big.peak_pss_mb is not None:
            verdict(
                big.peak_pss_mb <= 150,
                f"1000 streams: peak PSS {big.peak_pss_mb:.0f} MB, all processes (target <= 150)",
            )
        if big.peak_rss_mb is not None:
            verdict(
                big.peak_rss_mb <= 150,
                f"1000 streams: peak RSS summed over processes {big.peak_rss_mb:.0f} MB, shared "
                "pages counted once per process (target <= 150)",
            )
    return lines


def write_chart(rows: list[Row], path: Path) -> Path | None:
    """A PNG with one panel per figure of merit; None when matplotlib is missing."""
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels: list[tuple[str, str, Callable[[Row], bool]]] = [
        ("unary latency p50 (ms), c=1", "p50_ms", lambda r: r.load == "unary c=1"),
        ("unary throughput (req/s)", "rps", lambda r: r.mode == "unary" and r.concurrency > 1),
        ("stream TTFT p50 (ms)", "ttft_p50_ms", lambda r: r.mode == "stream"),
        ("stream total time per wave (s)", "total_s", lambda r: r.mode == "stream"),
        ("peak gateway/proxy RSS (MB)", "peak_rss_mb", lambda r: r.peak_rss_mb is not None),
    ]
    targets = sorted({r.target for r in rows}, key=["direct", "gateway", "litellm"].index)
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    for axis, (title, attr, keep) in zip(axes, panels, strict=True):
        loads = list(dict.fromkeys(r.load for r in rows if keep(r)))
        width = 0.8 / max(1, len(targets))
        for i, target in enumerate(targets):
            values = []
            for load in loads:
                row = _find(rows, load, target)
                values.append(getattr(row, attr) or 0 if row else 0)
            axis.bar([x + i * width for x in range(len(loads))], values, width, label=target)
        axis.set_xticks([x + width * (len(targets) - 1) / 2 for x in range(len(loads))])
        axis.set_xticklabels(loads, fontsize=7, rotation=20)
        axis.set_title(title, fontsize=9)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile of sorted `values`."""
    if not values:
        return None
    return values[max(0, math.ceil(q * len(values)) - 1)]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000
