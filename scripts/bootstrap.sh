#!/usr/bin/env bash
# Set up everything the other scripts need; cheap to run again.
#   .venv/         both distributions, editable: llmgateway-client (clients/python/)
#                  and llmgateway (the server, from the root), plus
#                  - by default: the dev and benchmark tools (pytest, mypy, ruff,
#                    matplotlib...), for the test, lint, bench and fault scripts;
#                  - with --run-only: nothing else, just what running the gateway
#                    needs (./scripts/run.sh).
#   node_modules/  buf and the Node.js client's packages, locked in package-lock.json
#                  (only with --with-npm)
# pip only ever adds here: a --run-only set-up after a dev one keeps the dev
# tools, and a dev set-up after a --run-only one adds them.
set -euo pipefail
cd "$(dirname "$0")/.."

run_only=0
with_npm=0
for arg in "$@"; do
  case "$arg" in
    --run-only) run_only=1 ;;
    --with-npm) with_npm=1 ;;
    *)
      echo "bootstrap.sh: unknown option '$arg' (use --run-only and/or --with-npm)" >&2
      exit 2
      ;;
  esac
done

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "llmgateway needs Python 3.11 or newer (tried '$python'; set PYTHON=... to choose)." >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv" >&2
  "$python" -m venv .venv
fi

# Reinstall only when a dependency list changed: both distributions' pyproject
# files count (the server pins the client's version; the client lists its own
# ranges). One stamp per set, so each set knows whether it is current.
wanted=$(.venv/bin/python -c '
import hashlib
digest = hashlib.sha256()
for path in ("pyproject.toml", "clients/python/pyproject.toml"):
    with open(path, "rb") as file:
        digest.update(file.read())
print(digest.hexdigest())
')
run_stamp=.venv/.installed-run
dev_stamp=.venv/.installed-dev
# setuptools warns on every editable install that a folder named like the
# package may shadow it: here that is by design (the source roots are the
# packages), so that one warning is silenced; any other still shows.
pip=(env "PYTHONWARNINGS=ignore:Editable installation.:UserWarning"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check)

current() { [ -f "$1" ] && [ "$(cat "$1")" = "$wanted" ]; }

if [ "$run_only" = 1 ]; then
  # A current dev set-up already holds everything running needs.
  if ! current "$run_stamp" && ! current "$dev_stamp"; then
    echo "==> installing llmgateway-client and llmgateway into .venv (what running needs)" >&2
    "${pip[@]}" --upgrade pip
    # Both, in one resolve: the server depends on llmgateway-client of the same version,
    # which comes from clients/python/ here, not from an index.
    "${pip[@]}" -e clients/python -e .
    echo "$wanted" > "$run_stamp"
  fi
elif ! current "$dev_stamp"; then
  echo "==> installing llmgateway-client, llmgateway and the dev tools into .venv" >&2
  "${pip[@]}" --upgrade pip
  "${pip[@]}" -e clients/python -e '.[dev,bench]'
  echo "$wanted" > "$dev_stamp"
  echo "$wanted" > "$run_stamp"
fi

if [ "$with_npm" = 1 ]; then
  npm_stamp=node_modules/.installed-from
  npm_wanted=$(.venv/bin/python -c 'import hashlib, sys; print(hashlib.sha256(open("package-lock.json", "rb").read()).hexdigest())')
  if [ ! -f "$npm_stamp" ] || [ "$(cat "$npm_stamp")" != "$npm_wanted" ]; then
    echo "==> installing buf and the Node.js client's packages from npm" >&2
    npm ci --no-audit --no-fund --silent
    echo "$npm_wanted" > "$npm_stamp"
  fi
fi
