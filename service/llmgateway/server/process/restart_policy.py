"""When the parent of several workers restarts one that died, and when it gives up.

Like systemd's `Restart=` with `StartLimitBurst`/`StartLimitIntervalSec`: a
worker that dies is replaced after a backoff that doubles while the same slot
keeps dying young (0.5 s, 1 s, 2 s ... 30 s) and starts again from 0.5 s once
a worker has stayed up a while; more than `crash_limit` deaths within
`crash_window` seconds, counted over all workers, is a crash loop. The
supervisor (service/llmgateway/server/process/workers.py) stops the gateway on a crash loop only when no
other worker is up to serve; otherwise it keeps retrying the failing slot at
the longest backoff (`at_longest_backoff`). Pure bookkeeping on a clock the
caller passes in, so it is tested without processes or sleeps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

DEFAULT_CRASH_LIMIT = 5
DEFAULT_CRASH_WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How soon to restart a dead worker, and how many deaths mean a crash loop."""

    crash_limit: int = DEFAULT_CRASH_LIMIT
    crash_window: float = DEFAULT_CRASH_WINDOW
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    # A worker up this long was healthy: the next death of its slot is a
    # fresh incident, restarted after `initial_backoff` again.
    stable_after: float = 30.0


class Restarts:
    """The deaths seen so far; one per parent process."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._deaths: deque[float] = deque()
        # Slot -> the backoff its last restart waited.
        self._backoff: dict[int, float] = {}

    def after_death(self, slot: int, now: float, uptime: float) -> float | None:
        """A worker of `slot` died at `now` after `uptime` seconds: the seconds to
        wait before starting its replacement, or None for a crash loop (give up)."""
        policy = self.policy
        self._deaths.append(now)
        while self._deaths[0] <= now - policy.crash_window:
            self._deaths.popleft()
        if len(self._deaths) > policy.crash_limit:
            return None
        previous = self._backoff.get(slot)
        if previous is None or uptime >= policy.stable_after:
            delay = policy.initial_backoff
        else:
            delay = min(previous * 2, policy.max_backoff)
        self._backoff[slot] = delay
        return delay

    def at_longest_backoff(self, slot: int) -> float:
        """Retry `slot` at the longest backoff from now on (until a worker of it
        stays up `stable_after`): its deaths passed the crash limit while other
        workers serve, so it is retried without stopping them. The delay."""
        self._backoff[slot] = self.policy.max_backoff
        return self.policy.max_backoff

    def recent_deaths(self) -> int:
        """Deaths counted in the current window (as of the last death)."""
        return len(self._deaths)
