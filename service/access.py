"""Who may call: caller keys from `authorization: Bearer <key>` metadata.

Until the first key is issued the gateway runs open (and says so at
start-up); from then on every call needs a live key, even after the last one
is revoked. Look-ups are cached for a couple of seconds, so a call costs no
database round trip in the common case; a revoked key stops working within
that time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import grpc
from llmgateway.v1 import completion_service_pb2 as pb

from service.errors import GatewayError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from service.state.keys import CallerKey, KeyStore

logger = logging.getLogger(__name__)

CACHE_SECONDS = 2.0
_MAX_CACHED = 10_000


class Access:
    """Authenticates calls against the key store."""

    def __init__(self, keys: KeyStore | None) -> None:
        self._keys = keys
        self._open_checked_at: float | None = None
        self._open = keys is None
        self._cache: dict[str, tuple[float, CallerKey | None]] = {}

    async def is_open(self) -> bool:
        """Whether calls need no key (none was ever issued)."""
        if self._keys is None:
            return True
        now = asyncio.get_running_loop().time()
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
        now = asyncio.get_running_loop().time()
        cached = self._cache.get(token)
        if cached is not None and now - cached[0] <= CACHE_SECONDS:
            return cached[1]
        key = await self._keys.find(token)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[token] = (now, key)
        return key


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
