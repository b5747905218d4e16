#!/usr/bin/env bash
# Set up, then run the whole test suite: the Node.js client's tests, then
# pytest (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --with-npm
echo "==> Node.js client tests" >&2
PYTHON="$PWD/.venv/bin/python" npm test --silent
echo "==> pytest" >&2
exec .venv/bin/python -m pytest "$@"
