#!/usr/bin/env bash
# CI: the container image recipe, checked without a container builder. Runs the Dockerfile's
# own commands outside a container (paths under a temporary root, free loopback ports): builds
# both wheels from the files the .dockerignore lets in, installs them into a fresh virtual
# environment, starts the image's CMD with no API keys, runs its HEALTHCHECK, stops it with
# SIGTERM. See scripts/image_check.py for what is run and what can only be read.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m scripts.image_check "$@"
