#!/usr/bin/env bash
# Set up, then run the benchmark (see docs/performance.md). Arguments go to
# `python -m bench`: --quick, --smoke, --compare (LiteLLM's and Portkey's
# gateways too), --litellm, --portkey, --loadgen go|python, --workers N, --out DIR.
#   ./scripts/bench.sh --compare          the whole comparison (the figures in the docs)
#   ./scripts/bench.sh --quick --compare  the same loads, shorter
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m bench "$@"
