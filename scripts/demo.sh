#!/usr/bin/env bash
# The main job on shipped defaults, from a clone: set up and build the sft binary (no test
# binaries, no CUDA backend unless SFT_CUDA=ON|AUTO is set: scripts/setup.sh), write a small LLaMA with the
# real LLaMA-2 tokenizer (assets/), fine-tune it on FastChat's dummy conversations with
# FastChat-style flags (bf16, cosine with warmup, gradient accumulation, gradient checkpointing,
# packing), show the loss falling, then ask the result "Who are you?".
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup.sh"
sft="$root/build/sft"
out="$root/out/demo"
rm -rf "$out"
"$sft" init --preset tiny --tokenizer "$root/assets/tokenizer/llama2" --output_dir "$out/base-model" --seed 1
"$sft" train \
  --model_name_or_path "$out/base-model" \
  --data_path "$root/assets/data/dummy_conversation.json" \
  --output_dir "$out/vicuna-tiny" \
  --bf16 True --num_train_epochs "${DEMO_EPOCHS:-12}" \
  --per_device_train_batch_size 4 --gradient_accumulation_steps 2 \
  --learning_rate 2e-3 --weight_decay 0. --warmup_ratio 0.03 --lr_scheduler_type cosine \
  --logging_steps 5 --save_strategy epoch --save_total_limit 2 \
  --model_max_length 512 --gradient_checkpointing True --lazy_preprocess True
# The loss summary from metrics.jsonl with the shell alone (no Python at run time): the first and
# last training-loss lines, one number per key. `sed -n 1p`, not `head -n 1`: head exits after the
# first line, and under pipefail the grep still writing to it (SIGPIPE, status 141) ended the demo.
metrics="$out/vicuna-tiny/metrics.jsonl"
field() { sed -E "s/.*\"$1\": ?(-?[0-9.eE+-]+).*/\1/"; }
first=$(grep '"loss"' "$metrics" | grep -v '"eval_loss"' | sed -n 1p)
last=$(grep '"loss"' "$metrics" | grep -v '"eval_loss"' | tail -n 1)
LC_ALL=C printf 'logged loss (mean over each logging window): step %s %.3f -> step %s %.3f (%.0f tokens/s); plot: %s\n' \
  "$(field step <<<"$first")" "$(field loss <<<"$first")" "$(field step <<<"$last")" \
  "$(field loss <<<"$last")" "$(field tokens_per_s <<<"$last")" "$out/vicuna-tiny/loss.svg"
# the answer first, so that generate's start-up lines (stderr) do not land inside the dialogue
answer=$("$sft" generate --model "$out/vicuna-tiny" --prompt "Who are you?" --temperature 0 --max_new_tokens 64)
echo "USER: Who are you?"
echo "ASSISTANT: $answer"
