#!/usr/bin/env bash
# Make PostgreSQL's server programs available for the state tests, which run
# every state test against SQLite and against a throwaway PostgreSQL server
# (tests/postgres.py starts and stops it). Installs Debian's package when the
# programs are missing; without root or apt it says so and the PostgreSQL
# variants of those tests are skipped.
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing PostgreSQL for the state tests" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    # The package starts a cluster of its own; the tests start their own instead.
    service postgresql stop >/dev/null 2>&1 || true
else
    echo "==> PostgreSQL is not installed; its state-test variants will be skipped" >&2
fi
