#!/usr/bin/env bash
# Set up (the venv, npm packages, PostgreSQL for the state tests), then run
# the whole test suite: the Node.js client's tests, then pytest in two
# processes (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --with-npm
# The state tests also run against PostgreSQL: install it when missing (as root).
bash scripts/ensure-postgres.sh
echo "==> Node.js client tests" >&2
PYTHON="$PWD/.venv/bin/python" npm test --silent
echo "==> pytest" >&2
# Two processes, each taking whole test files (their fixtures and fixed ports
# stay in one process): most tests wait on sockets and timers, so this halves
# the wall time on two cores. `-n 0` among the arguments runs one process.
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
