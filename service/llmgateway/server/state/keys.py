"""Caller keys: issued once, stored only as a hash, revocable.

A key is `lgw_` and 43 URL-safe characters (256 random bits). Keys that
random need no slow password hash: SHA-256 of the key finds its row, and
nobody can work back from the hash to a key.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from llmgateway.server.state.db import Database, Row, Tx

KEY_PREFIX = "lgw_"
# Every key `KeyStore.create` issues: the prefix and secrets.token_urlsafe(32)
# (43 URL-safe characters). A token of any other shape cannot be a key.
KEY_SHAPE = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{43}")
_SHOWN_CHARS = 8
Period = Literal["day", "month"]
_COLUMNS = (
    "id, name, key_prefix, models, rpm, tpm, budget_usd, budget_period, usage_reader, "
    "created_at, revoked_at"
)


class KeyStoreError(ValueError):
    """A key operation that cannot be done; the message says why."""


@dataclass(frozen=True, slots=True)
class CallerKey:
    """A caller key as stored (never the key itself)."""

    id: str
    name: str
    # The first characters of the key, so an operator can tell keys apart.
    prefix: str
    # fnmatch patterns over requested model names; empty allows every model.
    models: tuple[str, ...]
    rpm: int | None
    tpm: int | None
    budget_usd: float | None
    budget_period: Period | None
    # May read every key's usage through GetUsage.
    usage_reader: bool
    created_at: float
    revoked_at: float | None

    @property
    def limited(self) -> bool:
        """Whether calls must reserve against a limit or budget."""
        return self.rpm is not None or self.tpm is not None or self.budget_usd is not None

    def allows_model(self, model: str) -> bool:
        """Whether this key may call `model` (as the caller named it)."""
        return not self.models or any(fnmatch.fnmatchcase(model, p) for p in self.models)


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """Issues, lists, revokes and looks up caller keys."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def create(
        self,
        name: str,
        *,
        models: tuple[str, ...] = (),
        rpm: int | None = None,
        tpm: int | None = None,
        budget_usd: float | None = None,
        budget_period: Period | None = None,
        usage_reader: bool = False,
    ) -> tuple[CallerKey, str]:
        """A new key's record and the key itself (shown once, never stored)."""
        if not name.strip():
            raise KeyStoreError("a key needs a --name")
        if (budget_usd is None) != (budget_period is None):
            raise KeyStoreError("--budget-usd and --per go together")
        for value, flag in ((rpm, "--rpm"), (tpm, "--tpm")):
            if value is not None and value < 1:
                raise KeyStoreError(f"{flag} must be 1 or more")
        if budget_usd is not None and not budget_usd > 0:
            raise KeyStoreError("--budget-usd must be greater than 0")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = CallerKey(
            id="key_" + secrets.token_hex(6),
            name=name.strip(),
            prefix=key[: len(KEY_PREFIX) + _SHOWN_CHARS],
            models=models,
            rpm=rpm,
            tpm=tpm,
            budget_usd=budget_usd,
            budget_period=budget_period,
            usage_reader=usage_reader,
            created_at=time.time(),
            revoked_at=None,
        )

        def insert(tx: Tx) -> None:
            if tx.fetchall(
                "SELECT 1 FROM api_keys WHERE name = ? AND revoked_at IS NULL", (record.name,)
            ):
                raise KeyStoreError(
                    f"a live key named {record.name!r} exists; revoke it or pick another"
                )
            tx.execute(
                "INSERT INTO api_keys (id, name, key_hash, key_prefix, models, rpm, tpm, "
                "budget_usd, budget_period, usage_reader, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.name,
                    hash_key(key),
                    record.prefix,
                    json.dumps(list(models)),
                    rpm,
                    tpm,
                    budget_usd,
                    budget_period,
                    int(usage_reader),
                    record.created_at,
                ),
            )

        try:
            self._db.run_sync(insert)
        except Exception as exc:
            # Another `keys create` with this name won the race to the unique index.
            if type(exc).__name__ in ("IntegrityError", "UniqueViolation"):
                raise KeyStoreError(f"a live key named {record.name!r} exists") from exc
            raise
        return record, key

    def list(self, *, include_revoked: bool = True) -> list[CallerKey]:
        """Every key, oldest first."""
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        rows = self._db.run_sync(
            lambda tx: tx.fetchall(f"SELECT {_COLUMNS} FROM api_keys{where} ORDER BY created_at"),  # noqa: S608  # fixed text
            write=False,
        )
        return [_record(row) for row in rows]

    def revoke(self, id_or_name: str) -> CallerKey:
        """Revoke the live key with this id or name; the revoked record."""

        now = time.time()

        def revoke(tx: Tx) -> Row:
            rows = tx.fetchall(
                f"SELECT {_COLUMNS} FROM api_keys "  # noqa: S608  # fixed text
                "WHERE (id = ? OR name = ?) AND revoked_at IS NULL",
                (id_or_name, id_or_name),
            )
            if not rows:
                raise KeyStoreError(f"no live key has the id or name {id_or_name!r}")
            tx.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (now, rows[0][0]))
            return rows[0]

        row = self._db.run_sync(revoke)
        return _record((*row[:-1], now))

    async def find(self, key: str) -> CallerKey | None:
        """The live key matching `key`, if any."""
        rows = await self._db.run(
            lambda tx: tx.fetchall(
                f"SELECT {_COLUMNS} FROM api_keys "  # noqa: S608  # fixed text
                "WHERE key_hash = ? AND revoked_at IS NULL",
                (hash_key(key),),
            ),
            write=False,
        )
        return _record(rows[0]) if rows else None

    async def any_issued(self) -> bool:
        """Whether any key was ever issued: from then on the gateway requires
        one. Revoked keys count, so revoking the last key closes the gateway
        rather than opening it to everyone."""
        rows = await self._db.run(
            lambda tx: tx.fetchall("SELECT 1 FROM api_keys LIMIT 1"), write=False
        )
        return bool(rows)


def _record(row: Row) -> CallerKey:
    return CallerKey(
        id=row[0],
        name=row[1],
        prefix=row[2],
        models=tuple(json.loads(row[3])),
        rpm=row[4],
        tpm=row[5],
        budget_usd=row[6],
        budget_period=row[7],
        usage_reader=bool(row[8]),
        created_at=float(row[9]),
        revoked_at=None if row[10] is None else float(row[10]),
    )
