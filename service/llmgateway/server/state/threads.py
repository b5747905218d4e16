"""The state database's own threads, and a bound on every wait for them.

Work reaches a database thread through a queue of limited length: when it is
full (the database stalled and callers keep coming) a caller is refused at
once instead of queueing without bound. Every unit of work carries a deadline.
Past it, a unit no thread has started yet (or whose thread is still
connecting) is abandoned: its caller hears at once that the database is
unavailable, and the thread skips it. A unit already running is given a short
grace for the database's own timeouts, then its connection is interrupted
(which also frees a thread stuck on a stopped server), and its caller waits
for the thread to say how it ended: so work is either done and answered, or
not done, never done behind the caller's back. Only a thread that ignores
the interrupt too is left behind; the work's `if_late` then hears about a
result that arrives after all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)

T = TypeVar("T")
S = TypeVar("S")

_QUEUED, _STARTED, _WORKING, _DONE, _ABANDONED = range(5)


class StateUnavailableError(RuntimeError):
    """The database could not do the work now (unreachable, restarting,
    locked or stalled past the timeout, out of space): a condition to retry,
    not a bug."""


class AbandonedError(Exception):
    """Raised on a database thread to skip work its caller gave up on."""


class Job(Generic[T]):
    """One unit of work on its way through a database thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._lock = threading.Lock()
        self._state = _QUEUED
        self._interrupt: Callable[[], None] | None = None
        self._loop = loop
        self.future: asyncio.Future[T] = loop.create_future()
        # A result nobody waits for any more must not be reported as unretrieved.
        self.future.add_done_callback(consume_outcome)

    def start(self) -> bool:
        """On the thread: whether to go on (connect); False when abandoned."""
        with self._lock:
            if self._state != _QUEUED:
                return False
            self._state = _STARTED
            return True

    def begin(self, interrupt: Callable[[], None]) -> None:
        """On the thread, connected: the work itself starts now, and
        `interrupt` (thread-safe) can stop it. AbandonedError when the caller
        gave up meanwhile."""
        with self._lock:
            if self._state != _STARTED:
                raise AbandonedError
            self._state = _WORKING
            self._interrupt = interrupt

    def pause(self) -> None:
        """On the thread: the work had not really begun after all (its
        connection failed before doing anything) and reconnects first; the
        caller may abandon it again meanwhile."""
        with self._lock:
            if self._state == _WORKING:
                self._state = _STARTED
                self._interrupt = None

    def end(self) -> None:
        """On the thread: the work ended; its connection is no longer to be
        interrupted (the next unit of work may use it)."""
        with self._lock:
            self._state = _DONE
            self._interrupt = None

    def abandon(self) -> bool:
        """By the caller: True when the work will never run."""
        with self._lock:
            if self._state in (_QUEUED, _STARTED):
                self._state = _ABANDONED
            return self._state == _ABANDONED

    def interrupt(self) -> None:
        """By the caller: stop the running work (it then ends with an error)."""
        with self._lock:
            if self._state == _WORKING and self._interrupt is not None:
                self._interrupt()

    def deliver(self, result: T | None, error: BaseException | None) -> None:
        """On the thread: hand the outcome to the caller's event loop."""
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
            self._loop.call_soon_threadsafe(self._set, result, error)

    def _set(self, result: T | None, error: BaseException | None) -> None:
        if self.future.done():
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)  # type: ignore[arg-type]  # T when no error


def consume_outcome(future: asyncio.Future[Any]) -> None:
    """Read a finished future's exception, so asyncio does not report it as
    never retrieved when nobody awaits it (its caller gave up)."""
    if not future.cancelled():
        future.exception()


