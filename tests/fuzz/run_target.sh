#!/usr/bin/env bash
# One CI check of a fuzz target (registered by cmake/fuzz.cmake, label "fuzz"):
#   replay BINARY NAME  every seed (tests/fuzz/corpus/NAME) and regression input
#                       (tests/fuzz/regressions/NAME) once (-runs=0): none may crash
#   smoke  BINARY NAME  a fixed-seed run (-seed=1) of a fixed number of inputs from the seeds, with
#                       the target's dictionary: a few seconds, the same inputs every time
# Inputs of bugs not fixed yet live in tests/fuzz/regressions/pending/ and are not replayed.
set -euo pipefail
mode=$1 bin=$2 name=$3
here=$(cd "$(dirname "$0")" && pwd)
corpus="$here/corpus/$name" regress="$here/regressions/$name" dict="$here/dict/$name.dict"
# Inputs per smoke run: about 3-4 s each on one free core (Intel Xeon; 130-5000 inputs/s by target).
declare -A smoke_runs=([safetensors]=1000 [llama_config]=800 [hf_index]=800 [tokenizer_json]=800
  [tokenizer_config]=2000 [sentencepiece]=1000 [tokenize]=10000 [data]=800 [jinja]=5000 [chat_template]=800
  [options]=800 [checkpoint]=400)
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}" OMP_NUM_THREADS=1
common=(-rss_limit_mb=4096 -timeout=30 -print_final_stats=1)
dirs=()
[[ -d "$corpus" ]] && dirs+=("$corpus")
[[ -d "$regress" ]] && dirs+=("$regress")
case "$mode" in
  replay)
    (( ${#dirs[@]} )) || { echo "no seeds or regression inputs for $name"; exit 1; }
    exec "$bin" "${common[@]}" -runs=0 "${dirs[@]}" ;;
  smoke)
    work=$(mktemp -d "${TMPDIR:-/tmp}/sft-fuzz-smoke-$name.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    extra=()
    [[ -f "$dict" ]] && extra+=(-dict="$dict")
    "$bin" "${common[@]}" -seed=1 -runs="${smoke_runs[$name]:-2000}" -max_len=65536 "${extra[@]}" \
      -artifact_prefix="$work/" "$work" "${dirs[@]}" || {
      status=$?
      for f in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
        [[ -e "$f" ]] && { echo "finding: $f"; od -c "$f" | head -20; }
      done
      exit "$status"
    } ;;
  *) echo "usage: $0 replay|smoke BINARY NAME" >&2; exit 2 ;;
esac
