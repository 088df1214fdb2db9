#!/usr/bin/env bash
# Makes (once) a Python venv at $1 and installs the pinned packages of requirements file $2
# into it; prints nothing on stdout. `needed_for` ($3) says what python3 is needed for when
# it is missing. Used by the scripts that check things with Python tools.
set -euo pipefail
venv=$1 requirements=$2 needed_for=$3
command -v python3 >/dev/null || { echo "python3 is needed $needed_for" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
