#!/usr/bin/env bash
# Static checks: ruff, mypy (strict), buf lint and format, and the generated-code drift check.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --with-npm
export PATH="$PWD/.venv/bin:$PWD/node_modules/.bin:$PATH"

echo "==> ruff" >&2
ruff check .
ruff format --check .
echo "==> mypy" >&2
mypy
echo "==> buf lint / format" >&2
buf lint
buf format --diff --exit-code
echo "==> buf breaking" >&2
# Against the commit that first published llmgateway.v1: no change since may
# break a caller of v1, however many commits ago it was made. On a branch,
# also against main.
first=$(git log --diff-filter=A --format=%H -- protos/llmgateway/v1/completion_service.proto | tail -n 1)
if [ -z "$first" ]; then
  echo "cannot find the commit that added the v1 contract (a shallow clone? git fetch --unshallow)" >&2
  exit 1
fi
buf breaking --against ".git#ref=$first"
branch=$(git rev-parse --abbrev-ref HEAD)
if [ "$branch" != "main" ] && git rev-parse --verify --quiet main >/dev/null; then
  buf breaking --against '.git#branch=main'
fi
echo "==> TypeScript stubs generate from the contract" >&2
stubs=$(mktemp -d)
buf generate --template buf.gen.ts.yaml -o "$stubs"
test -s "$stubs/ts/llmgateway/v1/completion_service_pb.ts"
rm -rf "$stubs"
echo "==> generated code matches protos/" >&2
# Compared, never rewritten: CI runs this beside the packaging steps, which read it.
python scripts/generate.py --check
echo "==> docs/routing.md matches the labelled prompts and the rules" >&2
python -m bench.routing_eval --check docs/routing.md
echo "==> lint passed" >&2
