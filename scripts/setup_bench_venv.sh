#!/usr/bin/env bash
# Creates .venv-bench: the newest PyTorch from PyPI (its CPU code runs here; the wheel pulls
# ~3 GB of CUDA libraries it does not use) with a matching HF Transformers, for the baseline of
# bench/compare.sh. Benchmarks only: no test needs it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv-bench"
pins="torch==2.15.0 transformers==5.24.0 numpy==2.4.6"
stamp="$venv/.pins"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$pins" ]]; then exit 0; fi
/usr/bin/python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check $pins
echo "$pins" > "$stamp"
