#!/usr/bin/env bash
# Runs every check and every test of the workspace, as CI does. Needs the Rust toolchain and
# python3: it installs (once, into ~/.cargo/bin) and starts a real Kafka-protocol broker for
# the Kafka tests, and stops it at the end; the Python client's test and the checks of deploy/
# set up their own venvs with pinned packages (scripts/python-client.sh,
# scripts/check-deploy.sh), and so does the statistics reference (scripts/stats-reference.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
    rustup component add "$component"
  fi
done

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== the core is pure"
scripts/check-core-purity.sh

echo "== kafka broker (tansu, on loopback)"
scripts/kafka.sh install
broker_dir=$(mktemp -d)
trap 'scripts/kafka.sh stop "$broker_dir"; rm -rf "$broker_dir"' EXIT
port=$(scripts/kafka.sh free-port 19092)
scripts/kafka.sh start "$broker_dir" "$port"
export CANVASS_TEST_KAFKA="127.0.0.1:$port"

echo "== deploy/: manifests and compose file against their schemas (offline)"
scripts/check-deploy.sh

echo "== the Python client (venv, packages, modules generated from proto/)"
scripts/python-client.sh >/dev/null

echo "== the statistics reference (venv with scipy and statsmodels, pinned)"
scripts/stats-reference.sh >/dev/null

echo "== cargo test"
cargo test --workspace --locked
