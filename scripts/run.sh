#!/usr/bin/env bash
# Set up what running needs (no dev tools), then run the gateway.
#   No API keys in the environment: start a fake upstream and a gateway on
#   loopback and stream a completion from each provider into the terminal.
#   Any provider key set (OPENROUTER_, ZAI_, OPENAI_, ANTHROPIC_, GEMINI_ or
#   GOOGLE_, GROQ_API_KEY), or OLLAMA_BASE_URL (a local Ollama needs no key):
#   serve the real providers (llmgateway serve; extra arguments are passed
#   on, e.g. --address).
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
for name in OPENROUTER_API_KEY ZAI_API_KEY OPENAI_API_KEY ANTHROPIC_API_KEY GEMINI_API_KEY \
  GOOGLE_API_KEY GROQ_API_KEY OLLAMA_API_KEY OLLAMA_BASE_URL; do
  if [ -n "${!name:-}" ]; then
    exec .venv/bin/llmgateway serve "$@"
  fi
done
echo "==> no provider key (nor OLLAMA_BASE_URL) set: running the demo against the fake upstream" >&2
exec .venv/bin/llmgateway demo "$@"
