#!/usr/bin/env bash
# The main job on shipped defaults: set up, build, write a small model with the real LLaMA-2
# tokenizer (assets/) and time training steps on it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup.sh"
sft="$root/build/sft"
out="$root/out/demo"
"$sft" init --preset tiny --tokenizer "$root/assets/tokenizer/llama2" --output_dir "$out/model"
"$sft" bench --preset tiny --dtype bf16 --steps 3
