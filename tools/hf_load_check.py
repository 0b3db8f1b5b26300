#!/usr/bin/env python3
"""Loads a model directory with HF Transformers (as a user would) and prints facts about it as JSON:
the architecture, parameter count, stored dtype, weight statistics and a forward pass's sanity.
Used by tests/cli to check that `sft init` and `sft` saves are real HF model directories."""
import json
import sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer


def main(path):
    config = AutoConfig.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    sd = model.state_dict()
    q = sd["model.layers.0.self_attn.q_proj.weight"]
    norms = [v for k, v in sd.items() if k.endswith("norm.weight")]
    ids = torch.tensor([[1, 15043, 29892, 920, 526, 366, 29973]])
    ids = ids.clamp(max=config.vocab_size - 1)
    with torch.no_grad():
        logits = model(ids).logits
    tok = AutoTokenizer.from_pretrained(path, use_fast=False)
    out = {
        "architectures": config.architectures,
        "model_type": config.model_type,
        "num_params": sum(p.numel() for p in model.parameters()),
        "vocab_size": config.vocab_size,
        "torch_dtype": str(config.torch_dtype),
        "q_proj_std": q.std().item(),
        "q_proj_mean": q.mean().item(),
        "norms_all_one": all(bool((n == 1).all()) for n in norms),
        "logits_finite": bool(torch.isfinite(logits).all()),
        "tokenizer_len": len(tok),
        "hello_ids": tok("Hello world").input_ids,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
