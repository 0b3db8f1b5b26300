#!/usr/bin/env bash
# Builds and runs the libFuzzer targets (fuzz/, clang with ASan + UBSan) in build-fuzz/.
#   scripts/fuzz.sh [TARGET|all] [SECONDS]  fuzz each target (default all, 30 s each), one at a time,
#                                           from its seeds; new inputs go to build-fuzz/corpus/TARGET,
#                                           findings to build-fuzz/findings/TARGET/
#   scripts/fuzz.sh --ci                    build, then replay the seeds and regression inputs and run
#                                           the fixed-seed smoke of every target (ctest -L fuzz)
#   scripts/fuzz.sh --seeds                 refresh the seeds the targets derive from a real save
#                                           (hf_index, checkpoint) in tests/fuzz/corpus/
# Needs clang (Debian's clang-14 with its libFuzzer runtime). A finding: copy the input into
# tests/fuzz/regressions/TARGET/ with the fix (see docs/reliability.md, "Fuzzing").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build-fuzz"
cc=${FUZZ_CC:-clang} cxx=${FUZZ_CXX:-clang++}
if ! command -v "$cxx" >/dev/null || ! command -v "$cc" >/dev/null; then
  echo "fuzz: SKIPPED: $cxx not found (apt-get install clang); the fuzz targets need clang's libFuzzer"
  exit 0
fi
jobs=${FUZZ_JOBS:-$(nproc)}
configure() {
  mkdir -p "$build"
  CC=$cc CXX=$cxx cmake -S "$root" -B "$build" -DSFT_FUZZ=ON -DSFT_CUDA=OFF -DSFT_MPI=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 1; }
}
targets() { for f in "$root"/fuzz/fuzz_*.cpp; do basename "$f" .cpp | sed 's/^fuzz_//'; done | grep -v '^util$'; }
build() {  # the build's output only when it fails
  cmake --build "$build" -j"$jobs" --target "$@" >"$build/build.log" 2>&1 || { tail -50 "$build/build.log"; exit 1; }
}

case "${1:-all}" in
  --ci)
    start=$(date +%s)
    configure
    build fuzz_all
    cd "$build"
    status=0
    ctest -L fuzz --output-on-failure -j1 | tee ctest-fuzz.out || status=$?
    echo "fuzz: $(grep -E '^[0-9]+% tests passed' ctest-fuzz.out || echo 'no summary'), $(( $(date +%s) - start )) s with the build"
    exit "$status" ;;
  --seeds)
    configure
    build fuzz_hf_index fuzz_checkpoint
    for t in hf_index checkpoint; do
      mkdir -p "$root/tests/fuzz/corpus/$t"
      SFT_FUZZ_SEED_OUT="$root/tests/fuzz/corpus/$t" "$build/fuzz_$t" -runs=1 2>&1 | tail -1
    done
    ls -l "$root"/tests/fuzz/corpus/{hf_index,checkpoint} ;;
  *)
    which=${1:-all} seconds=${2:-30}
    configure
    if [[ "$which" == all ]]; then list=$(targets); else list=$which; fi
    build $(for t in $list; do echo "fuzz_$t"; done)
    export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}" OMP_NUM_THREADS=1
    for t in $list; do
      work="$build/corpus/$t" findings="$build/findings/$t"
      mkdir -p "$work" "$findings"
      dict=()
      [[ -f "$root/tests/fuzz/dict/$t.dict" ]] && dict=(-dict="$root/tests/fuzz/dict/$t.dict")
      seeds=()
      for d in "$root/tests/fuzz/corpus/$t" "$root/tests/fuzz/regressions/$t"; do [[ -d "$d" ]] && seeds+=("$d"); done
      echo "=== fuzz_$t for ${seconds} s (new inputs: $work; findings: $findings)"
      nice -n 10 "$build/fuzz_$t" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -max_len=65536 \
        -print_final_stats=1 "${dict[@]}" -artifact_prefix="$findings/" "$work" "${seeds[@]}" 2>&1 |
        tee "$build/fuzz_$t.log" | grep -E '^(#[0-9]+.*(pulse|DONE)|stat::|==[0-9]+==ERROR|SUMMARY|Done)' || true
      ls "$findings" | sed 's/^/  finding: /'
    done ;;
esac
