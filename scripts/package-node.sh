#!/usr/bin/env bash
# CI for the npm package: pack clients/node, install the tarball into a fresh
# npm project outside the repository (its dependencies come from the npm
# registry), start a gateway against the fake upstream, and from that project
# run the README's example as written, a check of unary, streaming and decoded
# error details, and a TypeScript type-check of a consumer against the
# installed types. Needs .venv with the project installed and the root
# node_modules (scripts/bootstrap.sh --with-npm).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

work=$(mktemp -d)
gateway_pid=
cleanup() {
  if [[ -n $gateway_pid ]]; then
    kill "$gateway_pid" 2>/dev/null || true
    wait "$gateway_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Started first, so it comes up while npm packs and installs.
echo "==> a gateway against the fake upstream" >&2
port=$(node -e "const s = require('node:net').createServer().listen(0, '127.0.0.1', () => { console.log(s.address().port); s.close(); })")
PYTHONUNBUFFERED=1 "$repo/.venv/bin/llmgateway" demo --keep-running --address "127.0.0.1:$port" >"$work/demo.log" 2>&1 &
gateway_pid=$!

echo "==> npm pack clients/node" >&2
mkdir "$work/pack"
tarball=$(cd clients/node && npm pack --silent --pack-destination "$work/pack")
tarball=$work/pack/$tarball

echo "==> install $(basename "$tarball") into a fresh project ($work/project)" >&2
mkdir "$work/project"
cd "$work/project"
npm init -y >/dev/null
# typescript at the version the root package.json pins, only for the type-check below, and
# the Node 20 types smoke/tsconfig.json names (`"types": ["node"]`), pinned rather than
# whichever version a dependency happens to pull in (20.19.x needs TypeScript >= 5.3).
typescript=$(node -p "require('$repo/node_modules/typescript/package.json').version")
types_node=20.19.43
npm install --no-audit --no-fund --loglevel=error "$tarball" "typescript@$typescript" \
  "@types/node@$types_node"
installed_types=$(node -p "require('./node_modules/@types/node/package.json').version")
if [[ $installed_types != "$types_node" ]]; then
  echo "package-node: @types/node is $installed_types, not the pinned $types_node" >&2
  exit 1
fi
cp "$repo/clients/node/examples/example.mjs" "$repo"/clients/node/smoke/* .

# The demo says 'gateway still running' once its own streams are done.
for _ in $(seq 300); do
  if grep -q 'gateway still running' "$work/demo.log"; then break; fi
  if ! kill -0 "$gateway_pid" 2>/dev/null; then
    cat "$work/demo.log" >&2
    echo "package-node: the demo gateway exited" >&2
    exit 1
  fi
  sleep 0.1
done
grep -q 'gateway still running' "$work/demo.log" || {
  cat "$work/demo.log" >&2
  echo "package-node: the demo gateway did not come up in 30 s" >&2
  exit 1
}
export LLMGATEWAY_TARGET=127.0.0.1:$port

echo "==> node example.mjs (the README's example, as written)" >&2
node example.mjs | tee "$work/example.out"
grep -q '^complete: Hello from the fake upstream!' "$work/example.out"
grep -q '^stream: Hello from the fake upstream!.*\[FINISH_REASON_STOP' "$work/example.out"
grep -q '^error: INVALID_ARGUMENT UNKNOWN_MODEL$' "$work/example.out"
grep -q '^  model: ' "$work/example.out"

echo "==> installed-package check" >&2
node check-installed.mjs

echo "==> tsc --noEmit: ESM and CommonJS consumers against the installed types" >&2
npx --no-install tsc -p tsconfig.json
echo "npm package OK: $(basename "$tarball") installs and calls a gateway from $work/project" >&2
