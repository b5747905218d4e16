"""The local cluster (scripts/cluster.sh) and the Envoy configuration it runs.

The configuration: the local one differs from deploy/envoy/envoy.yaml only in addresses and
discovery, both pass `envoy --mode validate`, and the production file keeps the properties
deploy/envoy/README.md promises. The script: one `up`, a call through Envoy, `status`, a
killed and restarted replica, a refused second `up`, and a `down` that leaves no process and
no run directory; `up`'s refusals (a taken port, a missing redis-server, a foreign directory)
start nothing; an `up` stopped with SIGTERM while it starts stops what it started, and
one killed with SIGKILL leaves nothing `down` cannot find. The proofs under load are
tests/test_cluster_proofs.py's.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from scripts.cluster import (
    ENVOY_CLUSTER,
    Cluster,
    ClusterError,
    Process,
    load_production_envoy,
    local_envoy_config,
    parse_health_flags,
    sum_counter,
)
from tests.conftest import user

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
ENVOY = Path(sys.executable).parent / "envoy"


def _gateways(config: dict[str, Any]) -> dict[str, Any]:
    clusters: list[dict[str, Any]] = config["static_resources"]["clusters"]
    (found,) = (c for c in clusters if c["name"] == ENVOY_CLUSTER)
    return found


def _without_local_fields(config: dict[str, Any]) -> dict[str, Any]:
    """`config` less what the local cluster may change (plan D8)."""
    config = copy.deepcopy(config)
    del config["admin"]["address"]
    del config["static_resources"]["listeners"][0]["address"]
    gateways = _gateways(config)
    del gateways["type"]
    del gateways["load_assignment"]
    return config


def test_the_local_envoy_config_differs_only_in_addresses_and_discovery():
    production = load_production_envoy()
    local = local_envoy_config(
        production, listen_port=40001, admin_port=40002, replica_ports=[1, 2]
    )
    assert _without_local_fields(local) == _without_local_fields(production)
    assert local["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 40002,
    }
    listener = local["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 40001}
    gateways = _gateways(local)
    assert gateways["type"] == "STATIC"
    hosts = gateways["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [h["endpoint"]["address"]["socket_address"] for h in hosts] == [
        {"address": "127.0.0.1", "port_value": 1},
        {"address": "127.0.0.1", "port_value": 2},
    ]
    # The production data is left as it was.
    assert _gateways(production)["type"] == "STRICT_DNS"


def test_the_production_envoy_config_keeps_its_promises():
    """What deploy/envoy/README.md says each block does."""
    config = load_production_envoy()
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    (listener,) = config["static_resources"]["listeners"]
    (manager,) = listener["filter_chains"][0]["filters"]
    assert manager["typed_config"]["stream_idle_timeout"] == "0s"
    (route,) = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    action = route["route"]
    assert action["timeout"] == "0s"
    assert action["max_stream_duration"] == {"grpc_timeout_header_max": "0s"}
    retry = action["retry_policy"]
    # Only before a gateway saw the call: it may have been billed once it did.
    assert set(retry["retry_on"].split(",")) == {
        "connect-failure",
        "refused-stream",
        "reset-before-request",
    }
    assert retry["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"
    gateways = _gateways(config)
    assert gateways["type"] == "STRICT_DNS"
    assert gateways["lb_policy"] == "LEAST_REQUEST"
    assert gateways["common_lb_config"]["healthy_panic_threshold"] == {"value": 0}
    (check,) = gateways["health_checks"]
    assert check["grpc_health_check"] == {"service_name": ""}
    assert check["unhealthy_threshold"] * int(check["interval"].rstrip("s")) < 3  # the delay
    outlier = gateways["outlier_detection"]
    assert outlier["split_external_local_origin_errors"] is True
    # A gRPC error a gateway relays (a provider's outage) never ejects it.
    for enforcing in ("consecutive_5xx", "consecutive_gateway_failure", "success_rate"):
        assert outlier[f"enforcing_{enforcing}"] == 0
    assert outlier["consecutive_local_origin_failure"] >= 1
    address = gateways["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert address["address"]["socket_address"]["address"].startswith("llmgateway-headless.")


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # the venv's envoy
        [str(ENVOY), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_envoy_validates_the_production_file_and_the_local_one(tmp_path):
    production = ROOT / "deploy" / "envoy" / "envoy.yaml"
    checked = _validate(production)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    local = tmp_path / "envoy.json"
    local.write_text(
        json.dumps(
            local_envoy_config(
                load_production_envoy(), listen_port=40001, admin_port=40002, replica_ports=[1, 2]
            )
        )
    )
    checked = _validate(local)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # It does check: a field Envoy does not know fails.
    broken = tmp_path / "broken.yaml"
    broken.write_text(production.read_text() + "bogus_field: 1\n")
    assert _validate(broken).returncode != 0


FLAGS = st.sampled_from(
    ["healthy", "/failed_active_hc", "/failed_outlier_check", "/failed_active_hc/active_hc_timeout"]
)


@given(
    st.lists(st.integers(1024, 65535), min_size=1, max_size=6, unique=True).flatmap(
        lambda ports: st.tuples(
            st.just(ports), st.lists(FLAGS, min_size=len(ports), max_size=len(ports))
        )
    )
)
def test_health_flags_are_read_per_replica_from_envoys_clusters_page(ports_and_flags):
    ports, flags = ports_and_flags
    lines = [
        "llmgateway::observability_name::llmgateway",
        "other::127.0.0.1:9::health_flags::healthy",
    ]
    for port, flag in zip(ports, flags, strict=True):
        lines += [
            f"llmgateway::127.0.0.1:{port}::cx_active::1",
            f"llmgateway::127.0.0.1:{port}::health_flags::{flag}",
            f"llmgateway::127.0.0.1:{port}::hostname::",
        ]
    assert parse_health_flags("\n".join(lines), ports) == dict(enumerate(flags))
    # A replica Envoy does not list is missing, not healthy.
    assert parse_health_flags("\n".join(lines), [*ports, 1]).get(len(ports)) is None


def test_request_counts_sum_the_samples_whose_labels_match():
    text = """\
