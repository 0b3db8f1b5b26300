#!/usr/bin/env bash
# The speed ceiling of a bf16 training step on this CPU (issue 13's rule: where 3x PyTorch is above
# it, reach 85% of it): every GEMM of the step and attention's products timed alone in oneDNN with
# operands already in bf16 (tests/ops/test_ceiling.cpp), plus every other op (AdamW, norms,
# SwiGLU, RoPE, cross-entropy, zeroing, copies) at the time `sft bench --profile` measures for it.
# Conversions to bf16 and packing count as zero, so this is a ceiling, not a prediction.
#   bench/ceiling.sh [--sft build/sft] [--test_ops build/test_ops] [--presets "tiny small base"] [--steps 3]
# Run it on an otherwise idle machine; it prints the CPU model first.
set -euo pipefail
sft=build/sft test_ops=build/test_ops presets="tiny small base" steps=3
while [ $# -gt 0 ]; do
  case "$1" in
    --sft) sft=$2; shift 2 ;;
    --test_ops) test_ops=$2; shift 2 ;;
    --presets) presets=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), bf16, $(nproc) threads"
printf '%-6s %12s %12s %14s %14s %12s %10s\n' preset "GEMM+attn ms" "other ms" "ceiling tok/s" "85% of it" "sft tok/s" "of ceiling"
for p in $presets; do
  line=$(SFT_CEILING_PRESETS=$p "$test_ops" --gtest_also_run_disabled_tests \
           --gtest_filter='GemmBench.DISABLED_StepCeiling' 2>&1 | grep "^ceiling $p ") ||
    { echo "$p: no ceiling line (AMX not usable here?)" >&2; continue; }
  gemm_s=$(echo "$line" | awk '{print $3}'); tokens=$(echo "$line" | awk '{print $4}')
  prof=$("$sft" bench --preset "$p" --dtype bf16 --steps "$steps" --profile 2>&1)
  # per-op lines: "<op> [shape] <seconds> <calls> <share>%"; everything but linear_* and attention_*
  other_s=$(echo "$prof" | awk -v s="$steps" '/%$/ && $1 !~ /^(linear_|attention_|op$)/ {t += $(NF-2)} END {printf "%.6f", t / s}')
  toks=$(echo "$prof" | awk '/^tokens\/s/ {print $2}')
  awk -v p="$p" -v g="$gemm_s" -v o="$other_s" -v n="$tokens" -v m="$toks" 'BEGIN {
    c = n / (g + o); printf "%-6s %12.1f %12.1f %14.0f %14.0f %12.0f %9.0f%%\n", p, g * 1e3, o * 1e3, c, 0.85 * c, m, 100 * m / c }'
done
echo "(sft tok/s from the same --profile run, which times each op separately and runs a little slower)"
