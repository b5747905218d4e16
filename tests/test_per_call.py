"""bench/per_call.py's pure parts: CPU of a process tree, medians, A/B options."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bench.per_call import Figures, _env_pairs, medians, tree_cpu_seconds


def _figures(variant: str, load: str, cpu: float, p50: float | None) -> Figures:
    return Figures(variant, load, 100, 0, cpu, p50, None, None, None, 1.0)


# Spins for 0.3 s of CPU, then waits for a line on stdin.
BUSY = (
    "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ninput()"
)


def test_the_tree_cpu_counts_a_child_and_never_goes_back() -> None:
    before = tree_cpu_seconds(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", BUSY], stdin=subprocess.PIPE)
    try:
        while tree_cpu_seconds(child.pid) < 0.25:
            assert child.poll() is None
            time.sleep(0.01)
        # The child is in this process's tree while it lives.
        assert tree_cpu_seconds(os.getpid()) - before >= 0.25
    finally:
        child.communicate(b"\n")
    assert tree_cpu_seconds(os.getpid()) >= before


def test_medians_are_per_variant_and_load_and_skip_missing_figures() -> None:
    results = [
        _figures("A", "unary c=1", 3.0, 1.0),
        _figures("B", "unary c=1", 2.0, None),
        _figures("A", "unary c=1", 1.0, 3.0),
        _figures("A", "unary c=1", 2.0, 2.0),
        _figures("B", "unary c=1", 4.0, None),
    ]
    a, b = medians(results)
    assert (a.variant, a.cpu_ms_per_call, a.p50_ms) == ("A", 2.0, 2.0)
    assert (b.variant, b.cpu_ms_per_call, b.p50_ms) == ("B", 3.0, None)


def test_env_pairs_keep_everything_after_the_first_equals_sign() -> None:
    assert _env_pairs(["A=1", "PYTHONPATH=/x:/y=z"]) == {"A": "1", "PYTHONPATH": "/x:/y=z"}
    for bad in ("NOVALUE", "=1"):
        with pytest.raises(SystemExit):
            _env_pairs([bad])
