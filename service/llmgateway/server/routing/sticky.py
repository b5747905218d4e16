"""Session stickiness for routed calls: a session's later turns go to the
target that served its last one, so the provider's prompt cache keeps paying.

One table per worker process, in memory: a gRPC connection stays on one
worker, so a client that keeps its channel keeps its session; elsewhere a
turn is decided afresh, and decisions are deterministic. The caller key's id
is part of the session key, so one caller cannot steer another's session.
Bounded twice: the least recently used session goes beyond `max_sessions`,
and a session unused for `ttl` seconds is forgotten.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Callable

# (caller key id or "", route name, session id)
SessionKey: TypeAlias = tuple[str, str, str]


def sticky_key(key_id: str | None, route: str, session_id: str) -> SessionKey:
    """The table's key for a session of `route` ("route/default") called with
    the caller key `key_id` (None for an open gateway)."""
    return (key_id or "", route, session_id)


class StickySessions:
    """Session -> the target that last served it, bounded by least recent
    use, each session forgotten `ttl` seconds after its last served turn."""

    def __init__(
        self,
        ttl: float,
        max_sessions: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max = max(max_sessions, 0)
        self._clock = clock
        self._sessions: OrderedDict[SessionKey, tuple[str, float]] = OrderedDict()

    def get(self, key: SessionKey) -> str | None:
        """The target that last served the session, if still remembered.
        Only reads: a decision and ExplainRoute change nothing here; the TTL
        restarts when a turn is served."""
        found = self._sessions.get(key)
        if found is None or self._clock() >= found[1]:
            return None
        return found[0]

    def served(self, key: SessionKey, target: str) -> None:
        """Remember that `target` (gateway naming, `zai/glm-4.7@coding`) served
        the session, for `ttl` seconds from now: after a fallback the cache
        now lives there."""
        if self._max == 0 or self._ttl <= 0:
            return
        now = self._clock()
        self._sessions[key] = (target, now + self._ttl)
        self._sessions.move_to_end(key)
        # Every write moves its session to the end with the same TTL, so the
        # front holds the soonest to expire: expired sessions go first, then
        # the least recently served beyond the bound.
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if now < oldest[1] and len(self._sessions) <= self._max:
                break
            self._sessions.popitem(last=False)

    def __len__(self) -> int:
        return len(self._sessions)
