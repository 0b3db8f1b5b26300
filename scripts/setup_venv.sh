#!/usr/bin/env bash
# Creates .venv (Debian's python3 + python3-torch, with the pinned test references from PyPI).
# Used only by tests and benchmarks; sft itself never runs Python.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
req="$root/scripts/requirements-test.txt"
# FastChat's data code (the reference of tests/data), without its serving dependencies.
req_fastchat="$root/scripts/requirements-fastchat.txt"
stamp="$venv/.requirements.sha"
want=$(cat "$req" "$req_fastchat" | sha256sum | cut -d' ' -f1)
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then exit 0; fi
/usr/bin/python3 -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r "$req_fastchat"
echo "$want" > "$stamp"
