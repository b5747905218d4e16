"""Who may call: caller keys from `authorization: Bearer <key>` metadata.

Until the first key is issued the gateway runs open (and says so at
start-up); from then on every call needs a live key, even after the last one
is revoked. Look-ups are cached for a couple of seconds, so a call costs no
database round trip in the common case; a revoked key stops working within
that time.

Refusals must stay cheap, since anyone can send them by the thousand: a
token that cannot be a key (not `lgw_` and 43 URL-safe characters) is
refused without a look-up; a refused token is remembered (by its SHA-256,
in a table of at most `MAX_REFUSED_CACHED` entries, oldest dropped first)
for `REFUSED_CACHE_SECONDS`, so a client repeating a wrong key costs one
look-up per that time; and concurrent look-ups of one token share a single
query. A key issued after its token was refused (only possible for a token
chosen before the key existed) works within `REFUSED_CACHE_SECONDS`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections import OrderedDict
from typing import TYPE_CHECKING

import grpc
from llmgateway.v1 import completion_service_pb2 as pb

from service.errors import GatewayError
from service.state.keys import KEY_PREFIX

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from service.state.keys import CallerKey, KeyStore

logger = logging.getLogger(__name__)

# How long a live key found stays trusted (a revoked key's grace).
CACHE_SECONDS = 2.0
# How long a refused token stays refused without a look-up (a key issued
# for that very token waits at most this long).
REFUSED_CACHE_SECONDS = 2.0
MAX_CACHED = 10_000
MAX_REFUSED_CACHED = 10_000
# What KeyStore.create issues: the prefix and secrets.token_urlsafe(32).
KEY_SHAPE = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{43}")


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

    @property
    def cached_tokens(self) -> int:
        """Tokens remembered, found or refused (bounded by the caps)."""
        return len(self._known) + len(self._refused)

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def is_open(self) -> bool:
        """Whether calls need no key (none was ever issued)."""
        if self._keys is None:
            return True
        now = self._now()
        if self._open_checked_at is None or now - self._open_checked_at > CACHE_SECONDS:
            self._open = not await self._keys.any_issued()
            self._open_checked_at = now
        return self._open

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
        key = await self._lookup(token)
        if key is None:
            raise _unauthenticated("the caller key is unknown or revoked")
        return key

    async def _lookup(self, token: str) -> CallerKey | None:
        assert self._keys is not None  # noqa: S101  # is_open() returned False
        if not KEY_SHAPE.fullmatch(token):
            return None  # no key looks like this: nothing to look up
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
            pending = asyncio.ensure_future(self._keys.find(token))
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
