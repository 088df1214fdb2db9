#!/usr/bin/env bash
# Sets up the example Python client: a venv with its pinned packages (grpcio, grpcio-tools,
# protobuf) under target/python, and the canvass.v1 modules generated from proto/ into
# target/python/gen. Prints the venv's python. Needs python3 (with venv and pip).
set -euo pipefail
cd "$(dirname "$0")/.."
root=target/python
scripts/venv.sh "$root/venv" examples/python/requirements.txt "for the Python client"
rm -rf "$root/gen"
mkdir -p "$root/gen"
"$root/venv/bin/python" -m grpc_tools.protoc -I proto \
  --python_out="$root/gen" --grpc_python_out="$root/gen" \
  proto/canvass/v1/*.proto
# The generated modules import `canvass.v1...`: make both levels packages.
touch "$root/gen/canvass/__init__.py" "$root/gen/canvass/v1/__init__.py"
echo "$PWD/$root/venv/bin/python"
