#!/usr/bin/env python3
"""Greedy generation with HF Transformers (KV cache, as a user would run it) on a model directory:
hf_generate.py DIR N id id id ... prints up to N new token ids as JSON (stopping after the
config's eos_token_id, which is included)."""
import json
import sys

import torch
from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
n = int(sys.argv[2])
ids = torch.tensor([[int(t) for t in sys.argv[3:]]])
with torch.no_grad():
    out = model.generate(ids, max_new_tokens=n, do_sample=False, use_cache=True, pad_token_id=0)
print(json.dumps(out[0, ids.shape[1]:].tolist()))
