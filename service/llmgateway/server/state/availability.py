"""What the log says while the state database is unavailable: little.

During an outage every call that needs the database fails the same way, so
a line (let alone a traceback) per call would only flood the log. The first
failure says what happened, a reminder follows at most every
`REMINDER_SECONDS` with the count since, and the first answer after it says
the outage is over and how long it lasted.
"""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger("llmgateway.server.state")

REMINDER_SECONDS = 30.0


class Availability:
    """Tracks whether the database answers, and logs the changes (thread-safe).

    At most one "unavailable" line per REMINDER_SECONDS, even when the
    database flaps (a lock held elsewhere fails writes while reads pass), and
    an "answers again" line only after an "unavailable" one."""

    def __init__(self, display: str) -> None:
        self._display = display
        self._lock = threading.Lock()
        self._down = False
        # Whether the last line said "unavailable", and when that outage began.
        self._said_down = False
        self._said_at: float | None = None
        self._outage_began = 0.0
        self._failures = 0  # since the last line
        self._outage_failures = 0

    @property
    def unavailable(self) -> bool:
        """Whether the last unit of work failed for want of the database."""
        return self._down

    def failed(self, reason: str) -> None:
        """A unit of work failed because the database is unavailable."""
        now = time.monotonic()
        with self._lock:
            self._down = True
            self._failures += 1
            self._outage_failures += 1
            if self._said_at is not None and now - self._said_at < REMINDER_SECONDS:
                return
            reminder, failures = self._said_down, self._failures
            if not reminder:
                self._outage_began, self._outage_failures = now, 1
            self._said_down, self._said_at, self._failures = True, now, 0
        if reminder:
            logger.warning(
                "the state database %s is still unavailable (%d failures since the last "
                "line); last: %s",
                self._display,
                failures,
                reason,
            )
        else:
            logger.warning(
                "the state database %s is unavailable: %s; calls that need it get "
                "UNAVAILABLE (GATEWAY_STATE_UNAVAILABLE) until it answers again",
                self._display,
                reason,
            )

    def answered(self) -> None:
        """A unit of work succeeded."""
        if not self._down:  # the common case: no lock
            return
        with self._lock:
            self._down = False
            if not self._said_down:
                return
            self._said_down = False
            lasted = time.monotonic() - self._outage_began
            failures = self._outage_failures
        logger.warning(
            "the state database %s answers again, after %.1f s and %d failures",
            self._display,
            lasted,
            failures,
        )
