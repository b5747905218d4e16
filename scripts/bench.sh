#!/usr/bin/env bash
# Set up, then run the benchmark (see docs/performance.md). Arguments go to
# `python -m bench`: --quick, --smoke, --compare (LiteLLM's and Portkey's
# gateways too), --litellm, --portkey, --loadgen go|python, --repeat N,
# --workers N, --out DIR.
#   ./scripts/bench.sh --compare          the whole comparison (the figures in the docs)
#   ./scripts/bench.sh --quick --compare  the same loads, shorter
#   ./scripts/bench.sh --smoke            CI's: tiny loads, Python's load generator
set -euo pipefail
cd "$(dirname "$0")/.."
# The Go load generator's build generates its messages with buf, from npm.
npm=--with-npm
for arg in "$@"; do
  if [ "$arg" = --smoke ]; then npm=; fi
done
bash scripts/bootstrap.sh ${npm:+"$npm"}
exec .venv/bin/python -m bench "$@"
