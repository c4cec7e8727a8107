#!/usr/bin/env bash
# Creates the Python virtual environment of the interop fixture (tests/interop/produce.py) and
# installs the pinned requirements.txt into it, once:
#
#   tests/interop/setup.sh          # target/interop-venv under the workspace root
#   TOLLGATE_INTEROP_VENV=DIR tests/interop/setup.sh
#
# The environment is complete when it holds a copy of the requirements.txt it was made from
# (`.requirements.txt`, written last); then the script does nothing. Concurrent runs wait for
# each other on a lock file. PYTHON picks the interpreter (default python3).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${TOLLGATE_INTEROP_VENV:-$root/target/interop-venv}"
stamp="$venv/.requirements.txt"

complete() { [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$stamp" "$here/requirements.txt"; }

complete && exit 0

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
complete && exit 0

echo "creating the interop virtual environment in $venv" >&2
rm -rf "$venv"
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input -r "$here/requirements.txt"
cp "$here/requirements.txt" "$stamp"
