#!/usr/bin/env bash
# CI: the Kubernetes artefacts, checked offline. Renders deploy/helm/llmgateway (default values,
# ci/full.yaml, ci/minimal.yaml), validates every object against the Kubernetes 1.27 and 1.37
# schemas (strict) and the CRD kinds against the @kubernetes-models npm packages, asserts the
# deployment's properties, lints the chart, checks deploy/rendered/ is current and validates
# deploy/envoy/envoy.yaml with Envoy. See scripts/deploy_check.py.
#   --write       regenerate deploy/rendered/llmgateway.yaml from the chart
#   --no-render   validate the committed deploy/rendered/ manifests only (no renderer needed)
# The renderer and the schemas (about 390 MB) live in a virtual environment outside the
# repository, one per set of pins, reused by every later run:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/llmgateway/deploy-venv-<hash of the pins>
set -euo pipefail
cd "$(dirname "$0")/.."

# Exact pins, transitive ones included: helm-python-sdk is young (alpha, one maintainer), so
# nothing moves under the check without a commit here.
pins=(
  helm-python-sdk==0.2.2
  kubernetes-validate==1.37.0
  attrs==26.1.0
  importlib_resources==7.1.0
  jsonschema==4.26.0
  jsonschema-specifications==2025.9.1
  packaging==26.4
  PyYAML==6.0.4
  referencing==0.37.0
  rpds-py==2026.9.1
  typing_extensions==4.16.0
)
python=${PYTHON:-python3}
key=$({ "$python" -c 'import sys; print(sys.version)'; printf '%s\n' "${pins[@]}"; } | sha256sum | cut -c1-16)
venv="${XDG_CACHE_HOME:-$HOME/.cache}/llmgateway/deploy-venv-$key"
if [ ! -f "$venv/.complete" ]; then
  echo "==> installing the chart renderer and Kubernetes schemas into $venv" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"
  touch "$venv/.complete"
fi
if [ ! -d node_modules/@kubernetes-models ]; then
  bash scripts/bootstrap.sh --with-npm
fi
exec "$venv/bin/python" scripts/deploy_check.py "$@"
