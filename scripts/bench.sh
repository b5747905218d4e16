#!/usr/bin/env bash
# Set up, then run the benchmark (see docs/performance.md). Arguments go to
# `python -m bench`: --quick, --smoke, --litellm, --workers N, --out DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m bench "$@"
