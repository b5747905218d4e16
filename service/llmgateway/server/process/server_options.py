"""The grpc server options that make clients re-resolve: connection age and its grace.

A client balancing over DNS (round_robin over a headless Service) resolves
only when it (re)connects, so replicas added later get no traffic from
connections that never end. `grpc.max_connection_age_ms` makes the server send
GOAWAY once a connection is that old (gRPC adds ±10 % jitter, so a fleet's
clients do not reconnect at once); the client reconnects, re-resolves and
spreads. Calls in flight on the aged connection keep it for
`grpc.max_connection_age_grace_ms`, then are cut: by default that is the
longest stream any provider allows, so an age-out never cuts a stream the
gateway itself would have let run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmgateway.server.config import Settings

# gRPC reads channel arguments as a C int: past this they would overflow.
_MAX_MS = 2**31 - 1


def connection_age_options(settings: Settings) -> list[tuple[str, int]]:
    """`grpc.max_connection_age_ms` and `_grace_ms` from the settings; none
    when `max_connection_age` is 0 (connections live until either side ends them)."""
    if settings.max_connection_age <= 0:
        return []
    grace = settings.max_connection_age_grace
    if grace is None:
        grace = longest_stream(settings)
    return [
        ("grpc.max_connection_age_ms", _milliseconds(settings.max_connection_age)),
        ("grpc.max_connection_age_grace_ms", _milliseconds(grace)),
    ]


def longest_stream(settings: Settings) -> float:
    """The largest `stream_total` of `[timeouts]` and every `[<provider>.timeouts]`:
    no provider's stream outlives it. A `[timeouts]` that every provider
    overrides can only make it longer than needed, never shorter."""
    totals = [settings.timeouts.stream_total]
    totals += [t.stream_total for t in settings.provider_timeouts.values()]
    return max(totals)


def _milliseconds(seconds: float) -> int:
    # At least 1 ms: 0 would not mean "off" to gRPC but "at once".
    return min(max(round(seconds * 1000), 1), _MAX_MS)
