#!/usr/bin/env python3
"""HF transformers side of test_io's interop test (tests/io/test_hf_model.cpp, HfInterop).

  hf_interop.py make ROOT       save a tiny random model per architecture as ROOT/{llama,mistral,
                                qwen2} with transformers' save_pretrained: bf16, sharded at 20KB,
                                so each has an index and many shards (qwen2: tied embeddings)
  hf_interop.py make_bin ROOT   the same models saved as pickled pytorch_model.bin (safe_serialization
                                False): llama as one file, mistral and qwen2 sharded at 20KB
  hf_interop.py compare A B     load A/ARCH and B/ARCH with from_pretrained for each architecture
                                and exit 1 unless every tensor is bit-identical and configs agree

Run with .venv/bin/python (scripts/setup_venv.sh).
"""
import os
import sys

import torch
import transformers

ARCHS = {
    "llama": (transformers.LlamaConfig, {"attention_bias": True}),
    "mistral": (transformers.MistralConfig, {"sliding_window": None}),
    "qwen2": (transformers.Qwen2Config, {"tie_word_embeddings": True, "use_sliding_window": False}),
}


def make(out_dir, arch, safe=True):
    config_cls, extra = ARCHS[arch]
    cfg = config_cls(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                     rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, **extra)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for p in model.parameters():  # norms (ones) and biases (zeros) get random values too
            p.normal_(0.0, 0.5)
    model = model.to(torch.bfloat16)
    shard = "20KB" if safe or arch != "llama" else "10GB"
    model.save_pretrained(out_dir, max_shard_size=shard, safe_serialization=safe)


def compare_one(a, b):
    ma = transformers.AutoModelForCausalLM.from_pretrained(a, torch_dtype="auto")
    mb = transformers.AutoModelForCausalLM.from_pretrained(b, torch_dtype="auto")
    sa, sb = ma.state_dict(), mb.state_dict()
    bad = []
    if sa.keys() != sb.keys():
        bad.append(f"keys differ: {sorted(set(sa) ^ set(sb))}")
    for k in sa.keys() & sb.keys():
        x, y = sa[k], sb[k]
        if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x.view(torch.int16), y.view(torch.int16)):
            bad.append(f"{k}: {x.dtype} {tuple(x.shape)} vs {y.dtype} {tuple(y.shape)}")
    for field in ("hidden_size", "num_key_value_heads", "rope_theta", "tie_word_embeddings", "torch_dtype"):
        if getattr(ma.config, field) != getattr(mb.config, field):
            bad.append(f"config.{field}: {getattr(ma.config, field)} vs {getattr(mb.config, field)}")
    print(("NOT OK " if bad else "OK ") + f"{a} vs {b}: {len(sa)} tensors" + "".join("\n  " + x for x in bad))
    return not bad


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        for arch in ARCHS:
            make(os.path.join(sys.argv[2], arch), arch)
    elif len(sys.argv) == 3 and sys.argv[1] == "make_bin":
        for arch in ARCHS:
            make(os.path.join(sys.argv[2], arch), arch, safe=False)
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        ok = [compare_one(os.path.join(sys.argv[2], arch), os.path.join(sys.argv[3], arch)) for arch in ARCHS]
        sys.exit(0 if all(ok) else 1)
    else:
        sys.exit(__doc__)
