# syntax=docker/dockerfile:1
# The gateway's container image; building, running and probing it: docs/deployment.md.
#
# scripts/image-check.sh (run by CI, where no container builder exists) reads this file and
# executes its RUN, ENV, HEALTHCHECK and ENTRYPOINT/CMD instructions outside a container, with
# the image's absolute paths moved under a temporary root. Each RUN is marked on the comment
# line above it: `# image-check: run` (the check runs it as written) or
# `# image-check: skip <why>` (it cannot, e.g. it needs root). An unmarked RUN fails the check.

# Pinned to a minor version; patch releases (security fixes) arrive with rebuilds. 3.11 is the
# interpreter CI checks these instructions with. For a reproducible build pass a digest:
#   --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: the two wheels, from the sources the .dockerignore lets in ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY . .
# image-check: run
RUN python -m pip wheel --no-deps --wheel-dir /wheels clients/python .

# ---- runtime: a virtual environment with the wheels, no build tools, no source tree ----
FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# A fixed UID/GID, so volume ownership and Kubernetes' runAsUser can name it.
# image-check: skip creating a system user needs root; the check makes the data directory itself
RUN groupadd --system --gid 10001 llmgateway \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/llmgateway --shell /usr/sbin/nologin llmgateway \
 && install -d --owner=10001 --group=10001 --mode=0700 /var/lib/llmgateway
# The wheels are bind-mounted from the build stage, so no layer keeps a copy of them.
# image-check: run
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/llmgateway \
 && /opt/llmgateway/bin/python -m pip install /wheels/*.whl

# One worker per container: a Kubernetes CPU limit does not shrink the cores a process sees, so
# the default (one per core) could start dozens; scale with replicas, or raise it to the CPU limit.
# The SQLite state lives in the data directory: mount a volume there, or point LLMGATEWAY_DB at
# PostgreSQL (needed for more than one replica).
# Settings are ENV, not flags in CMD: a `serve` flag would beat an operator's `-e` and the
# config file. gRPC listens on the gateway's default, 0.0.0.0:50051 (LLMGATEWAY_ADDRESS).
ENV PATH=/opt/llmgateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LLMGATEWAY_WORKERS=1 \
    LLMGATEWAY_DB=/var/lib/llmgateway/llmgateway.db \
    LLMGATEWAY_METRICS_ADDRESS=0.0.0.0:9464
WORKDIR /var/lib/llmgateway
USER 10001:10001

# gRPC, and Prometheus metrics at /metrics.
EXPOSE 50051 9464
# The gateway drains on SIGTERM: NOT_SERVING, then in-flight calls finish within
# LLMGATEWAY_SHUTDOWN_GRACE (30 s). Give `docker stop -t` / terminationGracePeriodSeconds more.
STOPSIGNAL SIGTERM
# The standard grpc.health.v1 check of the whole gateway (service ""). With TLS on the listener,
# override it: see docs/deployment.md. `llmgateway health` exits 2 when nothing answers, a code
# Docker reserves, so the shell turns every failure into 1 (unhealthy).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["sh", "-c", "llmgateway health --target 127.0.0.1:50051 --timeout 3 || exit 1"]
# Exec form: llmgateway is PID 1 and receives the stop signal itself.
ENTRYPOINT ["llmgateway"]
CMD ["serve"]
