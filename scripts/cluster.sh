#!/usr/bin/env bash
# A local cluster on loopback: Envoy (deploy/envoy/envoy.yaml) before several `llmgateway
# serve` replicas sharing PostgreSQL and Redis, over the fake upstream. No keys, no network.
#   scripts/cluster.sh up [--replicas N] [--limits redis|postgres] [--port P]
#   scripts/cluster.sh status | key NAME [--rpm N] [--tpm N] [--budget-usd X --per day|month]
#   scripts/cluster.sh kill I | stop I | start I      (replica I: crash, drain, start again)
#   scripts/cluster.sh down                           (stops everything, removes the run dir)
#   scripts/cluster.sh proof [--ci|--full]            (tests/test_cluster_proofs.py)
# `up` prints `export LLMGATEWAY_TARGET=... LLMGATEWAY_API_KEY=...` on stdout, so
# `eval "$(scripts/cluster.sh up)"` points `llmgateway chat` at it. State and logs live in
# ${LLMGATEWAY_CLUSTER_DIR:-/tmp/llmgateway-cluster-$UID}. See scripts/cluster.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m scripts.cluster "$@"
