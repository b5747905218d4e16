"""Start-up lines said once for several workers, not once per worker.

Every worker opens the database, builds its providers and binds the port, and
would log each of those (the state database, which providers are configured,
an open gateway, plaintext warnings) as the only process of `serve` does. The
parent hands its workers one token through an inherited pipe: a worker holds
its start-up lines until it has started, then takes the token if it is still
there. The first worker to start prints the lines as they were; the others
(and every replacement) keep them at DEBUG. A worker that fails to start
prints what it held, its own story. Each worker's own "listening" line, its
readiness, is not held.

Only the summary lines are held, those logged with `extra=SUMMARY_LINE`: anything
else a worker says while starting (a slow database, a migration notice, a
warning only it sees) comes through as it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

TOKEN_ENV = "LLMGATEWAY_WORKER_SUMMARY_FD"  # noqa: S105  # a file descriptor number
_TOKEN = b"1"

# `logger.info(..., extra=SUMMARY_LINE)`: a line of the start-up summary.
SUMMARY_LINE: Mapping[str, object] = MappingProxyType({"startup_summary": True})


def make_token() -> int:
    """In the parent: the read end of a pipe holding the one token (pass it to workers)."""
    read, write = os.pipe()
    os.write(write, _TOKEN)
    os.close(write)
    return read


class StartupSummary:
    """A worker's start-up lines, held between hold() and release()."""

    def __init__(self, token_fd: int | None) -> None:
        self._token_fd = token_fd
        self._held: list[logging.LogRecord] = []
        self._filter: _Hold | None = None

    @classmethod
    def from_environment(cls) -> StartupSummary:
        """The token the parent passed, if any (none: the only process, which says all)."""
        raw = os.environ.get(TOKEN_ENV)
        return cls(int(raw) if raw and raw.isdigit() else None)

    def hold(self) -> None:
        """Hold the summary lines from now on."""
        if self._token_fd is None:
            return
        self._filter = _Hold(self._held)
        for handler in logging.getLogger().handlers:
            handler.addFilter(self._filter)

    def release(self, *, started: bool) -> None:
        """Stop holding; print what was held if this worker speaks for all (or
        failed to start), else print it at DEBUG only."""
        if self._filter is None:
            return
        root = logging.getLogger()
        for handler in root.handlers:
            handler.removeFilter(self._filter)
        self._filter = None
        speaks = not started or self._take_token()
        for record in self._held:
            if not speaks:
                if not root.isEnabledFor(logging.DEBUG):
                    continue
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            for handler in root.handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)
        self._held.clear()

    def _take_token(self) -> bool:
        fd, self._token_fd = self._token_fd, None
        if fd is None:
            return True
        try:
            os.set_blocking(fd, False)
            # Once another worker took the token the pipe is empty, and as its
            # write end is closed (make_token closed it) read returns b"": taken.
            return os.read(fd, 1) == _TOKEN
        except BlockingIOError:
            return False  # empty, with a write end still open somewhere: taken all the same
        except OSError:
            return True  # no usable pipe: better said twice than never
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)


class _Hold(logging.Filter):
    def __init__(self, held: list[logging.LogRecord]) -> None:
        super().__init__()
        self._held = held

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or not getattr(record, "startup_summary", False):
            return True
        if not any(record is seen for seen in self._held):  # once, however many handlers
            self._held.append(record)
        return False
