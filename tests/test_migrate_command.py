"""`llmgateway migrate`: what a deployment's migration Job (deploy/helm) runs before an upgrade.

It applies the migrations the database lacks, prints the version on stdout (alone, for
scripts) and a sentence on stderr (for the Job's log), and exits 0; a database it cannot
use exits 2 with a message saying what to fix, never a traceback or a password.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

from llmgateway.server.process.cli import main
from llmgateway.server.state import schema
from llmgateway.server.state.db import Database
from llmgateway.server.state.schema import MIGRATIONS, migrate

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

LATEST = len(MIGRATIONS)


def applied_versions(location: str) -> list[int]:
    db = Database(location)
    try:
        rows = db.run_sync(
            lambda tx: tx.fetchall("SELECT version FROM schema_migrations ORDER BY version")
        )
    finally:
        db.close()
    return [int(row[0]) for row in rows]


def test_a_new_database_gets_every_migration_and_a_second_run_changes_nothing(
    db_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--db", db_location]) == 0
    out, err = capsys.readouterr()
    assert out == f"{LATEST}\n"
    assert f"schema version {LATEST} (applied migrations 1 to {LATEST})" in err
    assert applied_versions(db_location) == list(range(1, LATEST + 1))

    assert main(["migrate", "--db", db_location]) == 0
    out, err = capsys.readouterr()
    assert out == f"{LATEST}\n"
    assert f"schema version {LATEST} (already current)" in err
    assert applied_versions(db_location) == list(range(1, LATEST + 1))


def test_an_older_database_gets_only_the_migrations_it_lacks(
    db_location: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The database as a gateway two releases older left it.
    with monkeypatch.context() as older:
        older.setattr(schema, "MIGRATIONS", MIGRATIONS[: LATEST - 2])
        db = Database(db_location)
        try:
            assert migrate(db) == LATEST - 2
        finally:
            db.close()

    assert main(["migrate", "--db", db_location]) == 0
    out, err = capsys.readouterr()
    assert out == f"{LATEST}\n"
    assert f"(applied migrations {LATEST - 1} to {LATEST})" in err
    assert applied_versions(db_location) == list(range(1, LATEST + 1))


def test_a_database_newer_than_the_gateway_is_refused_and_left_alone(
    db_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = Database(db_location)
    try:
        migrate(db)
        db.run_sync(
            lambda tx: tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)",
                (LATEST + 1,),
            )
        )
    finally:
        db.close()

    assert main(["migrate", "--db", db_location]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("llmgateway: ")
    assert f"schema version {LATEST + 1}, newer than this gateway knows" in err
    assert "upgrade the gateway" in err
    assert "Traceback" not in err
    assert applied_versions(db_location) == [*range(1, LATEST + 1), LATEST + 1]


def test_an_unreachable_database_names_the_server_not_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Port 1 on loopback: nothing listens, so the connection is refused at once.
    assert main(["migrate", "--db", "postgresql://gw:s3cret@127.0.0.1:1/ledger"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "postgresql://gw@127.0.0.1:1/ledger" in err
    assert "connection failed" in err
    assert "s3cret" not in out + err
    assert "Traceback" not in err


def test_the_console_command_finds_the_database_in_llmgateway_db(tmp_path: Path) -> None:
    # The chart's Job passes the database only as LLMGATEWAY_DB (from a Secret), no flag.
    location = tmp_path / "state" / "llmgateway.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMGATEWAY_")}
    env["LLMGATEWAY_DB"] = str(location)
    done = subprocess.run(
        [sys.executable, "-m", "llmgateway.server.process.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{LATEST}\n"
    assert f"{location}: schema version {LATEST}" in done.stderr
    assert applied_versions(str(location)) == list(range(1, LATEST + 1))
