"""Who may call: caller keys from `authorization: Bearer <key>` metadata.

Until the first key is issued the gateway runs open (and says so at
start-up); from then on every call needs a live key, even after the last one
is revoked. Look-ups are cached for a couple of seconds, so a call costs no
database round trip in the common case; a revoked key stops working within
that time. Once a gateway is found closed it stays closed for the life of
the process (a key, once issued, is never un-issued), and an open gateway
whose database stops answering keeps its last answer until it answers again.

Refusals must stay cheap, since anyone can send them by the thousand: a
token that cannot be a key (not `lgw_` and 43 URL-safe characters) is
refused without a look-up; a refused token is remembered (by its SHA-256,
in a table of at most `MAX_REFUSED_CACHED` entries, oldest dropped first)
for `REFUSED_CACHE_SECONDS`, so a client repeating a wrong key costs one
look-up per that time; and concurrent look-ups of one token share a single
query. A key issued after its token was refused (only possible for a token
chosen before the key existed) works within `REFUSED_CACHE_SECONDS`.

They must stay cheap while the database is down too: a closed gateway
refuses a token that cannot be a key without asking the database whatever
its state; at most `MAX_CONCURRENT_LOOKUPS` questions are put to it at once
(the rest wait their turn); and once it failed to answer, questions not
answered from the caches fail at once (UNAVAILABLE), except one every
`OUTAGE_RETRY_SECONDS` that goes through to see whether it is back.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, TypeVar

import grpc

from llmgateway.server.errors import GatewayError
from llmgateway.server.state.db import StateUnavailableError
from llmgateway.server.state.keys import KEY_SHAPE
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from llmgateway.server.state.keys import CallerKey, KeyStore

logger = logging.getLogger(__name__)

# How long a live key found stays trusted (a revoked key's grace).
CACHE_SECONDS = 2.0
# How long a refused token stays refused without a look-up (a key issued
# for that very token waits at most this long).
REFUSED_CACHE_SECONDS = 2.0
MAX_CACHED = 10_000
MAX_REFUSED_CACHED = 10_000
# Questions to the key store under way at once; the others wait. A healthy
# database answers each in about a millisecond (and SQLite serves one at a
# time anyway); a stalled one holds at most this many callers to its timeout.
MAX_CONCURRENT_LOOKUPS = 8
# After the key store failed to answer, questions fail at once for this
# long, then one is let through to see whether it is back.
OUTAGE_RETRY_SECONDS = 1.0

T = TypeVar("T")


class Access:
    """Authenticates calls against the key store."""

    def __init__(self, keys: KeyStore | None, clock: Callable[[], float] | None = None) -> None:
        self._keys = keys
        # The event loop's clock unless a test brings its own.
        self._clock = clock
        self._open_checked_at: float | None = None
        self._open = keys is None
        # SHA-256 of a token -> (when found, its live key).
        self._known: dict[bytes, tuple[float, CallerKey]] = {}
        # SHA-256 of a refused token -> when refused; oldest first.
        self._refused: OrderedDict[bytes, float] = OrderedDict()
        # Look-ups under way, shared by the calls presenting the same token.
        self._pending: dict[bytes, asyncio.Future[CallerKey | None]] = {}
        # The check whether any key exists, shared by the calls waiting on it.
        self._open_pending: asyncio.Future[bool] | None = None
        self._asking = asyncio.Semaphore(MAX_CONCURRENT_LOOKUPS)
        # When the key store last failed to answer; None since it answered.
        self._failed_at: float | None = None
        # Whether the one question let through during an outage is under way.
        self._probing = False

    @property
    def cached_tokens(self) -> int:
        """Tokens remembered, found or refused (bounded by the caps)."""
        return len(self._known) + len(self._refused)

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def is_open(self) -> bool:
        """Whether calls need no key (none was ever issued). Asks the key
        store only while the gateway has not been seen closed; when it cannot
        answer, the last answer stands (StateUnavailableError if none yet)."""
        keys = self._keys
        if keys is None:
            return True
        checked_at = self._open_checked_at
        if checked_at is not None and (not self._open or self._now() - checked_at <= CACHE_SECONDS):
            return self._open
        pending = self._open_pending
        if pending is None:
            pending = asyncio.ensure_future(self._ask(keys.any_issued))
            self._open_pending = pending
            pending.add_done_callback(functools.partial(self._remember_open, self._now()))
        try:
            # Shielded: a caller that leaves does not cancel the others' check.
            return not await asyncio.shield(pending)
        except StateUnavailableError:
            if self._open_checked_at is None:
                raise  # never answered: whether a key is needed is unknown
            return self._open

    def _remember_open(self, asked_at: float, done: asyncio.Future[bool]) -> None:
        """Keep what the check found; when it failed, keep the last answer
        and ask again after the usual time."""
        self._open_pending = None
        if done.cancelled():
            return
        error = done.exception()
        if error is None:
            self._open = not done.result()
        elif not isinstance(error, StateUnavailableError) or self._open_checked_at is None:
            return
        self._open_checked_at = asked_at

    async def authenticate(self, metadata: Iterable[tuple[str, str | bytes]]) -> CallerKey | None:
        """The caller's key; None when the gateway runs open. UNAUTHENTICATED
        when a key is needed and the call has no live one."""
        if await self.is_open():
            return None
        token = _bearer(metadata)
        if token is None:
            raise _unauthenticated(
                "this gateway requires a caller key: send metadata "
                "'authorization: Bearer <key>' (ask the operator for a key)"
            )
        # No key looks like this: nothing to look up, whatever the database's state.
        key = await self._lookup(token) if KEY_SHAPE.fullmatch(token) else None
        if key is None:
            raise _unauthenticated("the caller key is unknown or revoked")
        return key

    async def _ask(self, question: Callable[[], Awaitable[T]]) -> T:
        """`question`'s answer from the key store: at most
        MAX_CONCURRENT_LOOKUPS at once; while it is failing to answer,
        StateUnavailableError at once, but for one question every
        OUTAGE_RETRY_SECONDS."""
        async with self._asking:
            failed_at = self._failed_at
            probe = failed_at is not None
            if failed_at is not None:
                if self._probing or self._now() - failed_at < OUTAGE_RETRY_SECONDS:
                    raise StateUnavailableError(
                        "the state database did not answer just now (not asked again yet)"
                    )
                self._probing = True
            try:
                answer = await question()
            except StateUnavailableError:
                self._failed_at = self._now()
                raise
            finally:
                if probe:
                    self._probing = False
            self._failed_at = None
            return answer

    async def _lookup(self, token: str) -> CallerKey | None:
        keys = self._keys
        assert keys is not None  # noqa: S101  # is_open() returned False
        digest = hashlib.sha256(token.encode()).digest()
        now = self._now()
        known = self._known.get(digest)
        if known is not None and now - known[0] <= CACHE_SECONDS:
            return known[1]
        refused_at = self._refused.get(digest)
        if refused_at is not None and now - refused_at <= REFUSED_CACHE_SECONDS:
            return None
        pending = self._pending.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(self._ask(functools.partial(keys.find, token)))
            self._pending[digest] = pending
            pending.add_done_callback(lambda done: self._remember(digest, now, done))
        # Shielded: a caller that leaves does not cancel the others' look-up.
        return await asyncio.shield(pending)

    def _remember(
        self, digest: bytes, asked_at: float, done: asyncio.Future[CallerKey | None]
    ) -> None:
        """Cache what a look-up found, timed from when it was asked; a failed
        look-up (database unavailable) is not remembered."""
        del self._pending[digest]
        if done.cancelled() or done.exception() is not None:
            return
        key = done.result()
        if key is not None:
            self._refused.pop(digest, None)
            if len(self._known) >= MAX_CACHED:
                self._known.clear()
            self._known[digest] = (asked_at, key)
            return
        self._known.pop(digest, None)
        self._refused[digest] = asked_at
        self._refused.move_to_end(digest)
        while len(self._refused) > MAX_REFUSED_CACHED:
            self._refused.popitem(last=False)


def check_model(key: CallerKey | None, model: str) -> None:
    """PERMISSION_DENIED when `key` may not call `model`."""
    if key is not None and not key.allows_model(model):
        raise GatewayError(
            grpc.StatusCode.PERMISSION_DENIED,
            pb.ERROR_REASON_MODEL_NOT_ALLOWED,
            f"key {key.name!r} may not use model {model[:256]!r}; it may use: "
            + ", ".join(key.models),
            metadata={"keyId": key.id, "model": model[:256]},
        )


def _bearer(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    for name, value in metadata:
        if name == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _unauthenticated(message: str) -> GatewayError:
    return GatewayError(grpc.StatusCode.UNAUTHENTICATED, pb.ERROR_REASON_UNAUTHENTICATED, message)
