#!/usr/bin/env bash
# Static checks: ruff, mypy (strict), buf lint and format, and the generated-code drift check.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --with-buf
export PATH="$PWD/.venv/bin:$PWD/node_modules/.bin:$PATH"

echo "==> ruff" >&2
ruff check .
ruff format --check .
echo "==> mypy" >&2
mypy
echo "==> buf lint / format" >&2
buf lint
buf format --diff --exit-code
echo "==> buf breaking (against the previous commit, when it had a contract)" >&2
if git rev-parse --verify --quiet HEAD~1 >/dev/null && git cat-file -e HEAD~1:protos 2>/dev/null; then
  buf breaking --against '.git#ref=HEAD~1'
else
  echo "no earlier contract to compare with" >&2
fi
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
