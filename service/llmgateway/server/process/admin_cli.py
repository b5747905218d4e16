"""`llmgateway keys`, `usage` and `migrate`: issuing caller keys, reading the bill and
bringing the schema up to date.

All work on the state database directly (`--db PATH` or a postgresql://
URL; default: LLMGATEWAY_DB, the config file's `[state] db`, else the user's
data directory), so they work whether or not a gateway is running.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmgateway.server.config import ConfigError, Settings
from llmgateway.server.observability.logs import escape_text

if TYPE_CHECKING:
    import argparse

    from llmgateway.server.state.db import Database, Tx
    from llmgateway.server.state.keys import CallerKey
    from llmgateway.server.state.ledger import UsageRow


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `keys`, `usage` and `migrate` on the top-level parser."""
    keys = commands.add_parser("keys", help="issue, list and revoke caller keys")
    actions = keys.add_subparsers(dest="keys_command", required=True)

    create = actions.add_parser("create", help="issue a key (printed once; only a hash is kept)")
    _add_db(create)
    create.add_argument("--name", required=True, help="who or what the key is for (unique)")
    create.add_argument(
        "--models",
        nargs="+",
        default=[],
        metavar="PATTERN",
        help="model names the key may call, shell-style patterns (zai/*, openrouter/openai/*, "
        "an alias); default: every model",
    )
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute (prompt + completion)")
    create.add_argument("--budget-usd", type=float, help="spending limit in USD per --per")
    create.add_argument("--per", choices=("day", "month"), help="budget period (UTC)")
    create.add_argument(
        "--usage-reader",
        action="store_true",
        help="may read every key's usage through GetUsage (others see their own)",
    )
    create.add_argument("--json", action="store_true", help="print the new key as JSON")

    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    _add_db(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")

    revoke = actions.add_parser("revoke", help="revoke a key by id or name")
    _add_db(revoke)
    revoke.add_argument("key", help="the key's id (key_...) or name")

    usage = commands.add_parser("usage", help="usage and cost from the ledger")
    _add_db(usage)
    usage.add_argument(
        "--since", default="30d", help="start: 7d, 24h, 30m or an ISO date (default: 30d)"
    )
    usage.add_argument("--until", help="end: an ISO date or time (default: now)")
    usage.add_argument(
        "--by",
        choices=("key", "model", "day", "route", "task"),
        default="model",
        help="group by caller key, model as requested, UTC day, route (route/NAME calls) "
        "or task (default: model)",
    )
    usage.add_argument("--key", help="only this key (id or name)")
    usage.add_argument("--json", action="store_true", help="print JSON")

    # A deployment runs this once before an upgrade's pods start (the Helm chart's hook Job);
    # the gateway also migrates at start-up under the same lock, so it is never required.
    migrate = commands.add_parser(
        "migrate", help="apply the state database's schema migrations and print its version"
    )
    _add_db(migrate)


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="SQLite path or postgresql:// URL (default: LLMGATEWAY_DB)")
    parser.add_argument("--config", type=Path, help="TOML config file (or LLMGATEWAY_CONFIG)")


def run(args: argparse.Namespace) -> int:
    """Run `keys ...`, `usage` or `migrate`; the exit status."""
    from llmgateway.server.state.db import Database, StateUnavailableError
    from llmgateway.server.state.keys import KeyStoreError
    from llmgateway.server.state.schema import migrate

    try:
        location = args.db or Settings.load(os.environ, args.config).db
        db = Database(location)
        try:
            before = db.run_sync(_schema_version, write=False) if args.command == "migrate" else 0
            version = migrate(db)
            if args.command == "migrate":
                _report_migration(db, before, version)
                return 0
            if args.command == "usage":
                return _usage(db, args)
            return _keys(db, args)
        finally:
            db.close()
    except (ConfigError, KeyStoreError, StateUnavailableError, ValueError) as exc:
        print(f"llmgateway: {exc}", file=sys.stderr)
        return 2


def _schema_version(tx: Tx) -> int:
    """The version the database is at, 0 for a new one; read without creating anything."""
    if tx.dialect == "postgresql":
        exists = tx.fetchall("SELECT to_regclass('schema_migrations') IS NOT NULL")[0][0]
    else:
        exists = tx.fetchall(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        )[0][0]
    if not exists:
        return 0
    return int(tx.fetchall("SELECT MAX(version) FROM schema_migrations")[0][0] or 0)


def _report_migration(db: Database, before: int, version: int) -> None:
    # stdout carries the version alone, for scripts; the sentence is for the Job's log.
    print(version)
    if before >= version:
        done = "already current"
    elif before + 1 == version:
        done = f"applied migration {version}"
    else:
        done = f"applied migrations {before + 1} to {version}"
    print(f"{db.display}: schema version {version} ({done})", file=sys.stderr)


