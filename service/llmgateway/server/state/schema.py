"""Versioned schema migrations, applied in order at start-up.

Each migration is a list of statements; `{id}` stands for an auto-numbered
primary key, which the two databases spell differently. Never edit a
published migration: add the next one.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from llmgateway.server.config import ConfigError

if TYPE_CHECKING:
    from llmgateway.server.state.db import Database, Tx

_ID = {"sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT", "postgresql": "BIGSERIAL PRIMARY KEY"}

MIGRATIONS: list[list[str]] = [
    # 1: caller keys, rate-limit and budget reservations, the usage ledger.
    [
        """CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE,
            key_prefix TEXT NOT NULL,
            models TEXT NOT NULL,
            rpm INTEGER,
            tpm INTEGER,
            budget_usd DOUBLE PRECISION,
            budget_period TEXT,
            usage_reader INTEGER NOT NULL DEFAULT 0,
            created_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION
        )""",
        # Names identify keys to operators; only one live key per name.
        "CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL",
        """CREATE TABLE reservations (
            id {id},
            key_id TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            tokens BIGINT NOT NULL,
            cost_usd DOUBLE PRECISION NOT NULL,
            settled INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX reservations_key_time ON reservations (key_id, created_at)",
        """CREATE TABLE usage_records (
            id {id},
            request_id TEXT NOT NULL,
            key_id TEXT NOT NULL,
            method TEXT NOT NULL,
            requested_model TEXT NOT NULL,
            served_model TEXT NOT NULL,
            provider TEXT NOT NULL,
            prompt_tokens BIGINT NOT NULL,
            completion_tokens BIGINT NOT NULL,
            cached_tokens BIGINT NOT NULL,
            reasoning_tokens BIGINT NOT NULL,
            cost_usd DOUBLE PRECISION,
            latency_ms DOUBLE PRECISION NOT NULL,
            ttft_ms DOUBLE PRECISION,
            status TEXT NOT NULL,
            reason TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            fallbacks INTEGER NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX usage_records_time ON usage_records (created_at)",
        "CREATE INDEX usage_records_key_time ON usage_records (key_id, created_at)",
    ],
    # 2: find a call's row by request id (costs found after the call ended).
    ["CREATE INDEX usage_records_request ON usage_records (request_id)"],
    # 3: a call's row is written when it is admitted (status IN_FLIGHT) by a
    # gateway process holding a lease in gateway_instances, and completed when
    # it ends; the rows and reservations of a process whose lease lapsed are
    # reaped as LOST (service/llmgateway/server/state/reaper.py). Rows written before this
    # migration have no instance and are never in flight.
    [
        """CREATE TABLE gateway_instances (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            pid_start TEXT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            lease_expires_at DOUBLE PRECISION NOT NULL
        )""",
        "ALTER TABLE usage_records ADD COLUMN instance_id TEXT",
        "ALTER TABLE usage_records ADD COLUMN reservation_id BIGINT",
        # The reaper looks at calls in flight only: a handful, however long the ledger.
        (
            "CREATE INDEX usage_records_in_flight ON usage_records (instance_id) "
            "WHERE status = 'IN_FLIGHT'"
        ),
    ],
    # 4: prompt tokens written to the provider's prompt cache (Anthropic's
    # cache_creation_input_tokens), part of prompt_tokens like cached_tokens.
    # Rows written before this migration count 0.
    ["ALTER TABLE usage_records ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0"],
    # 5: routed calls (`route/<name>`): the route, the task it served and where
    # the task came from ("caller", "rule:<id>", "default"); a caller's own task
    # on a named model fills task too. Rows written before this migration, and
    # calls not routed, hold ''. No index: usage queries filter by time, then group.
    [
        "ALTER TABLE usage_records ADD COLUMN route TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE usage_records ADD COLUMN task TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE usage_records ADD COLUMN task_source TEXT NOT NULL DEFAULT ''",
    ],
]


def migrate(db: Database) -> int:
    """Bring the schema up to date; the version it is at."""
    return db.run_sync(_migrate)


def _migrate(tx: Tx) -> int:
    # One migrator at a time, across processes and replicas.
    tx.lock("llmgateway-schema")
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
    )
    rows = tx.fetchall("SELECT MAX(version) FROM schema_migrations")
    current = int(rows[0][0] or 0)
    if current > len(MIGRATIONS):
        msg = (
            f"the database is at schema version {current}, newer than this gateway "
            f"knows ({len(MIGRATIONS)}); upgrade the gateway"
        )
        raise ConfigError(msg)
    for version in range(current + 1, len(MIGRATIONS) + 1):
        for statement in MIGRATIONS[version - 1]:
            tx.execute(statement.replace("{id}", _ID[tx.dialect]))
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
            (version, time.time()),
        )
    return len(MIGRATIONS)
