#!/usr/bin/env bash
# Make redis-server available for the limit tests, which run every limit test
# against a throwaway Redis too (tests/redis_server.py starts and stops it),
# and for the local cluster (scripts/cluster.sh). Installs Debian's package
# when the program is missing; without root or apt it says what to install
# (those tests fail rather than skip: Redis limits are a supported store).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing Redis (redis-server) for the limit tests and the local cluster" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    # The package starts a server of its own on port 6379; the tests and the
    # cluster start their own on free ports instead.
    service redis-server stop >/dev/null 2>&1 || true
    echo "==> installed $(redis-server --version | cut -d' ' -f1-3); stopped the service the package started" >&2
else
    echo "==> redis-server is not installed and this is not root with apt-get: install Redis" \
        "(e.g. apt-get install redis-server) or the Redis tests fail" >&2
fi
