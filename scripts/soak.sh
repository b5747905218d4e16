#!/usr/bin/env bash
# Set up, then run the soak (see docs/performance.md, "Soak"). Arguments go to
# `python -m bench.soak`: --duration SECONDS, --smoke, --callers N, --seed N, --out DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m bench.soak "$@"
