#!/usr/bin/env bash
# Build both Python distributions and install each where a user would.
#   1. Wheels of llmgateway-client (clients/python/) and llmgateway (the server)
#      into dist/ (kept: the image and npm checks in .ci/run use them); their
#      files: the client ships llmgateway/v1/*.pyi and both py.typed, the server
#      no llmgateway/__init__.py, llmgateway/v1, tests or repository tools.
#   2. A clean venv with the client wheel alone: nothing but grpcio,
#      grpcio-status, protobuf and what they pull in; llmgateway.client and
#      llmgateway.v1 import, llmgateway.server does not; a caller's mypy reads
#      it as typed (a misuse is reported, a correct use passes).
#   3. A clean venv with the server wheel (and the client wheel it depends on):
#      the installed distributions add no top-level import name but
#      `llmgateway` (besides their dependencies' own).
#   4. `llmgateway demo --keep-running` from the server venv, and the README's
#      Python examples ("Calling it from Python", as written there) run from
#      the client-only venv against it.
#   5. Each distribution's dependencies and installed size.
# Needs the dev .venv (mypy); fast with pip's cache warm.
# (A caller's mypy checks the generated messages' declared fields with the
# client alone; it also flags unknown fields once types-protobuf is installed,
# as without it protobuf's Message base class is Any.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
repo=$PWD
python=${PYTHON:-python3}
check=("$repo/scripts/check_install.py")

