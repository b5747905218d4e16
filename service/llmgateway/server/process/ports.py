"""Whether the gateway's port is free, asked before gRPC binds it.

gRPC core logs a failed bind itself, from C to stderr (an `add_port.cc` line
that Python's logging cannot filter), before raising: probing first lets a busy
port be reported once, in our words, before the database is even opened. A
listener that appears between the probe and gRPC's bind still fails the start
(then with gRPC's line too).
"""

from __future__ import annotations

import socket

from llmgateway.server.config import ConfigError


def check_port_is_free(address: str) -> None:
    """Raise ConfigError if something already listens on `address` (HOST:PORT or
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
    try:
        resolved = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return
    failures: list[OSError] = []
    for family, kind, protocol, _, where in resolved:
        with socket.socket(family, kind, protocol) as probe:
            # SO_REUSEADDR, as gRPC binds: connections of a previous run in
            # TIME_WAIT must not block a restart; on Linux a live listener
            # (SO_REUSEPORT ones included, as this probe does not set it) still
            # refuses the bind.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(where)
            except OSError as exc:
                failures.append(exc)
    # gRPC listens if any resolved address binds; so the probe fails only if none does.
    if failures and len(failures) == len(resolved):
        raise ConfigError(f"cannot listen on {address}: {failures[0].strerror or failures[0]}")