class WorkThreads(Generic[S]):
    """A few threads, each with a session of its own (`new_session`, closed
    with `close_session` on that thread), running units of work in order."""

    def __init__(
        self,
        count: int,
        new_session: Callable[[], S],
        close_session: Callable[[S], None],
        *,
        timeout: float,
        max_pending: int,
        name: str,
    ) -> None:
        self._count = count
        self.timeout = timeout
        self._new_session = new_session
        self._close_session = close_session
        self._max_pending = max_pending
        self._queue: queue.Queue[tuple[Job[object], Callable[[S, Job[object]], object]] | None] = (
            queue.Queue(max_pending)
        )
        self._name = name
        self._threads: list[threading.Thread] = []
        self._guard = threading.Lock()
        self._closed = False

    async def run(
        self,
        work: Callable[[S, Job[T]], T],
        *,
        within: float | None = None,
        if_late: Callable[[T], None] | None = None,
    ) -> T:
        """`work(session, job)` on a thread; its result, or its exception.
        StateUnavailableError when it cannot be done within the timeout (or
        `within` seconds; see the module's docstring for what happens to it
        then)."""
        if self._closed:
            raise StateUnavailableError("the state database is closed")
        job: Job[T] = Job(asyncio.get_running_loop())
        self._start_threads()
        try:
            self._queue.put_nowait((job, work))  # type: ignore[arg-type]  # one job, one T
        except queue.Full:
            msg = f"{self._max_pending} units of work already wait for a database thread"
            raise StateUnavailableError(msg) from None
        try:
            return await self._outcome(job, within or self.timeout, if_late)
        except asyncio.CancelledError:
            # The caller left: work not begun is skipped, work running finishes.
            job.abandon()
            raise

    async def _outcome(self, job: Job[T], seconds: float, if_late: Callable[[T], None] | None) -> T:
        timeout = seconds
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                return await asyncio.shield(job.future)
        if job.abandon():
            msg = f"no answer within {timeout:g} s (waiting for a thread or a connection)"
            raise StateUnavailableError(msg)
        # Running: the database's own statement and lock timeouts end it, as a
        # rule; past a grace, interrupt its connection.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout / 2):
                return await asyncio.shield(job.future)
        job.interrupt()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                return await asyncio.shield(job.future)
        logger.error("a state database thread did not stop when interrupted; it is left behind")
        if if_late is not None:
            job.future.add_done_callback(lambda done: _late(done, if_late))
        msg = f"no answer within {2.5 * timeout:g} s, even after interrupting the work"
        raise StateUnavailableError(msg)

    def _start_threads(self) -> None:
        if len(self._threads) == self._count:
            return
        with self._guard:
            while len(self._threads) < self._count:
                thread = threading.Thread(
                    target=self._serve,
                    name=f"{self._name}-{len(self._threads)}",
                    daemon=True,  # one stuck on a stopped server must not block exit
                )
                thread.start()
                self._threads.append(thread)

    def _serve(self) -> None:
        session = self._new_session()
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                job, work = item
                if not job.start():
                    continue
                try:
                    result = work(session, job)
                except AbandonedError:
                    continue
                except BaseException as exc:  # noqa: BLE001  # handed to the caller
                    job.end()
                    job.deliver(None, exc)
                else:
                    job.end()
                    job.deliver(result, None)
        finally:
            self._close_session(session)

    def close(self, timeout: float) -> None:
        """Finish what is queued, then stop the threads; a thread still busy
        `timeout` seconds from now is left behind (it is a daemon). One
        deadline for them all: shutdown waits `timeout` at most, not per thread."""
        give_up = time.monotonic() + timeout
        with self._guard:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            with contextlib.suppress(queue.Full):  # full and stuck: left behind below
                self._queue.put(None, timeout=max(0.0, give_up - time.monotonic()))
        for thread in threads:
            thread.join(max(0.0, give_up - time.monotonic()))
            if thread.is_alive():
                logger.warning("a state database thread is still busy at shutdown; leaving it")


def _late(done: asyncio.Future[T], if_late: Callable[[T], None]) -> None:
    if not done.cancelled() and done.exception() is None:
        if_late(done.result())
