#!/usr/bin/env bash
# Set up everything the other scripts need; cheap to run again.
#   .venv/         the project and its dev tools (pinned in pyproject.toml)
#   node_modules/  buf and the Node.js client's packages, locked in package-lock.json
#                  (only with --with-npm)
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "llmgateway needs Python 3.11 or newer (tried '$python'; set PYTHON=... to choose)." >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv" >&2
  "$python" -m venv .venv
fi

# Reinstall only when the dependency list changed.
stamp=.venv/.installed-from
wanted=$(cat pyproject.toml | .venv/bin/python -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "==> installing llmgateway and its dev tools into .venv" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
  echo "$wanted" > "$stamp"
fi

if [ "${1:-}" = "--with-npm" ]; then
  npm_stamp=node_modules/.installed-from
  npm_wanted=$(.venv/bin/python -c 'import hashlib, sys; print(hashlib.sha256(open("package-lock.json", "rb").read()).hexdigest())')
  if [ ! -f "$npm_stamp" ] || [ "$(cat "$npm_stamp")" != "$npm_wanted" ]; then
    echo "==> installing buf and the Node.js client's packages from npm" >&2
    npm ci --no-audit --no-fund --silent
    echo "$npm_wanted" > "$npm_stamp"
  fi
fi