def _keys(db: Database, args: argparse.Namespace) -> int:
    from llmgateway.server.state.keys import KeyStore

    store = KeyStore(db)
    if args.keys_command == "create":
        record, key = store.create(
            args.name,
            models=tuple(args.models),
            rpm=args.rpm,
            tpm=args.tpm,
            budget_usd=args.budget_usd,
            budget_period=args.per,
            usage_reader=args.usage_reader,
        )
        if args.json:
            print(json.dumps({"key": key, **_key_json(record)}))
        else:
            print(key)
            print(
                f"created {record.id} ({record.name}): {_limits_text(record)}. The key above is "
                "shown this once; callers send it as 'authorization: Bearer <key>'.",
                file=sys.stderr,
            )
        return 0
    if args.keys_command == "list":
        records = store.list()
        if args.json:
            print(json.dumps([_key_json(r) for r in records], indent=2))
            return 0
        rows = [
            [
                r.id,
                r.name,
                r.prefix + "…",
                "revoked" if r.revoked_at else "live",
                ",".join(r.models) or "*",
                _limits_text(r),
                _when(r.created_at),
            ]
            for r in records
        ]
        _table(["id", "name", "key", "state", "models", "limits", "created (UTC)"], rows)
        return 0
    record = store.revoke(args.key)
    print(f"revoked {record.id} ({record.name})", file=sys.stderr)
    return 0


def _usage(db: Database, args: argparse.Namespace) -> int:
    from llmgateway.server.state.keys import KeyStore
    from llmgateway.server.state.ledger import parse_since, usage_sync

    now = time.time()
    since = parse_since(args.since, now)
    until = parse_since(args.until, now) if args.until else now
    keys = {r.id: r for r in KeyStore(db).list()}
    key_ids = None
    if args.key:
        # A name may have been reused after a revocation: every key that bore it.
        key_ids = [r.id for r in keys.values() if args.key in (r.id, r.name)]
        if not key_ids:
            raise ValueError(f"no key has the id or name {args.key!r}")
    rows = usage_sync(db, args.by, since, until, key_ids)
    if args.json:
        print(json.dumps([_usage_json(row, keys, args.by) for row in rows], indent=2))
        return 0
    print(f"usage from {_when(since)} to {_when(until)} UTC, by {args.by}", file=sys.stderr)
    table = [
        [
            _group_label(row.group, keys, args.by),
            str(row.calls),
            str(row.failed_calls),
            str(row.prompt_tokens),
            str(row.completion_tokens),
            str(row.cached_tokens),
            str(row.cache_write_tokens),
            str(row.reasoning_tokens),
            f"{row.cost_usd:.6f}",
        ]
        for row in rows
    ]
    total = [
        "TOTAL",
        str(sum(r.calls for r in rows)),
        str(sum(r.failed_calls for r in rows)),
        str(sum(r.prompt_tokens for r in rows)),
        str(sum(r.completion_tokens for r in rows)),
        str(sum(r.cached_tokens for r in rows)),
        str(sum(r.cache_write_tokens for r in rows)),
        str(sum(r.reasoning_tokens for r in rows)),
        f"{sum(r.cost_usd for r in rows):.6f}",
    ]
    _table(
        [
            args.by,
            "calls",
            "failed",
            "prompt",
            "completion",
            "cached",
            "cache write",
            "reasoning",
            "cost USD",
        ],
        [*table, total],
    )
    return 0


# How the table shows the empty group of a grouping (JSON keeps "").
_EMPTY_GROUP = {"route": "(not routed)", "task": "(no task)"}


def _group_label(group: str, keys: dict[str, CallerKey], by: str) -> str:
    if by != "key":
        return group or _EMPTY_GROUP.get(by, group)
    if not group:
        return "(no key)"
    return f"{keys[group].name} ({group})" if group in keys else group


def _usage_json(row: UsageRow, keys: dict[str, CallerKey], by: str) -> dict[str, Any]:
    fields = dataclasses.asdict(row)
    out: dict[str, Any] = {by: fields.pop("group"), **fields}
    if by == "key" and row.group in keys:
        out["key_name"] = keys[row.group].name
    return out


def _key_json(record: CallerKey) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "prefix": record.prefix,
        "models": list(record.models),
        "rpm": record.rpm,
        "tpm": record.tpm,
        "budget_usd": record.budget_usd,
        "budget_period": record.budget_period,
        "usage_reader": record.usage_reader,
        "created_at": _when(record.created_at),
        "revoked_at": _when(record.revoked_at) if record.revoked_at else None,
    }


def _limits_text(record: CallerKey) -> str:
    parts = []
    if record.rpm is not None:
        parts.append(f"{record.rpm} rpm")
    if record.tpm is not None:
        parts.append(f"{record.tpm} tpm")
    if record.budget_usd is not None:
        parts.append(f"${record.budget_usd:g}/{record.budget_period}")
    if record.usage_reader:
        parts.append("usage reader")
    return ", ".join(parts) or "no limits"


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _table(header: list[str], rows: list[list[str]]) -> None:
    # Cells can hold what a caller sent (the model a refused call named):
    # escaped as in text logs, so none can restyle or rewrite the terminal.
    lines = [[escape_text(str(cell)) for cell in line] for line in [header, *rows]]
    widths = [max(len(cell) for cell in column) for column in zip(*lines, strict=True)]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
