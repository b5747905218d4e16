"""Serve on every core: worker processes sharing one port through SO_REUSEPORT.

Python runs one thread of code at a time, so one process uses one core. The
parent starts N `llmgateway serve --workers 1 --reuse-port` children on the
same address, lets the kernel spread connections among them, forwards
SIGTERM/SIGINT so each drains, and exits non-zero if a worker dies on its own.
With a metrics address the parent serves /metrics, summed over the workers
(service/metrics.py).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from service.config import ConfigError

if TYPE_CHECKING:
    from pathlib import Path
    from types import FrameType

    from service.metrics import MultiprocessMetrics

logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.2
_PARENT_ENV = "LLMGATEWAY_WORKER_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a worker: ask the kernel for SIGTERM when the parent dies, so a
    killed parent never leaves workers serving the port on their own."""
    parent = os.environ.get(_PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        logger.warning("could not arrange to stop with the parent process")
    if os.getppid() != int(parent):
        # The parent died before the request took effect.
        raise SystemExit(1)


def default_workers() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_workers(
    address: str,
    workers: int,
    config: Path | None,
    log_level: str,
    *,
    log_format: str = "text",
    metrics_address: str | None = None,
) -> int:
    """Run `workers` gateway processes on `address` until signalled; the exit code."""
    _check_port_is_free(address)
    metrics = None
    if metrics_address is not None:
        from service.metrics import MultiprocessMetrics

        metrics = MultiprocessMetrics(metrics_address)
        logger.info("metrics of all workers at http://%s/metrics", metrics.display_address)
    try:
        return _run(address, workers, config, log_level, log_format, metrics)
    finally:
        if metrics is not None:
            metrics.close()


def _run(
    address: str,
    workers: int,
    config: Path | None,
    log_level: str,
    log_format: str,
    metrics: MultiprocessMetrics | None,
) -> int:
    command = [
        sys.executable,
        "-m",
        "service.cli",
        "serve",
        "--address",
        address,
        "--workers",
        "1",
        "--reuse-port",
        "--log-level",
        log_level,
        "--log-format",
        log_format,
    ]
    if config is not None:
        command += ["--config", str(config)]
    env = {**os.environ, _PARENT_ENV: str(os.getpid())}
    if metrics is not None:
        command += ["--metrics-address", metrics.address]
        env.update(metrics.worker_environment())
    children = [subprocess.Popen(command, env=env) for _ in range(workers)]  # noqa: S603  # our own CLI
    logger.info(
        "started %d workers on %s (pids %s)",
        workers,
        address,
        ", ".join(str(c.pid) for c in children),
    )
    stopping = False
    # Set when the operator asked for the stop (not when a dying worker did).
    asked: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        del frame
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        asked.append(signum)
        forward(signum, frame)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    failed = False
    marked: set[int] = set()
    while any(child.poll() is None for child in children):
        died = [c for c in children if c.poll() is not None]
        if metrics is not None:
            for child in died:
                if child.pid not in marked:
                    metrics.worker_exited(child.pid)
                    marked.add(child.pid)
        if died and not stopping:
            # A worker that exits on its own, even with 0, leaves the port
            # half-served: stop them all, loudly.
            logger.error(
                "worker %d exited with %s; stopping the others", died[0].pid, died[0].returncode
            )
            failed = True
            forward(signal.SIGTERM, None)
        time.sleep(_POLL_SECONDS)
    codes = [child.returncode for child in children]
    # A worker still starting up when the operator's signal came has no handler
    # yet and dies of it: that is the stop that was asked for, not a failure.
    clean = {0, *(-signum for signum in asked)}
    if failed or any(code not in clean for code in codes):
        logger.error("workers exited with codes %s", codes)
        return 1
    return 0


def _check_port_is_free(address: str) -> None:
    """Fail now if something already listens there: with SO_REUSEPORT the
    workers would otherwise share the port with it silently."""
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104  # the operator chose the address
    port = int(port_text)
    if port == 0:
        raise ConfigError(
            "several workers need a fixed port; pass --address HOST:PORT or --workers 1"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR: connections of a previous run lingering in TIME_WAIT must
        # not block a restart; on Linux a live listener still refuses the bind.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {address}: {exc.strerror}") from exc