# HELP llmgateway_requests_total Finished calls.
# TYPE llmgateway_requests_total counter
llmgateway_requests_total{method="Complete",model="m",provider="p",status="OK"} 3.0
llmgateway_requests_total{method="StreamComplete",model="m",provider="p",status="OK"} 2.0
llmgateway_requests_total{method="Complete",model="m",provider="p",status="UNAVAILABLE"} 1.0
llmgateway_requests_created{method="Complete",model="m",provider="p",status="OK"} 1.7e9
"""
    assert sum_counter(text, "llmgateway_requests_total", {}) == 6
    assert sum_counter(text, "llmgateway_requests_total", {"status": "OK"}) == 5
    assert (
        sum_counter(text, "llmgateway_requests_total", {"method": "Complete", "status": "OK"}) == 3
    )
    assert sum_counter(text, "llmgateway_requests_total", {"status": "CANCELLED"}) == 0


# ---- state and run directories ----


def _dead_process() -> Process:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    process = Process.of(child.pid)
    child.wait()
    return process


def _state(process: Process) -> dict[str, Any]:
    record = {"pid": process.pid, "started": process.started}
    return {
        "format": 1,
        "options": {
            "replicas": 1,
            "limits": "postgres",
            "port": 0,
            "shutdown_delay": 3.0,
            "shutdown_grace": 20.0,
            "instance_lease": 3.0,
            "fake_chunk_delay": 0.05,
            "fake_stream_chunks": None,
            "extra_env": {"LLMGATEWAY_LOG_FORMAT": "json"},
        },
        "limits": "postgres",
        "ports": {"envoy": 1, "admin": 2, "fake": 3, "postgres": 4, "redis": 5},
        "replicas": [{"port": 6, "metrics_port": 7, "process": record}],
        "processes": {"envoy": record},
        "load_key": "lgw_test",
    }


def test_state_json_round_trips_through_attach(tmp_path):
    process = _dead_process()
    Cluster(tmp_path, _state(process))._write_state()
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600  # it holds the load key
    attached = Cluster.attach(tmp_path)
    assert attached.address == "127.0.0.1:1"
    assert attached.admin_url == "http://127.0.0.1:2"
    assert attached.postgres_url == "postgresql://postgres@127.0.0.1:4/postgres"
    assert attached.redis_url == "redis://127.0.0.1:5/0"
    assert attached.load_key == "lgw_test"
    assert attached.limits == "postgres"
    assert attached.options.extra_env == {"LLMGATEWAY_LOG_FORMAT": "json"}
    assert attached.options.run_dir == tmp_path
    (replica,) = attached.replicas
    assert (replica.index, replica.address, replica.pid) == (0, "127.0.0.1:6", process.pid)
    assert replica.metrics_url == "http://127.0.0.1:7/metrics"
    assert replica.instance_log == tmp_path / "logs" / "replica-0.log"
    assert not attached.any_running()
    with pytest.raises(ClusterError, match="no replica 3: this cluster has replicas 0 to 0"):
        attached.kill_replica(3)
    with pytest.raises(ClusterError, match="replica 0 is not running"):
        attached.stop_replica(0)


def test_attach_says_what_is_wrong(tmp_path):
    with pytest.raises(ClusterError, match=r"no cluster is up in .* \(no state.json\)"):
        Cluster.attach(tmp_path)
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(ClusterError, match="cannot read"):
        Cluster.attach(tmp_path)
    (tmp_path / "state.json").write_text('{"format": 99}')
    with pytest.raises(ClusterError, match="is not a cluster's state"):
        Cluster.attach(tmp_path)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A run directory's path (not made) under /tmp: as root, PostgreSQL runs as the
    postgres user, which cannot enter pytest's private tmp_path."""
    parent = Path(tempfile.mkdtemp(prefix="llmgateway-cluster-test-"))
    parent.chmod(0o755)
    try:
        yield parent / "cluster"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _script(
    *args: str, run_dir: Path, path: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMGATEWAY_CLUSTER_DIR": str(run_dir)}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "scripts.cluster", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextlib.contextmanager
def _taken_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def test_up_refuses_a_taken_port_and_leaves_nothing(run_dir):
    with _taken_port() as port:
        done = _script("up", "--port", str(port), run_dir=run_dir)
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is taken" in done.stderr
    assert "--port 0 for a free one" in done.stderr
    assert "Traceback" not in done.stderr
    assert not run_dir.exists()


def test_up_without_redis_server_names_the_script_that_installs_it(run_dir, tmp_path):
    done = _script("up", "--port", "0", run_dir=run_dir, path=str(tmp_path / "empty-path"))
    assert done.returncode == 1
    assert "redis-server is not installed: run 'bash scripts/ensure-redis.sh'" in done.stderr
    assert "or use --limits postgres" in done.stderr
    assert not run_dir.exists()


def test_up_refuses_a_directory_that_is_not_a_clusters(run_dir):
    run_dir.mkdir()
    (run_dir / "precious.txt").write_text("keep me")
    done = _script("up", "--port", "0", run_dir=run_dir)
    assert done.returncode == 1
    assert "is not a cluster's run directory (no state.json)" in done.stderr
    assert (run_dir / "precious.txt").read_text() == "keep me"


def test_up_clears_a_stale_run_directory_whose_processes_are_gone(run_dir):
    run_dir.mkdir()
    Cluster(run_dir, _state(_dead_process()))._write_state()
    with _taken_port() as port:
        done = _script("up", "--port", str(port), run_dir=run_dir)
    assert f"removing {run_dir}: its processes are gone" in done.stderr
    # Then refused for its own reason, which leaves no run directory.
    assert f"port {port} on 127.0.0.1 is taken" in done.stderr
    assert done.returncode == 1
    assert not run_dir.exists()


def test_down_and_status_without_a_cluster(tmp_path):
    down = _script("down", run_dir=tmp_path / "none")
    assert down.returncode == 0
    assert "no cluster is up" in down.stderr
    status = _script("status", run_dir=tmp_path / "none")
    assert status.returncode == 1
    assert "no cluster is up" in status.stderr


# ---- the cluster itself ----


def _exports(stdout: str) -> dict[str, str]:
    pairs = [line.removeprefix("export ").split("=", 1) for line in stdout.splitlines()]
    return {name: value for name, value in pairs}


def _complete(target: str, key: str | None) -> pb.CompleteResponse:
    with grpc.insecure_channel(target) as channel:
        metadata = (("authorization", f"Bearer {key}"),) if key else ()
        request = pb.CompleteRequest(model="openrouter/openai/gpt-4o-mini", messages=[user("hi")])
        return pb_grpc.CompletionServiceStub(channel).Complete(
            request, metadata=metadata, timeout=30
        )


def _processes(run_dir: Path) -> list[Process]:
    state = json.loads((run_dir / "state.json").read_text())
    records = [*state["processes"].values(), *(r["process"] for r in state["replicas"])]
    return [Process(record["pid"], record["started"]) for record in records]


def _status_rows(stdout: str) -> dict[str, list[str]]:
    """`status`'s table by process name: name, pid, state, address, Envoy's flags."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("process "))
    return {line.split()[0]: line.split() for line in lines[header + 1 :]}


def test_up_status_kill_start_and_down_leave_nothing_behind(run_dir):
    up = _script("up", "--replicas", "2", "--port", "0", run_dir=run_dir)
    try:
        assert up.returncode == 0, up.stderr
        exports = _exports(up.stdout)
        target = exports["LLMGATEWAY_TARGET"]
        assert up.stderr.count(f"callers use {target}") == 1
        assert "Envoy before 2 replicas (limits in redis), PostgreSQL, Redis" in up.stderr

        answer = _complete(target, exports["LLMGATEWAY_API_KEY"])
        assert "Hello from the fake upstream" in answer.content
        # Envoy relays the gateway's own refusals: the gateway is closed, as the load key
        # was made before any replica started.
        with pytest.raises(grpc.RpcError) as refused:
            _complete(target, None)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # A key `key` issues works at once through Envoy, and its limit holds.
        made = _script("key", "limited", "--rpm", "1", run_dir=run_dir)
        assert made.returncode == 0, made.stderr
        limited = made.stdout.strip()
        assert _complete(target, limited).content
        with pytest.raises(grpc.RpcError) as limit:
            _complete(target, limited)
        assert limit.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        status = _script("status", run_dir=run_dir)
        assert status.returncode == 0, status.stdout + status.stderr
        rows = _status_rows(status.stdout)
        assert set(rows) == {"envoy", "postgres", "redis", "fake", "replica-0", "replica-1"}
        assert all(row[2] == "running" for row in rows.values())
        assert rows["replica-0"][4] == rows["replica-1"][4] == "healthy"

        again = _script("up", "--port", "0", run_dir=run_dir)
        assert again.returncode == 1
        assert f"a cluster is already up in {run_dir} (callers use {target})" in again.stderr

        old_pid = rows["replica-1"][1]
        assert _script("kill", "1", run_dir=run_dir).returncode == 0
        status = _script("status", run_dir=run_dir)
        assert status.returncode == 1  # a process is gone
        assert _status_rows(status.stdout)["replica-1"][1:3] == [old_pid, "gone"]
        started = _script("start", "1", run_dir=run_dir)
        assert started.returncode == 0, started.stderr
        assert "replica 1 is up and healthy in Envoy" in started.stderr
        # Envoy says so too. Polled: on a starved machine one active check can
        # time out right after the one that passed, and the next passes again.
        cluster = Cluster.attach(run_dir)
        give_up = time.monotonic() + 15
        flags = cluster.envoy_health()[1]
        while flags != "healthy" and time.monotonic() < give_up:
            time.sleep(0.2)
            flags = cluster.envoy_health()[1]
        assert flags == "healthy"
        assert _complete(target, exports["LLMGATEWAY_API_KEY"]).content
    finally:
        processes = _processes(run_dir) if (run_dir / "state.json").exists() else []
        down = _script("down", run_dir=run_dir)
    assert down.returncode == 0, down.stderr
    assert not run_dir.exists()
    assert len(processes) == 6
    assert [p for p in processes if p.alive()] == []


# ---- an `up` stopped while it starts ----


def _ours(marker: str, run_dir: Path) -> dict[int, str]:
    """Processes (pid: command line) started by an `up` run with `marker` in its
    environment (every child inherits it), naming `run_dir` in their arguments, or
    working in it (redis-server rewrites its title over its arguments and environment,
    and works in its --dir); zombies excluded."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        inside = cwd.startswith(str(run_dir)) or str(run_dir).encode() in cmdline
        if state != "Z" and (marker.encode() in environ or inside):
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def _up_until(run_dir: Path, marker: str, stage: str) -> subprocess.Popen[bytes]:
    """`up` in the background, returned once `stage` (a path in its run directory) exists."""
    env = {**os.environ, "LLMGATEWAY_CLUSTER_DIR": str(run_dir), "CLUSTER_TEST_MARKER": marker}
    said = run_dir.parent / "up.stderr"  # beside the run directory, which `up` removes
    with said.open("wb") as stderr:
        up = subprocess.Popen(
            [sys.executable, "-m", "scripts.cluster", "up", "--port", "0"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    with contextlib.ExitStack() as on_failure:
        on_failure.callback(up.kill)
        for _ in range(1200):  # a hang guard only
            if (run_dir / stage).exists():
                on_failure.pop_all()
                return up
            assert up.poll() is None, said.read_text()
            time.sleep(0.05)
    raise AssertionError(f"up never reached {stage}")


def _until_gone(what: Callable[[], dict[int, str]]) -> dict[int, str]:
    """`what()` once it is empty, or what is still there after the hang guard."""
    for _ in range(600):
        left = what()
        if not left:
            return left
        time.sleep(0.05)
    return what()


@pytest.mark.parametrize("stage", ["logs/envoy.log", "logs/replica-0.log"])
def test_up_stopped_with_sigterm_while_starting_stops_what_it_started(run_dir, stage):
    # A CI timeout or `kill` sends SIGTERM: `up` stops everything it started, as
    # Ctrl-C does, so no Envoy or PostgreSQL outlives it on its ports.
    marker = uuid.uuid4().hex
    up = _up_until(run_dir, marker, stage)
    up.send_signal(signal.SIGTERM)
    assert up.wait(timeout=120) != 0
    assert _until_gone(lambda: _ours(marker, run_dir)) == {}
    assert not run_dir.exists()


def test_down_after_up_was_killed_while_starting_stops_what_it_started(run_dir):
    # SIGKILL cannot be caught: `down` finds every process from state.json, written as
    # each one starts. Killed while PostgreSQL initialises (its directory is made right
    # after Envoy started), Envoy must be in it already.
    marker = uuid.uuid4().hex
    up = _up_until(run_dir, marker, "postgres")
    up.kill()
    up.wait(timeout=30)

    def setting_up() -> dict[int, str]:
        # initdb (and what it runs) ends by itself, with nothing left behind
        transient = ("initdb", "pg_ctl", "--boot", "--single")
        return {
            pid: line
            for pid, line in _ours(marker, run_dir).items()
            if any(word in line for word in transient)
        }

    assert _until_gone(setting_up) == {}
    down = _script("down", run_dir=run_dir)
    assert down.returncode == 0, down.stderr
    assert _until_gone(lambda: _ours(marker, run_dir)) == {}
    assert not run_dir.exists()
