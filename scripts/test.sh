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
status=0
ctest --output-on-failure -j1 | tee ctest.out || status=$?
# Which tests skipped and why (gtest prints "<file>:<line>: Skipped" and the reason before the
# "[  SKIPPED ]" line; ctest keeps every test's output in LastTest.log), then ctest's summary again.
if grep -q '^\[  SKIPPED \]' Testing/Temporary/LastTest.log 2>/dev/null; then
  echo "skipped tests and their reasons:"
  awk '/: Skipped$/ { getline why; reason = why } /^\[  SKIPPED \] [A-Za-z]/ { print "  " $4 ": " reason }' \
    Testing/Temporary/LastTest.log | sort -u
fi
grep -E '^[0-9]+% tests passed' ctest.out || true
# The fuzz targets (clang, ASan + UBSan, build-fuzz/): every seed and regression input replayed and
# a fixed-seed smoke per target (scripts/fuzz.sh --ci, its own summary line; skipped, saying so,
# where clang is not installed). Bounded: ctest TIMEOUT per check, and this whole step.
timeout 1800 bash "$root/scripts/fuzz.sh" --ci || { fuzz_status=$?; echo "fuzz: FAILED (exit $fuzz_status)"; status=1; }
# ctest's summary of the main suite stays the last line (what CI reads).
grep -E '^[0-9]+% tests passed' "$build/ctest.out" || true
exit "$status"