work=$(mktemp -d)
demo_pid=
stop_everything() {
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    kill "$demo_pid" 2>/dev/null || true
    wait "$demo_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap stop_everything EXIT
# Everything that imports runs from here, so this checkout's folders are not
# on sys.path: only what the wheels installed can be imported.
cd "$work"

# Venvs without pip of their own (ensurepip takes ~10 s each on a busy
# machine): the dev venv's pip installs into them.
new_venv() { "$python" -m venv --without-pip "$1"; }
pip_install() {
  "$repo/.venv/bin/python" -m pip --python "$1/bin/python" install --quiet \
    --disable-pip-version-check "${@:2}"
}
site_packages() {
  "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
}
kib() { du -sk "$1" | cut -f1; }

echo "==> building the wheels into dist/" >&2
# setuptools copies sources into build/ and reuses what it finds there: a
# module deleted since the last build would otherwise still be packaged.
rm -rf "$repo/build" "$repo/clients/python/build" "$repo"/dist/llmgateway*.whl
mkdir -p "$repo/dist"
"$repo/.venv/bin/python" -m pip wheel --quiet --disable-pip-version-check --no-deps \
  -w "$repo/dist" "$repo/clients/python" "$repo"
rm -rf "$repo/build" "$repo/clients/python/build"
client_wheel=$(echo "$repo"/dist/llmgateway_client-*.whl)
server_wheel=$(echo "$repo"/dist/llmgateway-[0-9]*.whl)
ls -l "$client_wheel" "$server_wheel" >&2

echo "==> what each wheel holds" >&2
"$repo/.venv/bin/python" "${check[@]}" wheel-files "$client_wheel" \
  --require 'llmgateway/client/py.typed' 'llmgateway/v1/py.typed' \
  'llmgateway/v1/completion_pb2.pyi' 'llmgateway/v1/completion_service_pb2.pyi' \
  'llmgateway/v1/completion_service_pb2_grpc.pyi' '*.dist-info/licenses/LICENSE' \
  --refuse 'llmgateway/__init__.py' 'llmgateway/server/*' 'llmgateway/testing/*'
"$repo/.venv/bin/python" "${check[@]}" wheel-files "$server_wheel" \
  --require 'llmgateway/server/py.typed' 'llmgateway/server/process/cli.py' \
  'llmgateway/testing/fake_upstream/*' '*.dist-info/licenses/LICENSE' \
  --refuse 'llmgateway/__init__.py' 'llmgateway/v1/*' 'llmgateway/client/*' \
  'faults/*' 'tests/*' 'bench/*' 'scripts/*' 'service/*' 'clients/*' 'fake_upstream/*'

echo "==> an empty venv (the size baseline)" >&2
new_venv "$work/empty"
baseline=$(kib "$(site_packages "$work/empty")")

echo "==> a clean venv with only the client wheel" >&2
client=$work/client-venv
new_venv "$client"
pip_install "$client" "$client_wheel"
"$client/bin/python" "${check[@]}" only-closure llmgateway-client \
  --forbid llmgateway psycopg psycopg-binary httpx aiohttp orjson prometheus-client \
  opentelemetry-api opentelemetry-sdk grpcio-health-checking grpcio-reflection
"$client/bin/python" -c 'import llmgateway.client, llmgateway.v1.completion_service_pb2_grpc'
if "$client/bin/python" -c 'import llmgateway.server' 2>/dev/null; then
  echo "FAIL: llmgateway.server imports with only the client installed" >&2
  exit 1
fi
"$client/bin/python" "${check[@]}" top-level --own llmgateway-client

echo "==> a caller's mypy reads the installed client as typed" >&2
mkdir -p "$work/typing/good" "$work/typing/bad"
cat > "$work/typing/good/caller.py" <<'EOF'
from llmgateway.client import CompletionClient, RateLimitedError
from llmgateway.v1 import completion_service_pb2


def ask(client: CompletionClient) -> str:
    try:
        response: completion_service_pb2.CompleteResponse = client.complete("zai/glm-4.7", "Hi")
    except RateLimitedError as error:
        wait: float | None = error.retry_after
        return f"retry in {wait}"
    return response.content
EOF
cat > "$work/typing/bad/caller.py" <<'EOF'
from llmgateway.client import CompletionClient


def ask(client: CompletionClient) -> int:
    CompletionClient(50051)
    tokens: int = client.complete("zai/glm-4.7", "Hi").content
    return tokens
EOF
typecheck() {
  # From a folder of its own (no configuration of this repository applies),
  # against the clean venv's site-packages only.
  (cd "$1" && "$repo/.venv/bin/mypy" --strict --python-executable "$client/bin/python" \
    --cache-dir "$work/mypy-cache" caller.py)
}
typecheck "$work/typing/good"
if bad=$(typecheck "$work/typing/bad"); then
  echo "FAIL: mypy accepted a misuse of the client: it does not see its types" >&2
  exit 1
fi
echo "$bad" >&2
for expected in 'Argument 1 to "CompletionClient" has incompatible type "int"' \
    'Incompatible types in assignment (expression has type "str", variable has type "int")'; do
  if ! grep -qF "$expected" <<<"$bad"; then
    echo "FAIL: mypy did not report: $expected" >&2
    exit 1
  fi
done

echo "==> a clean venv with the server wheel" >&2
server=$work/server-venv
new_venv "$server"
# The client wheel is offered beside it: llmgateway==X.Y.Z requires
# llmgateway-client==X.Y.Z, released from this repository with it.
pip_install "$server" "$client_wheel" "$server_wheel"
"$server/bin/python" "${check[@]}" top-level --own llmgateway llmgateway-client
for gone in service clients fake_upstream faults gen; do
  if "$server/bin/python" -c "import $gone" 2>/dev/null; then
    echo "FAIL: the server install makes '$gone' importable" >&2
    exit 1
  fi
done
# `llmgateway --version` names both installed distributions' versions: the
# ones their pyproject.toml files declare.
pyproject_version() {
  "$repo/.venv/bin/python" -c \
    'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$1"
}
server_version=$(pyproject_version "$repo/pyproject.toml")
client_version=$(pyproject_version "$repo/clients/python/pyproject.toml")
expected="llmgateway $server_version (llmgateway-client $client_version, contract llmgateway.v1)"
if ! said=$("$server/bin/llmgateway" --version 2>&1) || [ "$said" != "$expected" ]; then
  echo "FAIL: llmgateway --version said: $said" >&2
  echo "      expected: $expected" >&2
  exit 1
fi
echo "llmgateway --version: $said" >&2

echo "==> the README's Python examples, client-only venv -> demo gateway" >&2
# On the README's own address when it is free, so the examples run unchanged.
port=$("$server/bin/python" -c '
import socket
with socket.socket() as s:
    try:
        s.bind(("127.0.0.1", 50051))
    except OSError:
        s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
')
target=127.0.0.1:$port
"$server/bin/llmgateway" demo --keep-running --address "$target" >"$work/demo.log" 2>&1 &
demo_pid=$!
# Ready when the installed `llmgateway health` says SERVING (up to 60 s).
ready=0
for _ in $(seq 120); do
  if "$server/bin/llmgateway" health --target "$target" --timeout 1 >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.5
done
if [ "$ready" != 1 ]; then
  echo "FAIL: nothing SERVING on $target after 60 s" >&2
  cat "$work/demo.log" >&2
  exit 1
fi
# Extracted first: a README with no Python example there fails here.
examples=$("$client/bin/python" "${check[@]}" readme-examples "$repo/README.md" \
  --section "Calling it from Python" --target "localhost:$port" --out "$work/examples")
failed=0
for example in $examples; do
  echo "--- $(basename "$example")" >&2
  if ! timeout 120 "$client/bin/python" "$example" >"$example.out" 2>&1; then
    failed=$((failed + 1))
    echo "FAIL: README example $(basename "$example" .py) failed against the demo gateway:" >&2
    sed 's/^/    /' "$example.out" >&2
    echo "  its code:" >&2
    sed 's/^/    /' "$example" >&2
  else
    sed 's/^/    /' "$example.out" >&2
  fi
done
if [ "$failed" -gt 0 ]; then
  exit 1
fi

echo "==> what each distribution installs" >&2
"$client/bin/python" "${check[@]}" dependencies llmgateway-client
echo "llmgateway-client installed size: $(($(kib "$(site_packages "$client")") - baseline)) KiB (site-packages beyond an empty venv)"
"$server/bin/python" "${check[@]}" dependencies llmgateway
echo "llmgateway (server, with the client) installed size: $(($(kib "$(site_packages "$server")") - baseline)) KiB"
echo "==> packaging checks passed; wheels in dist/" >&2
