#!/usr/bin/env bash
# Set up (the venv, npm packages, PostgreSQL for the state tests), then run
# the whole test suite: the Node.js client's tests, then pytest (extra
# arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --with-npm
# The state tests also run against PostgreSQL: install it when missing (as root).
bash scripts/ensure-postgres.sh
echo "==> Node.js client tests" >&2
PYTHON="$PWD/.venv/bin/python" npm test --silent
echo "==> pytest" >&2
exec .venv/bin/python -m pytest "$@"
