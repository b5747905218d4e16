"""bench.peers.portkey: Portkey's gateway, installed from the npm registry (once, into
the user's cache), serves the benchmark's calls from the fake upstream, unary and
streamed, on loopback only, with N workers; a worker that dies takes it down."""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import processes as procs
from bench.peers import portkey

if TYPE_CHECKING:
    import contextlib
    import subprocess
    from collections.abc import Iterator

CHUNKS = 7
MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def fake_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = procs.free_port()
    log = tmp_path_factory.mktemp("portkey") / "fake.log"
    with procs.running(procs.fake_upstream_command(port, CHUNKS, 0.0), log=log) as fake:
        procs.wait_for_port(port, fake)
        yield port


def start(
    port: int, workers: int, log: Path
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """Portkey on `port` for the duration of a `with` block."""
    return procs.running(portkey.command(port, workers), env=portkey.environment(), log=log)


@pytest.fixture(scope="module")
def portkey_port(tmp_path_factory: pytest.TempPathFactory, fake_port: int) -> Iterator[int]:
    port = procs.free_port()
    log = tmp_path_factory.mktemp("portkey") / "portkey.log"
    with start(port, 2, log) as process:
        portkey.wait_ready(port, process, log, 2)
        yield port


def request_headers(fake_port: int) -> dict[str, str]:
    return {"Authorization": f"Bearer {portkey.KEY}", **portkey.headers(fake_port)}


def test_a_unary_call_through_portkey_is_the_fake_upstreams_answer(fake_port, portkey_port):
    response = httpx.post(
        portkey.url(portkey_port),
        json={"model": portkey.MODEL, "messages": MESSAGES},
        headers=request_headers(fake_port),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == (
        "Hello from the fake upstream! You said: Say hello."
    )
    assert response.headers["x-portkey-provider"] == "openai"


def test_a_stream_through_portkey_carries_every_chunk_then_done(fake_port, portkey_port):
    body = {"model": portkey.MODEL, "messages": MESSAGES, "stream": True}
    with httpx.stream(
        "POST",
        portkey.url(portkey_port),
        json=body,
        headers=request_headers(fake_port),
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(
        choice["delta"].get("content") or ""
        for event in events[:-1]
        for choice in orjson.loads(event)["choices"]
    )
    assert text.count("tok ") == CHUNKS


def test_portkey_listens_on_loopback_only(portkey_port):
    assert listening_addresses(portkey_port) == {"127.0.0.1"}


def test_a_dead_worker_stops_portkey(tmp_path, fake_port):
    port = procs.free_port()
    with start(port, 2, tmp_path / "portkey.log") as process:
        portkey.wait_ready(port, process, tmp_path / "portkey.log", 2)
        workers = children(process.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        assert process.wait(timeout=15) == 1


def test_a_worker_count_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        portkey.command(8787, 0)


def test_every_pinned_version_is_exact():
    exact = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
    manifest = orjson.loads(portkey.package_json())
    for version in [*manifest["dependencies"].values(), *manifest["overrides"].values()]:
        assert exact.fullmatch(version), version


@given(st.integers(min_value=1, max_value=65535))
def test_the_custom_host_is_the_fakes_openrouter_endpoint_on_loopback(port):
    parts = urlsplit(portkey.headers(port)["x-portkey-custom-host"])
    assert (parts.scheme, parts.hostname, parts.port, parts.path) == (
        "http",
        "127.0.0.1",
        port,
        "/openrouter/api/v1",
    )


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def listening_addresses(port: int) -> set[str]:
    """The local addresses of every TCP socket listening on `port` (IPv4 and IPv6)."""
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, port_hex = local.partition(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # /proc prints each 32-bit word in host (little-endian) order.
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(socket.inet_ntop(family, raw))
    return found
