#!/usr/bin/env bash
# Set up what running needs (no dev tools), then run the gateway.
#   No API keys in the environment: start a fake upstream and a gateway on
#   loopback and stream a completion from each provider into the terminal.
#   OPENROUTER_API_KEY and/or ZAI_API_KEY set: serve the real providers
#   (llmgateway serve; extra arguments are passed on, e.g. --address).
#   --keep-running, keys or not: the demo, then its fake upstream and gateway
#   stay up on 127.0.0.1:50051 for the README's examples.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --run-only
for arg in "$@"; do
  if [ "$arg" = "--keep-running" ]; then
    exec .venv/bin/llmgateway demo "$@"
  fi
done
if [ -n "${OPENROUTER_API_KEY:-}" ] || [ -n "${ZAI_API_KEY:-}" ]; then
  exec .venv/bin/llmgateway serve "$@"
fi
echo "==> no OPENROUTER_API_KEY or ZAI_API_KEY set: running the demo against the fake upstream" >&2
exec .venv/bin/llmgateway demo "$@"
