#!/usr/bin/env python3
"""Convert a model directory's pytorch_model.bin (or sharded pytorch_model-*.bin with
pytorch_model.bin.index.json) to safetensors, which is what sft reads: sft never unpickles (a
pickle can run code). The weights are loaded with torch.load(weights_only=True), which refuses
anything but tensors and plain containers.

  python3 tools/convert_pytorch_bin.py MODEL_DIR [OUT_DIR]

Writes model.safetensors (one .bin) or model-0000i-of-0000N.safetensors + model.safetensors.index.json
(one shard per .bin shard) into OUT_DIR (default: MODEL_DIR, beside the .bin files, which are kept;
a different OUT_DIR also gets the directory's other files: config.json, the tokenizer, ...).
Tensors that share storage (tied embeddings saved by older transformers) are written once each as
their own contiguous copy, as safetensors requires. Needs: pip install torch safetensors.
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file


def load_bin(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13 has no weights_only: refuse rather than unpickle freely
        sys.exit(f"{path}: this torch ({torch.__version__}) cannot load weights safely (weights_only); "
                 "install torch >= 1.13")


def contiguous_copies(state):
    """Every tensor as its own contiguous storage (safetensors refuses shared or strided memory)."""
    return {name: t.detach().clone().contiguous() for name, t in state.items()}


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    src = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) == 3 else src
    os.makedirs(out, exist_ok=True)
    if os.path.abspath(out) != os.path.abspath(src):
        for name in os.listdir(src):
            path = os.path.join(src, name)
            if os.path.isfile(path) and not (name.endswith(".bin") or name == "pytorch_model.bin.index.json"):
                shutil.copy2(path, os.path.join(out, name))
    index_path = os.path.join(src, "pytorch_model.bin.index.json")
    single = os.path.join(src, "pytorch_model.bin")
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
        shards = sorted(set(index["weight_map"].values()))
        n = len(shards)
        weight_map = {}
        total = 0
        for i, shard in enumerate(shards, start=1):
            state = contiguous_copies(load_bin(os.path.join(src, shard)))
            name = f"model-{i:05d}-of-{n:05d}.safetensors"
            save_file(state, os.path.join(out, name), metadata={"format": "pt"})
            for k, t in state.items():
                weight_map[k] = name
                total += t.numel() * t.element_size()
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        print(f"wrote {n} safetensors shards and model.safetensors.index.json ({len(weight_map)} tensors) to {out}")
    elif os.path.exists(single):
        state = contiguous_copies(load_bin(single))
        save_file(state, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
        print(f"wrote model.safetensors ({len(state)} tensors) to {out}")
    else:
        sys.exit(f"{src}: no pytorch_model.bin or pytorch_model.bin.index.json")


if __name__ == "__main__":
    main()
