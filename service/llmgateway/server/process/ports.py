"""Whether the gateway's port is free, asked before gRPC binds it.

gRPC core logs a failed bind itself, from C to stderr (an `add_port.cc` line
that Python's logging cannot filter), before raising: probing first lets a busy
port be reported once, in our words, before the database is even opened. A
listener that appears between the probe and gRPC's bind still fails the start
(then with gRPC's line too).

The probe refuses only what it is sure of: an address in use or not allowed
(EADDRINUSE, EACCES). An address this host does not have, or a family it does
not support (no IPv6), is left to gRPC, which may well listen anyway.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from typing import Any

from llmgateway.server.config import ConfigError

# gRPC listens on "any" for either spelling: on [::] dual-stack when it can,
# else (or as well, when [::] is IPv6-only) on 0.0.0.0.
_WILDCARDS = frozenset({"0.0.0.0", "::"})  # noqa: S104  # names, not a bind
_REFUSALS = frozenset({errno.EADDRINUSE, errno.EACCES})

# (family, type, protocol, the address bind() takes), as getaddrinfo gives them.
_Where = tuple[int, int, int, tuple[Any, ...]]


class ListenError(ConfigError):
    """The gateway cannot listen where it was told to (a port in use, say): refused as
    a configuration error is (exit 2), but not called one, since the fix may lie elsewhere."""


def check_port_is_free(address: str) -> None:
    """Raise ListenError if something already listens on `address` (HOST:PORT or
    [V6]:PORT). Port 0, unix sockets and names that do not resolve are left to gRPC."""
    if address.startswith(("unix:", "unix-abstract:")):
        return
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104  # the operator chose the address
    try:
        port = int(port_text)
    except ValueError:
        return  # gRPC says what is wrong with it
    if port == 0:
        return
    if host in _WILDCARDS:
        errors = [
            _bind_error((socket.AF_INET, socket.SOCK_STREAM, 0, ("0.0.0.0", port))),  # noqa: S104
            _bind_error((socket.AF_INET6, socket.SOCK_STREAM, 0, ("::", port, 0, 0))),
        ]
        if any(error is None for error in errors):
            return  # gRPC listens on whichever binds
    else:
        try:
            resolved = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except OSError:
            return
        # gRPC would listen on the addresses that bind and leave the others:
        # `localhost` on ::1 only while another process holds 127.0.0.1. A
        # clear error beats a gateway half the callers cannot reach.
        errors = [
            _bind_error((family, kind, proto, where)) for family, kind, proto, _, where in resolved
        ]
    refusals = [error for error in errors if error is not None and error.errno in _REFUSALS]
    if refusals:
        raise ListenError(f"cannot listen on {address}: {refusals[0].strerror or refusals[0]}")


def _bind_error(where: _Where) -> OSError | None:
    """Why `where` cannot be bound now, or None if it can."""
    family, kind, protocol, socket_address = where
    try:
        with socket.socket(family, kind, protocol) as probe:
            # SO_REUSEADDR, as gRPC binds: connections of a previous run in
            # TIME_WAIT must not block a restart; on Linux a live listener
            # (SO_REUSEPORT ones included, as this probe does not set it) still
            # refuses the bind.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # Dual-stack, as gRPC asks for it: [::] then covers IPv4 too.
                with contextlib.suppress(OSError):
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            probe.bind(socket_address)
    except OSError as exc:  # no such family here (EAFNOSUPPORT) included
        return exc
    return None
