#!/usr/bin/env bash
# Validates the deployment files against their schemas, so that a broken one fails the test
# command: the Kubernetes manifests (deploy/k8s) with kubernetes-validate (--strict: unknown
# fields are errors too) and the compose file against the compose specification with
# check-jsonschema, both with the schemas they bundle (no network once installed; the
# settings inside are parsed by tests/deploy.rs). Needs python3 (with venv and pip) and, the
# first time, PyPI; the checkers' venv lives under target/deploy-check, its packages pinned
# in deploy/requirements-check.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
root=target/deploy-check
scripts/venv.sh "$root/venv" deploy/requirements-check.txt "to check deploy/"

echo "== deploy/k8s: Kubernetes manifests"
"$root/venv/bin/kubernetes-validate" --strict --quiet deploy/k8s/*.yaml
echo "== deploy/docker-compose.yml: the compose specification"
"$root/venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/docker-compose.yml
echo "deploy/ is valid"
