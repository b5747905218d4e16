"""Serve on every core: worker processes sharing one port through SO_REUSEPORT.

Python runs one thread of code at a time, so one process uses one core. The
parent starts N `llmgateway serve --workers 1 --reuse-port` children on the
same address and lets the kernel spread connections among them. It
supervises them as gunicorn's arbiter or systemd would: a worker that dies is
logged and replaced after a backoff (service/llmgateway/server/process/restart_policy.py) while the
others keep serving their calls. More deaths than the crash limit within the
window is a crash loop, and what it does depends on the other workers:
while one of them is up and serving, the slot that keeps dying is "degraded"
and retried at the longest backoff (30 s), with an ERROR each time, until a
worker of it stays up (a replacement that cannot reach the database during an
outage exits 2 each time, while the others answer UNAVAILABLE and recover with
the database); when no worker is up (every slot is dying), the parent stops
them all and exits 1, or 2 when a slot's last death was a configuration error
(exit code 2). A worker of the first start that exits 2 stops them all at
once with 2, as one worker would. SIGTERM/SIGINT are forwarded so each worker
drains; nothing is restarted after that, and a worker still running
`shutdown_delay + shutdown_grace` + 10 s after the stop began is killed
(SIGKILL), so a worker stuck in its shutdown cannot hang the parent. With a
metrics address the parent serves /metrics, summed over the workers
(service/llmgateway/server/observability/metrics.py), and marks each dead worker's live gauges dead.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmgateway.server.config import ConfigError
from llmgateway.server.process.ports import check_port_is_free
from llmgateway.server.process.restart_policy import RestartPolicy, Restarts
from llmgateway.server.process.startup_summary import TOKEN_ENV, make_token

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from types import FrameType

    from llmgateway.server.observability.metrics import MultiprocessMetrics

logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.1
_PARENT_ENV = "LLMGATEWAY_WORKER_PARENT_PID"
_PR_SET_PDEATHSIG = 1
# What `llmgateway serve` exits with on a configuration error (service/llmgateway/server/process/cli.py).
_CONFIG_ERROR_EXIT = 2
# How long past its own bound (shutdown_delay + shutdown_grace) a worker may
# take to stop before the parent kills it: the worker bounds its stop to about
# the grace plus a few seconds (service/llmgateway/server/process/server.py).
_KILL_MARGIN = 10.0


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
    restart_policy: RestartPolicy | None = None,
    shutdown_seconds: float = 30.0,
) -> int:
    """Run `workers` gateway processes on `address` until signalled; the exit code.
    `shutdown_seconds` (shutdown_delay + shutdown_grace) is how long a worker
    may take to stop; one still running 10 s after that is killed."""
    _check_port_is_free(address)
    metrics = None
    if metrics_address is not None:
        from llmgateway.server.observability.metrics import MultiprocessMetrics

        metrics = MultiprocessMetrics(metrics_address)
        logger.info("metrics of all workers at http://%s/metrics", metrics.display_address)
    # The start-up summary is said by one worker: the first to start takes it.
    summary_token = make_token()
    try:
        start = _starter(address, config, log_level, log_format, metrics, summary_token)
        supervisor = Supervisor(
            start,
            restart_policy or RestartPolicy(),
            metrics,
            kill_after=shutdown_seconds + _KILL_MARGIN,
        )
        return supervisor.run(workers, address)
    finally:
        os.close(summary_token)
        if metrics is not None:
            metrics.close()


def _starter(
    address: str,
    config: Path | None,
    log_level: str,
    log_format: str,
    metrics: MultiprocessMetrics | None,
    summary_token: int,
) -> Callable[[], subprocess.Popen[bytes]]:
    """How to start one worker."""
    command = [
        sys.executable,
        "-m",
        "llmgateway.server.process.cli",
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
    env = {**os.environ, _PARENT_ENV: str(os.getpid()), TOKEN_ENV: str(summary_token)}
    if metrics is not None:
        command += ["--metrics-address", metrics.address]
        env.update(metrics.worker_environment())
    return lambda: subprocess.Popen(  # noqa: S603  # our own CLI
        command, env=env, pass_fds=(summary_token,)
    )


@dataclass(slots=True)
class _Slot:
    """One of the N workers the parent keeps running."""

    index: int
    process: subprocess.Popen[bytes] | None
    started: float
    # The pid it replaces, and when to start it, while it waits to be restarted.
    replaces: int | None = None
    restart_at: float | None = None
    # Set when it dies, cleared once a worker of it stays up `stable_after`:
    # while set, its worker (if any) is not counted as serving.
    last_death: int | None = None
    # Passed the crash limit while other workers served: retried at the
    # longest backoff, with an ERROR per death, until a worker of it stays up.
    degraded: bool = False


class Supervisor:
    """Keeps N workers running until the operator stops them or they all crash-loop."""

    def __init__(
        self,
        start: Callable[[], subprocess.Popen[bytes]],
        policy: RestartPolicy,
        metrics: MultiprocessMetrics | None,
        *,
        kill_after: float = 30.0 + _KILL_MARGIN,
    ) -> None:
        self._start = start
        # Seconds after the stop began when a worker still running is killed.
        self._kill_after = kill_after
        self._stop_began: float | None = None
        self._killed: set[int] = set()
        self._restarts = Restarts(policy)
        self._metrics = metrics
        self._slots: list[_Slot] = []
        # Signals the operator sent; the first one stops everything.
        self._asked: list[int] = []
        # Set when the parent gives up by itself: the code it will exit with.
        self._giving_up: int | None = None
        # Exit codes of workers that ended after the stop began.
        self._final_codes: list[int] = []

    def run(self, workers: int, address: str) -> int:
        """Start `workers` workers and supervise them; the parent's exit code."""
        now = time.monotonic()
        self._slots = [_Slot(i, self._start(), now) for i in range(workers)]
        logger.info(
            "started %d workers on %s (pids %s)",
            workers,
            address,
            ", ".join(str(pid) for pid in self._pids()),
        )
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        while not self._finished():
            now = time.monotonic()
            for slot in self._slots:
                self._check(slot, now)
            self._kill_stragglers(now)
            time.sleep(_POLL_SECONDS)
        return self._exit_code()

    # -- the loop ----------------------------------------------------------------

    def _check(self, slot: _Slot, now: float) -> None:
        process = slot.process
        if process is not None and process.poll() is not None:
            slot.process = None
            self._died(slot, process.pid, process.returncode, now)
        elif process is not None and slot.last_death is not None:
            self._maybe_recovered(slot, process.pid, now)
        if slot.restart_at is not None and now >= slot.restart_at and not self._stopping():
            self._replace(slot, now)

    def _maybe_recovered(self, slot: _Slot, pid: int, now: float) -> None:
        """A worker that stays up `stable_after` ends its slot's run of deaths."""
        stable_after = self._restarts.policy.stable_after
        if now - slot.started < stable_after:
            return
        slot.last_death = None
        if slot.degraded:
            slot.degraded = False
            logger.info(
                "worker %d has stayed up %.0f s: its slot is healthy again", pid, stable_after
            )

    def _died(self, slot: _Slot, pid: int, code: int, now: float) -> None:
        if self._metrics is not None:
            # Its in-flight gauge would otherwise count its last calls forever.
            self._metrics.worker_exited(pid)
        if self._stopping():
            self._final_codes.append(code)
            return
        death = f"worker {pid} {_describe(code)}"
        if code == _CONFIG_ERROR_EXIT:
            death += ", a configuration error (its message is above)"
            if slot.replaces is None:
                # At start-up, as with one worker: the configuration is wrong.
                logger.error("%s: stopping the other workers", death)
                self._give_up(_CONFIG_ERROR_EXIT)
                return
            # A replacement that finds the configuration wrong is retried like
            # any death (what it needs, the database say, may be back soon):
            # at the longest backoff while other workers serve, and it ends the
            # gateway with code 2 once every worker is dying.
        self._schedule(slot, death, pid, now, code)

    def _schedule(
        self, slot: _Slot, death: str, replaces: int | None, now: float, code: int = 1
    ) -> None:
        """Plan the restart of `slot`, whose worker just died (`death` says how,
        `code` is its exit code), unless that makes a crash loop with no other
        worker serving."""
        uptime = now - slot.started
        policy = self._restarts.policy
        if uptime >= policy.stable_after:
            # It was healthy: a fresh incident, whatever came before.
            slot.degraded = False
        slot.last_death = code
        delay = self._restarts.after_death(slot.index, now, uptime)
        if delay is None and not self._others_serve(slot):
            logger.error(
                "%s: more than %d worker deaths within %.0f s and no worker up to serve is a "
                "crash loop; stopping the other workers",
                death,
                policy.crash_limit,
                policy.crash_window,
            )
            self._give_up(self._crash_loop_code())
            return
        if delay is None:
            delay = self._restarts.at_longest_backoff(slot.index)
            logger.error(
                "%s: more than %d worker deaths within %.0f s, while other workers serve: "
                "retrying this one every %.1f s until it stays up",
                death,
                policy.crash_limit,
                policy.crash_window,
                delay,
            )
            slot.degraded = True
        elif slot.degraded:
            logger.error(
                "%s; its slot keeps dying while other workers serve: starting a replacement "
                "in %.1f s",
                death,
                delay,
            )
        else:
            logger.warning(
                "%s; starting a replacement in %.1f s (%d of at most %d deaths within %.0f s)",
                death,
                delay,
                self._restarts.recent_deaths(),
                policy.crash_limit,
                policy.crash_window,
            )
        slot.replaces = replaces
        slot.restart_at = now + delay

    def _replace(self, slot: _Slot, now: float) -> None:
        slot.restart_at = None
        slot.started = now
        try:
            slot.process = self._start()
        except OSError as exc:
            # Out of processes or memory, say: a death at birth, retried likewise.
            death = f"could not start a worker in place of {slot.replaces}: {exc.strerror or exc}"
            self._schedule(slot, death, slot.replaces, now)
            return
        logger.info("started worker %d in place of %s", slot.process.pid, slot.replaces)
        if self._asked:
            # The stop came while it was being started, past the loop's check.
            slot.process.send_signal(self._asked[0])

    def _others_serve(self, dead: _Slot) -> bool:
        """Whether a worker of another slot is up and past any run of deaths:
        one that never died, or has stayed up `stable_after` since."""
        return any(
            slot is not dead
            and slot.process is not None
            and slot.process.poll() is None
            and slot.last_death is None
            for slot in self._slots
        )

    def _crash_loop_code(self) -> int:
        """2 when a slot last died of a configuration error (its replacement
        would find it wrong again), else 1."""
        dying = {slot.last_death for slot in self._slots}
        return _CONFIG_ERROR_EXIT if _CONFIG_ERROR_EXIT in dying else 1

    def _give_up(self, code: int) -> None:
        self._giving_up = code
        self._begin_stop()
        self._forward(signal.SIGTERM)

    def _begin_stop(self) -> None:
        if self._stop_began is None:
            self._stop_began = time.monotonic()

    def _kill_stragglers(self, now: float) -> None:
        """Kill the workers still running `kill_after` s after the stop began."""
        if self._stop_began is None or now < self._stop_began + self._kill_after:
            return
        for slot in self._slots:
            process = slot.process
            if process is None or process.pid in self._killed or process.poll() is not None:
                continue
            logger.error(
                "worker %d did not stop within %.1f s of being asked to; killing it (SIGKILL)",
                process.pid,
                self._kill_after,
            )
            self._killed.add(process.pid)
            process.kill()

    def _finished(self) -> bool:
        if any(slot.process is not None for slot in self._slots):
            return False
        return self._stopping()

    def _stopping(self) -> bool:
        return bool(self._asked) or self._giving_up is not None

    def _exit_code(self) -> int:
        if self._giving_up is not None:
            return self._giving_up
        # A worker still starting up when the operator's signal came has no
        # handler yet and dies of it: that is the stop that was asked for.
        clean = {0, *(-signum for signum in self._asked)}
        if any(code not in clean for code in self._final_codes):
            logger.error("workers exited with codes %s while stopping", self._final_codes)
            return 1
        return 0

    # -- signals -------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self._asked.append(signum)
        self._begin_stop()
        self._forward(signum)

    def _forward(self, signum: int) -> None:
        for slot in self._slots:
            slot.restart_at = None
            if slot.process is not None and slot.process.returncode is None:
                slot.process.send_signal(signum)

    def _pids(self) -> list[int]:
        return [slot.process.pid for slot in self._slots if slot.process is not None]


def _describe(code: int) -> str:
    """How a worker ended, as Popen reports it (negative: killed by that signal)."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _check_port_is_free(address: str) -> None:
    """Fail now if something already listens there: with SO_REUSEPORT the
    workers would otherwise share the port with it silently."""
    if address.rpartition(":")[2] == "0":
        raise ConfigError(
            "several workers need a fixed port; pass --address HOST:PORT or --workers 1"
        )
    check_port_is_free(address)
