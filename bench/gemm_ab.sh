#!/usr/bin/env bash
# A/B of the CPU GEMM routes (src/backend/cpu/matmul.cpp): `sft bench` tokens/s with SFT_GEMM=onednn
# and SFT_GEMM=ours (the default where the CPU has AVX-512), alternated run by run, best of --rounds each;
# then, with --gemm, the per-shape GFLOP/s table of tests/ops GemmBench (ours vs oneDNN).
#   bench/gemm_ab.sh [--sft build/sft] [--test_ops build/test_ops] [--presets "tiny small base"]
#                    [--dtypes "bf16 fp32"] [--rounds 3] [--steps 3] [--threads 2] [--gemm]
# GEMM_AB_WAIT, if set, is run before every measurement (e.g. a script that waits for idle CPUs:
# the machines are shared and noisy, so compare only numbers from one invocation).
set -euo pipefail
sft=build/sft test_ops=build/test_ops presets="tiny small base" dtypes="bf16 fp32"
rounds=3 steps=3 threads=2 gemm=0
while [ $# -gt 0 ]; do
  case "$1" in
    --sft) sft=$2; shift 2 ;;
    --test_ops) test_ops=$2; shift 2 ;;
    --presets) presets=$2; shift 2 ;;
    --dtypes) dtypes=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --gemm) gemm=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

wait_hook() { if [ -n "${GEMM_AB_WAIT:-}" ]; then $GEMM_AB_WAIT >/dev/null 2>&1 || true; fi; }

# tokens/s of one run (the "tokens/s" field of sft bench's last line)
run() {
  SFT_GEMM=$1 "$sft" bench --preset "$2" --dtype "$3" --threads "$threads" --steps "$steps" 2>&1 |
    awk '/^tokens\/s/ {print $2}'
}

printf "%-6s %-5s | %-28s | %-28s\n" preset dtype "SFT_GEMM=onednn" "SFT_GEMM=ours (default)"
for preset in $presets; do
  for dtype in $dtypes; do
    declare -A best=([onednn]=0 [ours]=0) all=([onednn]="" [ours]="")
    for _ in $(seq "$rounds"); do
      for route in onednn ours; do
        wait_hook
        t=$(run "$route" "$preset" "$dtype")
        [ -z "$t" ] && { echo "sft bench failed ($preset $dtype $route)" >&2; exit 1; }
        all[$route]="${all[$route]} $t"
        best[$route]=$(awk -v a="${best[$route]}" -v b="$t" 'BEGIN {print (b > a ? b : a)}')
      done
    done
    printf "%-6s %-5s |" "$preset" "$dtype"
    for route in onednn ours; do printf " %7s (%-18s) |" "${best[$route]}" "${all[$route]# }"; done
    printf "\n"
    unset best all
  done
done

if [ "$gemm" = 1 ]; then
  wait_hook
  OMP_NUM_THREADS=$threads "$test_ops" --gtest_also_run_disabled_tests --gtest_filter='GemmBench.*' |
    grep -v '^\[\|^Running\|^Note'
fi
