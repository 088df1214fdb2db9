#!/usr/bin/env bash
# Sets up the reference implementations the reports' statistics are checked against: a venv
# under target/stats-reference with tests/stats/requirements.txt (scipy, statsmodels, pinned).
# Prints the venv's python. Needs python3 (with venv and pip) and, the first time, PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
root=target/stats-reference
scripts/venv.sh "$root/venv" tests/stats/requirements.txt "for the statistics reference"
echo "$PWD/$root/venv/bin/python"
