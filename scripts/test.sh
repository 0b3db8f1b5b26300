#!/usr/bin/env bash
# Every test: installs what is missing, builds, creates the test virtualenv (pinned HF
# references over Debian's PyTorch) and runs ctest. --sanitize uses an ASan+UBSan build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build"; extra=()
if [[ "${1:-}" == "--sanitize" ]]; then build="$root/build-sanitize"; extra=(--sanitize); fi
bash "$root/scripts/setup.sh" --test --build-dir "$build" "${extra[@]}"
bash "$root/scripts/setup_venv.sh"
bash "$root/scripts/setup_template_venv.sh"
cd "$build"
ctest --output-on-failure -j1
