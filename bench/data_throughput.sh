#!/usr/bin/env bash
# Data preparation throughput (issue 3): LLaMA-Factory's Alpaca demo (../shared) replicated to
# >= 100 MB, read + validated + rendered (vicuna_v1.1) + tokenized with labels by sft on all cores,
# against FastChat's own json.load + preprocess() (slow LlamaTokenizer, .venv) on the first N
# samples of the same file, extrapolated per sample; also sft's peak RSS on the file, and the file
# rendered with a model's own Jinja template (auto) against the built-in llama-2 one.
# Usage: bench/data_throughput.sh [--build DIR] [--fastchat_samples N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build"; n=3000
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --fastchat_samples) n="$2"; shift 2 ;;
    *) echo "data_throughput.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x "$build/test_data" ]] || { echo "data_throughput.sh: $build/test_data not built (bash scripts/setup.sh --test)" >&2; exit 1; }
SFT_DATA_BENCH_FASTCHAT_SAMPLES="$n" "$build/test_data" --gtest_also_run_disabled_tests \
  --gtest_filter='Data.DISABLED_Throughput' | grep -E '^\[ (sft|FastChat|ratio) '
big="$build/data-test/alpaca_x120.json"
/usr/bin/time -f "peak RSS of sft data stats on $(du -m "$big" | cut -f1) MB: %M KB" \
  "$build/sft" data stats --data_path "$big" --tokenizer "$root/assets/tokenizer/llama2" > /dev/null
# The same file rendered with a model's own Jinja template (--conversation_template auto: Meta's
# LLaMA-2-chat template from tests/data/fixtures, as chat_template.jinja beside the tokenizer)
# against the built-in llama-2 template, all cores, best of 2 each.
tmpl="$build/data-test/llama2-chat-template"
mkdir -p "$tmpl"
cp "$root/assets/tokenizer/llama2/"{tokenizer.model,tokenizer_config.json,special_tokens_map.json} "$tmpl/"
cp "$root/tests/data/fixtures/jinja/templates/llama-2-7b-chat.jinja" "$tmpl/chat_template.jinja"
samples=$("$build/sft" data stats --data_path "$big" --tokenizer "$tmpl" | awk '/^samples/ {gsub(",", "", $2); print $2}')
for t in llama-2 auto; do
  best=""
  for _ in 1 2; do
    s=$( { /usr/bin/time -f "%e" "$build/sft" data stats --data_path "$big" --tokenizer "$tmpl" \
             --conversation_template "$t" > /dev/null; } 2>&1 | tail -n 1)
    if [[ -z $best ]] || awk -v a="$s" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$s; fi
  done
  awk -v t="$t" -v s="$best" -v n="$samples" 'BEGIN { printf "[ template %-8s ] %d samples in %.2f s: %.0f samples/s\n", t, n, s, n / s }'
done
