#!/usr/bin/env bash
# The main job on shipped defaults, from a clone: set up and build, write a small LLaMA with the
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
python3 - "$out/vicuna-tiny/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l and '"eval_loss"' not in l]
print(f"loss: step {rows[0]['step']} {rows[0]['loss']:.3f} -> step {rows[-1]['step']} {rows[-1]['loss']:.3f}"
      f" ({rows[-1]['tokens_per_s']:.0f} tokens/s); plot: {sys.argv[1].rsplit('/', 1)[0]}/loss.svg")
PY
echo "USER: Who are you?"
echo -n "ASSISTANT: "
"$sft" generate --model "$out/vicuna-tiny" --prompt "Who are you?" --temperature 0 --max_new_tokens 64
