#!/usr/bin/env bash
# A/B of the CPU GEMM routes (src/backend/cpu/gemm_route.h, matmul.cpp): `sft bench` tokens/s with
# SFT_GEMM unset (the route chosen for this CPU: AMX, ours, or fp32 FMA math), =ours and =onednn,
# alternated run by run; the median and all runs of --rounds each; then, with --gemm, the per-shape
# GFLOP/s table of tests/ops GemmBench (ours vs oneDNN, and the backend's AMX path).
#   bench/gemm_ab.sh [--sft build/sft] [--test_ops build/test_ops] [--presets "tiny small base"]
#                    [--dtypes "bf16 fp32"] [--routes "default ours onednn"] [--rounds 3] [--steps 3]
#                    [--threads 2] [--gemm]
# It prints the CPU model and the routes (`sft bench` route report) first. GEMM_AB_WAIT, if set, is
# run before every measurement (e.g. a script that waits for idle CPUs: the machines are shared and
# noisy, so compare only numbers from one invocation).
set -euo pipefail
sft=build/sft test_ops=build/test_ops presets="tiny small base" dtypes="bf16 fp32"
rounds=3 steps=3 threads=2 gemm=0 routes="default ours onednn"
while [ $# -gt 0 ]; do
  case "$1" in
    --sft) sft=$2; shift 2 ;;
    --test_ops) test_ops=$2; shift 2 ;;
    --presets) presets=$2; shift 2 ;;
    --dtypes) dtypes=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --routes) routes=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --gemm) gemm=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

wait_hook() { if [ -n "${GEMM_AB_WAIT:-}" ]; then $GEMM_AB_WAIT >/dev/null 2>&1 || true; fi; }

# tokens/s of one run (the "tokens/s" field of sft bench's last line); route "default" = SFT_GEMM unset
run() {
  local env=$1; [ "$env" = default ] && env=""
  SFT_GEMM=$env "$sft" bench --preset "$2" --dtype "$3" --threads "$threads" --steps "$steps" 2>&1 |
    awk '/^tokens\/s/ {print $2}'
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print (NR % 2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $threads threads"
printf "%-6s %-5s" preset dtype
for route in $routes; do printf " | %-30s" "SFT_GEMM=$route median (runs)"; done
printf "\n"
for preset in $presets; do
  for dtype in $dtypes; do
    declare -A all=()
    for _ in $(seq "$rounds"); do
      for route in $routes; do
        wait_hook
        t=$(run "$route" "$preset" "$dtype")
        [ -z "$t" ] && { echo "sft bench failed ($preset $dtype $route)" >&2; exit 1; }
        all[$route]="${all[$route]:-} $t"
      done
    done
    printf "%-6s %-5s" "$preset" "$dtype"
    for route in $routes; do printf " | %7s (%-20s)" "$(echo "${all[$route]}" | median)" "${all[$route]# }"; done
    printf "\n"
    unset all
  done
done

if [ "$gemm" = 1 ]; then
  wait_hook
  OMP_NUM_THREADS=$threads "$test_ops" --gtest_also_run_disabled_tests --gtest_filter='GemmBench.*' |
    grep -v '^\[\|^Running\|^Note'
fi
