"""Worker supervision: `serve --workers N` replaces a worker that dies, keeps the
others serving, and gives up only on a crash loop or a configuration error."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from bench import worker_kill
from bench.processes import free_port
from bench.worker_kill import LogEntry, Serve, alive
from llmgateway.server.process.restart_policy import RestartPolicy, Restarts
from llmgateway.server.process.startup_summary import SUMMARY_LINE, StartupSummary, make_token
from llmgateway.server.process.workers import Supervisor

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from llmgateway.testing.fake_upstream import FakeUpstream


# -- the start-up summary, said by one worker (pure) ------------------------------------


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


@pytest.fixture
def root_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Lines]:
    """What the root logger's one handler prints, at INFO and above (whatever
    levels earlier tests left on the gateway's loggers)."""
    lines = _Lines()
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [lines])
    names = (
        "",
        "llmgateway",
        "llmgateway.server.process.server",
        "llmgateway.server.state.runtime",
    )
    loggers = [logging.getLogger(name) for name in names]
    before = [(log.level, log.disabled) for log in loggers]
    for log in loggers:
        log.setLevel(logging.INFO if log is root else logging.NOTSET)  # setLevel clears the caches
        log.disabled = False
    yield lines
    for log, (level, disabled) in zip(loggers, before, strict=True):
        log.setLevel(level)
        log.disabled = disabled


def test_the_summary_is_said_by_the_first_worker_and_other_warnings_by_every_worker(
    root_lines: _Lines,
) -> None:
    token = make_token()
    first, second = StartupSummary(os.dup(token)), StartupSummary(os.dup(token))
    os.close(token)
    log = logging.getLogger("llmgateway.server.process.server")
    for worker in (first, second):
        worker.hold()
        log.info("Z.AI: configured", extra=SUMMARY_LINE)
        log.warning("OPEN GATEWAY: no caller keys", extra=SUMMARY_LINE)
        logging.getLogger("llmgateway.server.state.runtime").info(
            "state database x (sqlite)", extra={"startup_summary": True}
        )
        log.warning("connecting to the state database took 9 s")  # this worker's own
        worker.release(started=True)
    assert root_lines.lines == [
        # The first worker: its own warning as it happened, then the summary once started.
        "WARNING connecting to the state database took 9 s",
        "INFO Z.AI: configured",
        "WARNING OPEN GATEWAY: no caller keys",
        "INFO state database x (sqlite)",
        # The second: its own warning only; the summary stays at DEBUG.
        "WARNING connecting to the state database took 9 s",
    ]


def test_a_worker_that_fails_to_start_says_what_it_held(root_lines: _Lines) -> None:
    token = make_token()
    first, second = StartupSummary(os.dup(token)), StartupSummary(os.dup(token))
    os.close(token)
    first.hold()
    first.release(started=True)  # takes the token
    second.hold()
    logging.getLogger("llmgateway").info("Z.AI: configured", extra=SUMMARY_LINE)
    second.release(started=False)
    assert root_lines.lines == ["INFO Z.AI: configured"]


# -- when to restart (pure) -----------------------------------------------------------


