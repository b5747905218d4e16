#!/usr/bin/env bash
# Set up, then run the fault-injection suite and print its summary table (README,
# "Fault-injection suite"). Arguments go to `python -m faults`: --only TEXT.
# Exits non-zero if any fault ended with the wrong status, attempts or time, hung,
# or left an upstream connection or a task behind.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m faults "$@"
