"""The port probe `serve` and `demo` run before gRPC binds (server/process/ports.py):
it refuses a port in use, in one clear error, and nothing gRPC itself would accept."""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, Any

import pytest

from bench.processes import free_port
from llmgateway.server.config import ConfigError
from llmgateway.server.process.ports import check_port_is_free

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def held_loopback_port() -> Iterator[int]:
    """A port another process would hold: listening on 127.0.0.1 only."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@pytest.fixture
def no_ipv6(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host without IPv6: creating an AF_INET6 socket fails, as it does there."""
    real = socket.socket

    def without_ipv6(family: Any = socket.AF_INET, *args: Any, **kwargs: Any) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real(family, *args, **kwargs)

    monkeypatch.setattr(socket, "socket", without_ipv6)


def test_a_port_someone_listens_on_is_refused_in_one_clear_error(held_loopback_port):
    for address in (f"127.0.0.1:{held_loopback_port}", f"0.0.0.0:{held_loopback_port}"):
        with pytest.raises(ConfigError, match=f"cannot listen on {address}: Address already"):
            check_port_is_free(address)


def test_localhost_is_refused_when_one_of_its_addresses_is_taken(held_loopback_port, monkeypatch):
    """`localhost` as most hosts resolve it, ::1 and 127.0.0.1: gRPC would listen on
    ::1 alone and callers of 127.0.0.1 would reach the other process."""
    port = held_loopback_port
    both = [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *_args, **_kwargs: both)
    with pytest.raises(ConfigError, match=f"cannot listen on localhost:{port}"):
        check_port_is_free(f"localhost:{port}")


def test_a_free_port_passes_by_name_by_address_and_as_any():
    port = free_port()
    for host in ("localhost", "127.0.0.1", "[::1]", "0.0.0.0", "[::]", ""):  # noqa: S104
        check_port_is_free(f"{host}:{port}")


@pytest.mark.usefixtures("no_ipv6")
def test_without_ipv6_an_ipv6_address_is_left_to_grpc_not_a_traceback():
    port = free_port()
    for address in (f"[::1]:{port}", f"[::]:{port}"):
        check_port_is_free(address)


@pytest.mark.usefixtures("no_ipv6")
def test_without_ipv6_any_address_still_finds_a_busy_ipv4_port(held_loopback_port):
    with pytest.raises(ConfigError, match="Address already in use"):
        check_port_is_free(f"[::]:{held_loopback_port}")


def test_any_address_passes_when_ipv4_binds_though_ipv6_is_taken():
    """gRPC, refused [::], listens on 0.0.0.0: the probe must not refuse first."""
    with socket.socket(socket.AF_INET6) as holder:
        holder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        holder.bind(("::", 0))
        holder.listen()
        port = int(holder.getsockname()[1])
        check_port_is_free(f"[::]:{port}")
        check_port_is_free(f"0.0.0.0:{port}")


def test_an_address_this_host_does_not_have_is_left_to_grpc():
    # 192.0.2.0/24 is reserved for documentation: no host has it (EADDRNOTAVAIL).
    check_port_is_free(f"192.0.2.1:{free_port()}")


def test_port_zero_unix_sockets_and_unknown_names_are_left_to_grpc():
    for address in ("127.0.0.1:0", "unix:/tmp/gateway.sock", "no-such-host.invalid:50123", "x:y"):
        check_port_is_free(address)
