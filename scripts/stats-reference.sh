#!/usr/bin/env bash
# Sets up the reference implementations the reports' statistics are checked against: a venv
# under target/stats-reference with tests/stats/requirements.txt (scipy, statsmodels, pinned).
# Prints the venv's python. Needs python3 (with venv and pip) and, the first time, PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
root=target/stats-reference
command -v python3 >/dev/null || { echo "python3 is needed for the statistics reference" >&2; exit 1; }
if [ ! -x "$root/venv/bin/python" ]; then
  python3 -m venv "$root/venv"
fi
"$root/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r tests/stats/requirements.txt >&2
echo "$PWD/$root/venv/bin/python"
