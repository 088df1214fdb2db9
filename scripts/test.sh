#!/usr/bin/env bash
# Runs every check and every test of the workspace, as CI does. Needs only the Rust toolchain.
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

echo "== cargo test"
cargo test --workspace --locked
