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
# On a branch: against main. On main itself (as CI runs): against the commit
# before, so every landed change is checked against what callers had.
branch=$(git rev-parse --abbrev-ref HEAD)
if [ "$branch" != "main" ] && git rev-parse --verify --quiet main >/dev/null; then
  buf breaking --against '.git#branch=main'
elif git rev-parse --verify --quiet HEAD~1 >/dev/null && git cat-file -e HEAD~1:protos 2>/dev/null; then
  buf breaking --against '.git#ref=HEAD~1'
else
  echo "no earlier contract to compare with" >&2
fi
echo "==> TypeScript stubs generate from the contract" >&2
stubs=$(mktemp -d)
buf generate --template buf.gen.ts.yaml -o "$stubs"
test -s "$stubs/ts/llmgateway/v1/completion_service_pb.ts"
rm -rf "$stubs"
echo "==> generated code matches protos/" >&2
before=$(mktemp -d)
trap 'rm -rf "$before"' EXIT
cp -r gen "$before/"
python scripts/generate.py >/dev/null 2>&1
if ! diff -r -x __pycache__ "$before/gen" gen >&2; then
  echo "gen/ did not match protos/: it has been regenerated now; review and commit it" >&2
  exit 1
fi
echo "==> lint passed" >&2
