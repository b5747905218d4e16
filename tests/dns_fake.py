"""A DNS server for tests: A records on loopback, changeable while it runs.

gRPC's default resolver (c-ares) takes a DNS server from the target's
authority (`dns://127.0.0.1:PORT/gw.test:50051`), so a test can stand in for a
Kubernetes headless Service (one A record per replica) and scale it out by
changing the records: `async with DnsFake({"gw.test": ["127.0.0.2"]}) as dns:
dns.target("gw.test", port)`, then `dns.records["gw.test"] = [...]`.
It answers A queries from `records`, any other type of a known name with no
records, and an unknown name with NXDOMAIN; `queries` counts A look-ups per name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from collections import Counter
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType

_TYPE_A = 1
_CLASS_IN = 1
_NOERROR = 0
_FORMERR = 1
_NXDOMAIN = 3
# Resolvers cache nothing from a fake: each look-up should see the current records.
_TTL = 0


class DnsFake(asyncio.DatagramProtocol):
    """A UDP DNS responder on 127.0.0.1 (a free port) for the names in `records`."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = {name.lower().rstrip("."): list(ips) for name, ips in records.items()}
        self.queries: Counter[str] = Counter()
        self._transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def target(self, name: str, port: int) -> str:
        """A gRPC target that resolves `name` through this server."""
        return f"dns://127.0.0.1:{self.port}/{name}:{port}"

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self._transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(self.answer(data), addr)

    def answer(self, query: bytes) -> bytes:
        """The response to one query message (RFC 1035 4.1)."""
        try:
            ident, _flags, qdcount = struct.unpack("!HHH", query[:6])
            name, end = _read_name(query, 12)
            qtype, qclass = struct.unpack("!HH", query[end : end + 4])
        except (struct.error, IndexError, UnicodeDecodeError):
            return struct.pack("!HHHHHH", 0, 0x8180 | _FORMERR, 0, 0, 0, 0)
        if qdcount != 1:
            return struct.pack("!HHHHHH", ident, 0x8180 | _FORMERR, 0, 0, 0, 0)
        question = query[12 : end + 4]
        known = self.records.get(name)
        answers = b""
        count = 0
        if known is not None and qtype == _TYPE_A and qclass == _CLASS_IN:
            self.queries[name] += 1
            for ip in known:
                # A pointer (0xC00C) to the question's name, then TYPE, CLASS, TTL, RDATA.
                address = ipaddress.IPv4Address(ip).packed
                answers += struct.pack("!HHHIH", 0xC00C, _TYPE_A, _CLASS_IN, _TTL, 4) + address
                count += 1
        rcode = _NXDOMAIN if known is None else _NOERROR
        # QR, AA and RD (copied), RA; then one question and `count` answers.
        header = struct.pack("!HHHHHH", ident, 0x8580 | rcode, 1, count, 0, 0)
        return header + question + answers


def _read_name(message: bytes, offset: int) -> tuple[str, int]:
    """The (uncompressed) name at `offset` in a query, and the offset after it."""
    labels = []
    while (length := message[offset]) != 0:
        labels.append(message[offset + 1 : offset + 1 + length].decode("ascii"))
        offset += 1 + length
    return ".".join(labels).lower(), offset + 1
