"""The processes a benchmark runs: fake upstream, reference servers, gateway,
LiteLLM; and their memory and CPU time."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Self

import httpx

from llmgateway.server.state.db import Database
from llmgateway.server.state.keys import KeyStore
from llmgateway.server.state.schema import migrate
from llmgateway.testing.fake_upstream.app import DEFAULT_OPENROUTER_KEY, environment_for

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

ROOT = Path(__file__).resolve().parent.parent
LITELLM_VERSION = "1.108.7"
LITELLM_VENV = ROOT / "bench" / ".venv-litellm"
# LiteLLM's cost map from its own package, not fetched from GitHub at each
# start (offline here: three failed attempts, seconds of each start).
LITELLM_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
# A LiteLLM start took 85 s on the loaded 2-core machine (each worker imports
# all of LiteLLM); the default 120 s was too little under more load.
LITELLM_START_SECONDS = 600.0
FAKE_OPENROUTER_KEY = DEFAULT_OPENROUTER_KEY


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    """Until something accepts connections on `port`; fail if `process` died first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {seconds} s")


@contextlib.contextmanager
def running(
    command: list[str],
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    *,
    piped: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` for the duration of the block; SIGTERM it (then SIGKILL) after.

    `piped`: stdin and stdout are pipes to the caller (only stderr goes to `log`).
    """
    with contextlib.ExitStack() as stack:
        output = stack.enter_context(log.open("wb")) if log else subprocess.DEVNULL
        process = subprocess.Popen(  # noqa: S603  # our own commands
            command,
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE if piped else None,
            stdout=subprocess.PIPE if piped else output,
            stderr=output if piped else subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def fake_upstream_command(port: int, chunks: int, delay: float) -> list[str]:
    """The fake upstream: instant unary answers, `chunks` stream chunks `delay` s apart."""
    return [
        sys.executable,
        "-m",
        "llmgateway.testing.fake_upstream",
        "--port",
        str(port),
        "--no-record",
        "--stream-chunks",
        str(chunks),
        "--chunk-delay",
        str(delay),
    ]


def fake_environment(fake_port: int) -> dict[str, str]:
    """Environment that points a gateway at the fake upstream, with its state
    database (and so the usage ledger, as in production) in a fresh temporary
    directory rather than the user's data directory."""
    state = tempfile.mkdtemp(prefix="llmgateway-bench-")
    return {
        **environment_for(f"http://127.0.0.1:{fake_port}"),
        "LLMGATEWAY_DB": str(Path(state) / "state.db"),
    }


def issue_caller_key(db_path: str, name: str) -> str:
    """A caller key (no limits) in the state database at `db_path`, migrated first,
    as `llmgateway keys create` makes one; the key's secret."""
    db = Database(db_path)
    try:
        migrate(db)
        _, key = KeyStore(db).create(name)
    finally:
        db.close()
    return key


def gateway_command(port: int, workers: int | None, log_level: str = "INFO") -> list[str]:
    """llmgateway serve with its default settings (workers: one per core unless given;
    INFO, the default level, so every call's access line is paid for as in production)."""
    command = [
        sys.executable,
        "-m",
        "llmgateway.server.process.cli",
        "serve",
        "--address",
        f"127.0.0.1:{port}",
        "--log-level",
        log_level,
    ]
    if workers:
        command += ["--workers", str(workers)]
    return command


def reference_command(
    name: str, port: int, workers: int, chunks: int = 50, delay: float = 0.005
) -> list[str]:
    """A reference server (bench/reference/): "bare" streams `chunks` events
    `delay` s apart itself; "relay" reads the fake upstream named by the
    environment (fake_environment), as the gateway does."""
    command = [
        sys.executable,
        "-m",
        f"bench.reference.{name}",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    if name == "bare":
        command += ["--chunks", str(chunks), "--chunk-delay", str(delay)]
    return command


def wait_for_line(
    log: Path, text: str, process: subprocess.Popen[bytes], seconds: float = 60
) -> None:
    """Until `log` holds `text`; fail if `process` died first (a reference
    server says "serving" once all its workers listen)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        with contextlib.suppress(OSError):
            if text in log.read_text(errors="replace"):
                return
        time.sleep(0.05)
    raise RuntimeError(f"{log} did not say {text!r} within {seconds} s")


def wait_for_workers(process: subprocess.Popen[bytes], workers: int, seconds: float = 60) -> None:
    """Until `process` has `workers` children, then a moment for the last to
    bind, so a load's connections spread over all of them (the gateway says
    when each worker listens only at INFO, which would log every call too)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        if workers <= 1 or len(_tree(process.pid)) > workers:
            time.sleep(1.0)
            return
        time.sleep(0.05)
    raise RuntimeError(f"{process.args!r} did not start {workers} workers within {seconds} s")


def ensure_litellm() -> Path:
    """LiteLLM's proxy in its own virtual environment (installed once, pinned)."""
    executable = LITELLM_VENV / "bin" / "litellm"
    marker = LITELLM_VENV / f".litellm-{LITELLM_VERSION}"
    if not marker.exists():
        print(
            f"installing LiteLLM {LITELLM_VERSION} into {LITELLM_VENV} (once)...", file=sys.stderr
        )
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)  # noqa: S603
        subprocess.run(  # noqa: S603  # pinned package from the registry
            [
                str(LITELLM_VENV / "bin" / "pip"),
                "install",
                "--quiet",
                f"litellm[proxy]=={LITELLM_VERSION}",
            ],
            check=True,
        )
        marker.touch()
    return executable


def litellm_command(port: int, fake_port: int, workers: int, config_dir: Path) -> list[str]:
    """LiteLLM's proxy in its lean mode (no database, no callbacks) before the fake upstream."""
    config = config_dir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/openai/gpt-4o-mini\n"
        f"      api_base: http://127.0.0.1:{fake_port}/openrouter/api/v1\n"
        f"      api_key: {FAKE_OPENROUTER_KEY}\n"
        "litellm_settings:\n"
        "  callbacks: []\n"
        "  num_retries: 0\n"
        "  request_timeout: 120\n"
        "general_settings:\n"
        "  master_key: sk-bench-master\n"
    )
    return [
        str(ensure_litellm()),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        str(workers),
        # uvicorn kills a worker that does not answer its health ping within 5 s
        # and starts another: on a loaded 2-core machine a worker's start (its
        # imports) takes longer, and the proxy never came up (issue 16's run).
        "--timeout_worker_healthcheck",
        "60",
    ]


def wait_for_http(url: str, process: subprocess.Popen[bytes], seconds: float = 120) -> None:
    """Until `url` answers 200; fail if `process` died first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


class MemorySampler:
    """Peak memory of a process and all its descendants, sampled every 50 ms.

    Two sums: RSS counts pages shared between the processes (the grpc and
    Python libraries every worker maps) once per process; PSS divides each
    shared page among its sharers, so its sum is what the tree really holds.
    """

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._peak = 0
        self._peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        """The highest RSS total seen, in MiB."""
        return self._peak / 1024

    @property
    def peak_pss_mb(self) -> float:
        """The highest PSS total seen, in MiB."""
        return self._peak_pss / 1024

    def _loop(self) -> None:
        while not self._stop.is_set():
            pids = _tree(self._pid)
            self._peak = max(self._peak, sum(rss_kb(p) for p in pids))
            self._peak_pss = max(
                self._peak_pss, sum(_field_kb(p, "smaps_rollup", "Pss:") for p in pids)
            )
            self._stop.wait(0.05)


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its live descendants, plus
    what their reaped children used, in seconds; 0 for what is gone. Sampled
    before and after a load, the difference is what the load cost that tree."""
    total = 0
    for member in _tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # After the command's closing parenthesis: field 3 (state) onwards;
            # utime, stime, cutime, cstime are fields 14-17.
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])
    return total / _TICKS


def rss_kb(pid: int) -> int:
    """Resident memory of one process in KiB (0 once it is gone)."""
    return _field_kb(pid, "status", "VmRSS:")


def _tree(pid: int) -> list[int]:
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        with contextlib.suppress(OSError):
            queue.extend(
                int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()
            )
    return pids


def _field_kb(pid: int, name: str, field: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    return 0