def test_a_worker_dying_young_again_and_again_waits_twice_as_long_each_time() -> None:
    restarts = Restarts(RestartPolicy(crash_limit=100, crash_window=1.0))
    delays = [restarts.after_death(0, now=10.0 * i, uptime=1.0) for i in range(10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


def test_a_worker_that_stayed_up_a_while_is_restarted_at_once_again() -> None:
    restarts = Restarts(RestartPolicy(crash_limit=100, crash_window=1.0))
    for i in range(4):
        restarts.after_death(0, now=10.0 * i, uptime=1.0)
    assert restarts.after_death(0, now=100.0, uptime=30.0) == 0.5
    assert restarts.after_death(0, now=110.0, uptime=1.0) == 1.0


def test_each_worker_slot_has_its_own_backoff() -> None:
    restarts = Restarts(RestartPolicy(crash_limit=100, crash_window=1.0))
    assert restarts.after_death(0, now=0.0, uptime=1.0) == 0.5
    assert restarts.after_death(0, now=10.0, uptime=1.0) == 1.0
    assert restarts.after_death(1, now=20.0, uptime=1.0) == 0.5


def test_more_deaths_than_the_limit_within_the_window_is_a_crash_loop() -> None:
    restarts = Restarts(RestartPolicy(crash_limit=3, crash_window=60.0))
    # Deaths of any worker count together.
    assert restarts.after_death(0, now=0.0, uptime=1.0) is not None
    assert restarts.after_death(1, now=10.0, uptime=1.0) is not None
    assert restarts.after_death(0, now=20.0, uptime=1.0) is not None
    assert restarts.after_death(1, now=30.0, uptime=1.0) is None


def test_deaths_older_than_the_window_are_forgotten() -> None:
    restarts = Restarts(RestartPolicy(crash_limit=2, crash_window=60.0))
    assert restarts.after_death(0, now=0.0, uptime=1.0) is not None
    assert restarts.after_death(0, now=30.0, uptime=1.0) is not None
    # The first death is 60 s old now: two in the window, not three.
    assert restarts.after_death(0, now=60.0, uptime=1.0) is not None
    assert restarts.recent_deaths() == 2
    assert restarts.after_death(0, now=61.0, uptime=1.0) is None


def test_a_slot_past_the_crash_limit_stays_at_the_longest_backoff_until_it_stays_up() -> None:
    restarts = Restarts(RestartPolicy(crash_limit=2, crash_window=60.0, max_backoff=30.0))
    assert restarts.after_death(0, now=0.0, uptime=1.0) == 0.5
    assert restarts.after_death(0, now=1.0, uptime=1.0) == 1.0
    assert restarts.after_death(0, now=2.0, uptime=1.0) is None
    assert restarts.at_longest_backoff(0) == 30.0
    # Its deaths leave the window: no crash loop, yet still the longest backoff.
    assert restarts.after_death(0, now=100.0, uptime=1.0) == 30.0
    # A worker of it stayed up: a fresh incident.
    assert restarts.after_death(0, now=200.0, uptime=30.0) == 0.5


# -- the supervisor, with stand-in worker processes ------------------------------------


def _supervise(
    start: Callable[[], subprocess.Popen[bytes]],
    policy: RestartPolicy,
    *,
    workers: int = 1,
    kill_after: float = 40.0,
) -> int:
    """Run the supervisor of `workers` workers in this (the main) thread; its exit code."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        supervisor = Supervisor(start, policy, None, kill_after=kill_after)
        return supervisor.run(workers, "127.0.0.1:1")
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _process(code: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])


def test_a_worker_that_cannot_even_be_started_counts_as_a_death(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        if started:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        started.append(_process(3))
        return started[-1]

    caplog.set_level(logging.INFO, "llmgateway.server.process.workers")
    code = _supervise(start, RestartPolicy(crash_limit=1, initial_backoff=0.01))
    assert code == 1
    pid = started[0].pid
    died = (
        f"worker {pid} exited with code 3; starting a replacement in 0.0 s "
        "(1 of at most 1 deaths within 60 s)"
    )
    not_started = (
        f"could not start a worker in place of {pid}: Resource temporarily unavailable: more "
        "than 1 worker deaths within 60 s and no worker up to serve is a crash loop; stopping "
        "the other workers"
    )
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == [died, not_started]


def test_a_worker_exiting_with_a_configuration_error_is_not_restarted() -> None:
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        started.append(_process(2))
        return started[-1]

    assert _supervise(start, RestartPolicy(initial_backoff=0.01)) == 2
    assert len(started) == 1


def _serving() -> subprocess.Popen[bytes]:
    """A stand-in worker that stays up until it is signalled."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def _deaf_to_sigterm() -> subprocess.Popen[bytes]:
    """A stand-in worker stuck in its shutdown: it ignores SIGTERM (and SIGINT).
    Returned once the handlers are in place."""
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "print('deaf', flush=True)\n"
        "time.sleep(600)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout is not None
    with process.stdout:  # it prints nothing more
        assert process.stdout.readline() == b"deaf\n"
    return process


def test_a_slot_that_keeps_dying_is_retried_at_the_longest_backoff_while_another_serves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two workers: one serves, every worker of the other slot dies at once. The
    dying slot is replaced again and again, past the crash limit, at the longest
    backoff and with an ERROR each time, and the serving worker is left alone.
    Once it dies too, no worker is up: that is a crash loop, and the gateway
    exits 1."""
    serving: list[subprocess.Popen[bytes]] = []
    dying: list[subprocess.Popen[bytes]] = []
    limit, deaths_while_serving = 2, 8

    def start() -> subprocess.Popen[bytes]:
        if not serving:
            serving.append(_serving())
            return serving[0]
        if len(dying) == deaths_while_serving:
            # Now every worker is dying.
            serving[0].kill()
            serving[0].wait()
        dying.append(_process(3))
        return dying[-1]

    caplog.set_level(logging.INFO, "llmgateway.server.process.workers")
    policy = RestartPolicy(crash_limit=limit, initial_backoff=0.01, max_backoff=0.1)
    code = _supervise(start, policy, workers=2)
    assert code == 1
    # The serving worker lived through more deaths than the limit, and was only
    # stopped by its own death (not signalled by the parent).
    assert serving[0].returncode == -signal.SIGKILL
    assert len(dying) == deaths_while_serving + 1
    died = {
        d.pid: r
        for d in dying
        for r in caplog.records
        if r.getMessage().startswith(f"worker {d.pid} ")
    }
    assert sorted(died) == sorted(d.pid for d in dying[:-1])
    messages = [died[d.pid].getMessage() for d in dying[:-1]]
    levels = [died[d.pid].levelno for d in dying[:-1]]
    assert levels == [logging.WARNING] * limit + [logging.ERROR] * (deaths_while_serving - limit)
    for dead, message in zip(dying[limit:-1], messages[limit:], strict=True):
        assert message == (
            f"worker {dead.pid} exited with code 3: more than 2 worker deaths within 60 s, "
            "while other workers serve: retrying this one every 0.1 s until it stays up"
        )
    given_up = (
        f"worker {serving[0].pid} was killed by SIGKILL: more than 2 worker deaths within 60 s "
        "and no worker up to serve is a crash loop; stopping the other workers"
    )
    crash_loops = [r.getMessage() for r in caplog.records if "crash loop" in r.getMessage()]
    assert crash_loops == [given_up]


def test_a_worker_that_does_not_stop_when_the_gateway_gives_up_is_killed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The gateway gives up (a worker of the first start finds the configuration
    wrong) while the other worker ignores SIGTERM: the parent kills it once the
    bound has passed, and exits with the code it gave up with."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        started.append(_deaf_to_sigterm() if not started else _process(2))
        return started[-1]

    caplog.set_level(logging.INFO, "llmgateway.server.process.workers")
    assert _supervise(start, RestartPolicy(), workers=2, kill_after=0.5) == 2
    deaf = started[0]
    assert deaf.returncode == -signal.SIGKILL
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert (
        f"worker {deaf.pid} did not stop within 0.5 s of being asked to; killing it (SIGKILL)"
        in errors
    )


def test_a_worker_that_does_not_stop_when_the_operator_stops_the_gateway_is_killed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGTERM to the parent while one worker ignores it: that worker is killed
    once the bound has passed, the parent exits, and says the stop was not clean."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        if not started:
            started.append(_deaf_to_sigterm())
        elif len(started) == 1:
            started.append(_process(0))  # exits by itself, so the parent replaces it
        else:
            # The parent is starting the replacement (its handlers are in place):
            # the operator stops the gateway now.
            os.kill(os.getpid(), signal.SIGTERM)
            started.append(_serving())
        return started[-1]

    caplog.set_level(logging.INFO, "llmgateway.server.process.workers")
    code = _supervise(start, RestartPolicy(initial_backoff=0.01), workers=2, kill_after=0.5)
    assert code == 1
    deaf, _, replacement = started
    assert deaf.returncode == -signal.SIGKILL
    assert replacement.returncode == -signal.SIGTERM
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        f"worker {deaf.pid} did not stop within 0.5 s of being asked to; killing it (SIGKILL)",
        "workers exited with codes [-15, -9] while stopping",
    ]


# -- end to end: `serve --workers 2` --------------------------------------------------


async def test_a_killed_worker_is_replaced_while_the_other_serves_its_streams_on(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """kill -9 of one of two workers under 100 streams: the parent keeps running,
    the other worker's streams end OK, a new worker serves new calls, and every
    call a client saw admitted has a ledger row."""
    figures = await worker_kill.run(fake, tmp_path, streams=100)
    print(figures.summary())  # the figures the closing note quotes
    report = "\n" + figures.summary()
    assert figures.streams_started == 100, report
    assert figures.parent_kept_running, report
    assert figures.answered_while_restarting, report
    # The kernel spread the 100 connections over both workers.
    assert figures.ended_on_killed_worker > 0, report
    assert figures.completed_ok > 0, report
    assert figures.survivor_streams_failed == 0, report
    assert not figures.other_outcomes, report
    assert figures.completed_ok + figures.ended_on_killed_worker == 100, report
    assert figures.replacement_pid not in (0, figures.killed_pid, figures.survivor_pid), report
    assert figures.calls_served_by_replacement > 0, report
    # The killed worker's live gauge files were marked dead, and the parent's
    # sum counts every call the survivor and the replacement served.
    assert figures.in_flight_after == 0, report
    assert figures.requests_counted_ok == figures.access_lines, report
    assert figures.tracebacks == 0, report
    assert figures.parent_exit_code == 0, report
    assert figures.calls_lost == 0, report
    # The survivor's calls as they ended; the killed worker's reaped as LOST.
    expected = {"OK": figures.completed_ok, "LOST": figures.ended_on_killed_worker}
    assert figures.ledger_statuses == expected, report


def _gateway_env(fake: FakeUpstream, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **fake.environment(),
        "LLMGATEWAY_DB": str(tmp_path / "state.db"),
        **extra,
    }


def _started_in_place_of(entry: LogEntry) -> bool:
    return entry.message.startswith("started worker ") and " in place of " in entry.message


async def test_a_worker_that_exits_by_itself_is_replaced(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """Even a clean exit leaves the port half-served: the worker is replaced."""
    address = f"127.0.0.1:{free_port()}"
    env = _gateway_env(fake, tmp_path)
    async with Serve.running(["--address", address, "--workers", "2"], env) as serve:
        first, second = await serve.workers_started()
        await serve.listening(first)
        os.kill(first, signal.SIGTERM)  # not from the parent: it drains and exits 0
        replacement = await serve.replacement_of(first)
        await serve.listening(replacement)
        assert serve.process.returncode is None
        assert alive(second)
        await serve.access_line(await worker_kill.one_call(address))
        serve.process.send_signal(signal.SIGTERM)
        code = await serve.exit_code()
    assert code == 0, serve.output()
    died = [e.message for e in serve.entries if e.message.startswith(f"worker {first} ")]
    expected = (
        f"worker {first} exited with code 0; starting a replacement in 0.5 s "
        "(1 of at most 5 deaths within 60 s)"
    )
    assert died == [expected]
    assert serve.tracebacks() == 0


async def _kill_replacements(serve: Serve, first: int, deaths: int) -> list[int]:
    """Kill worker `first`, then each worker started in its place, `deaths` in all,
    each as soon as the parent names it; the pids killed."""
    killed = [first]
    os.kill(first, signal.SIGKILL)
    while len(killed) < deaths:
        replacement = await serve.replacement_of(killed[-1])
        os.kill(replacement, signal.SIGKILL)
        killed.append(replacement)
    return killed


async def _kill_the_worker_that_serves(serve: Serve, address: str, second: int) -> int:
    """Checks that `second` still serves the calls while its sibling slot waits,
    SIGKILLs it and returns serve's exit code once its output has ended."""
    served = await serve.access_line(await worker_kill.one_call(address))
    assert served.pid == second
    assert serve.process.returncode is None
    os.kill(second, signal.SIGKILL)
    code = await serve.exit_code()
    await serve.until(lambda _: serve.ended, "the end of serve's output")
    return code


def _assert_gave_up_when(serve: Serve, second: int) -> None:
    """The gateway gave up when `second`, the last worker up, died, after two
    replacements of its sibling: no third one (the third waits its 30 s)."""
    assert (
        f"worker {second} was killed by SIGKILL: more than 2 worker deaths within 60 s "
        "and no worker up to serve is a crash loop; stopping the other workers"
    ) in [e.message for e in serve.entries]
    assert sum(_started_in_place_of(e) for e in serve.entries) == 2
    assert serve.tracebacks() == 0


async def test_a_slot_that_keeps_dying_waits_while_the_other_serves_and_then_the_gateway_stops(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """Every replacement of one worker dies at once: past the crash limit the
    other worker serves on (a database outage makes replacements fail like this
    while it answers UNAVAILABLE), and the dying slot waits the longest backoff.
    Once the serving worker dies too, no worker is up: a crash loop, exit 1."""
    address = f"127.0.0.1:{free_port()}"
    env = _gateway_env(fake, tmp_path, LLMGATEWAY_WORKER_CRASH_LIMIT="2")
    async with Serve.running(["--address", address, "--workers", "2"], env) as serve:
        first, second = await serve.workers_started()
        await serve.listening(second)
        killed = await _kill_replacements(serve, first, deaths=3)
        await serve.line(
            lambda e: e.message.startswith(f"worker {killed[-1]} "), "the third death logged"
        )
        code = await _kill_the_worker_that_serves(serve, address, second)
    assert code == 1, serve.output()
    messages = [e.message for e in serve.entries]
    assert (
        f"worker {killed[-1]} was killed by SIGKILL: more than 2 worker deaths within 60 s, "
        "while other workers serve: retrying this one every 30.0 s until it stays up"
    ) in messages
    _assert_gave_up_when(serve, second)


async def test_a_worker_that_finds_the_configuration_wrong_at_start_up_stops_the_gateway(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """Exit code 2 from a worker of the first start (here: a database path it
    cannot create) is what one worker would exit with: no restarts, code 2."""
    address = f"127.0.0.1:{free_port()}"
    env = _gateway_env(fake, tmp_path, LLMGATEWAY_DB="/dev/null/state.db")
    async with Serve.running(["--address", address, "--workers", "2"], env) as serve:
        code = await serve.exit_code()
        await serve.until(lambda _: serve.ended, "the end of serve's output")
    assert code == 2, serve.output()
    output = "\n".join(e.raw for e in serve.entries)
    assert "llmgateway: configuration error: cannot create the directory for --db" in output
    assert "exited with code 2, a configuration error (its message is above): stopping" in output
    assert not any(_started_in_place_of(e) for e in serve.entries)
    assert not any(alive(pid) for pid in serve.worker_pids())
    assert serve.tracebacks() == 0


async def test_a_replacement_that_finds_the_configuration_broken_ends_in_code_2(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """The operator broke the file after start-up and a worker died: each
    replacement exits 2. They are retried with backoff while the other worker
    serves on (what they need may come back), at the longest backoff once past
    the crash limit; when the serving worker dies too, the gateway ends with
    code 2 (a replacement would find the configuration wrong again)."""
    config = tmp_path / "gateway.toml"
    config.write_text("[server]\nshutdown_grace_seconds = 5\n")
    address = f"127.0.0.1:{free_port()}"
    env = _gateway_env(fake, tmp_path, LLMGATEWAY_WORKER_CRASH_LIMIT="2")
    args = ["--address", address, "--workers", "2", "--config", str(config)]
    async with Serve.running(args, env) as serve:
        first, second = await serve.workers_started()
        await serve.listening(first)
        await serve.listening(second)
        # The running workers read the file long ago.
        config.write_text('[server]\nshutdown_grace_seconds = "soon"\n')
        os.kill(first, signal.SIGKILL)
        replacement = await serve.replacement_of(first)
        second_replacement = await serve.replacement_of(replacement)
        await serve.line(
            lambda e: e.message.startswith(f"worker {second_replacement} exited with code 2"),
            "the second replacement's configuration error",
        )
        code = await _kill_the_worker_that_serves(serve, address, second)
    assert code == 2, serve.output()
    output = "\n".join(e.raw for e in serve.entries)
    assert "llmgateway: configuration error: LLMGATEWAY_SHUTDOWN_GRACE" in output
    assert (
        f"worker {second_replacement} exited with code 2, a configuration error (its message is "
        "above): more than 2 worker deaths within 60 s, while other workers serve: retrying "
        "this one every 30.0 s until it stays up"
    ) in output
    _assert_gave_up_when(serve, second)


async def test_no_worker_is_restarted_once_the_operator_stops_the_gateway(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """SIGTERM while a dead worker waits out its backoff: nothing is started, the
    others drain, and the stop that was asked for exits 0."""
    address = f"127.0.0.1:{free_port()}"
    env = _gateway_env(fake, tmp_path)
    async with Serve.running(["--address", address, "--workers", "2"], env) as serve:
        first, second = await serve.workers_started()
        await serve.listening(second)
        # Four quick deaths of one slot: the next start waits 4 s (0.5, 1, 2, 4).
        killed = await _kill_replacements(serve, first, deaths=4)
        await serve.line(
            lambda e: (
                e.message.startswith(f"worker {killed[-1]} ")
                and "starting a replacement in 4.0 s" in e.message
            ),
            "the fourth restart scheduled",
        )
        serve.process.send_signal(signal.SIGTERM)
        code = await serve.exit_code()
        await serve.until(lambda _: serve.ended, "the end of serve's output")
    assert code == 0, serve.output()
    assert sum(_started_in_place_of(e) for e in serve.entries) == 3
    assert any(e.pid == second and e.message == "stopped" for e in serve.entries)
    assert serve.tracebacks() == 0


@pytest.mark.parametrize("limit", ["0", "many"])
def test_a_bad_crash_limit_is_a_configuration_error(limit: str) -> None:
    from llmgateway.server.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="LLMGATEWAY_WORKER_CRASH_LIMIT"):
        Settings.load({"LLMGATEWAY_WORKER_CRASH_LIMIT": limit})
