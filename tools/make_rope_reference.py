#!/usr/bin/env python3
"""Writes tests/io/fixtures/rope_reference.json: RoPE inverse frequencies computed by HF
transformers + torch for a set of config.json variants (default, linear, dynamic, llama3; legacy
rope_scaling and v5 rope_parameters spellings). test_io compares rope_inv_freq() against it.

Run: .venv/bin/python tools/make_rope_reference.py   (scripts/setup_venv.sh creates .venv)

default and dynamic come from transformers' own rotary classes (4.40: LlamaRotaryEmbedding and
LlamaDynamicNTKScalingRotaryEmbedding; >= 4.43: modeling_rope_utils.ROPE_INIT_FUNCTIONS).
linear (inv_freq /= factor) and llama3 only exist in modeling_rope_utils (>= 4.43); on older
transformers the two functions below apply the same torch ops in the same order as
_compute_linear_scaling_rope_parameters and _compute_llama3_parameters, on fp32 tensors.
"""
import json
import math
import os
import struct

import torch
import transformers
from transformers.models.llama import modeling_llama

try:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # transformers >= 4.43
except ImportError:
    ROPE_INIT_FUNCTIONS = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "io", "fixtures", "rope_reference.json")


def default_inv_freq(dim, base):
    emb = modeling_llama.LlamaRotaryEmbedding(dim, max_position_embeddings=2048, base=base)
    return emb.inv_freq.clone()


def dynamic_inv_freq(dim, base, factor, max_pos, seq_len):
    emb = modeling_llama.LlamaDynamicNTKScalingRotaryEmbedding(
        dim, max_position_embeddings=max_pos, base=base, scaling_factor=factor)
    x = torch.zeros(1, dtype=torch.float32)
    emb(x, torch.arange(seq_len, dtype=torch.int64)[None, :])  # recomputes inv_freq when seq_len > max_pos
    return emb.inv_freq.clone()


def linear_inv_freq(dim, base, factor):  # _compute_linear_scaling_rope_parameters
    inv_freq = default_inv_freq(dim, base)
    inv_freq /= factor
    return inv_freq


def llama3_inv_freq(dim, base, factor, low, high, old_ctx):
    # The tensor ops of transformers' _compute_llama3_parameters (>= 4.43), in the same order.
    inv = default_inv_freq(dim, base)
    wavelen = 2 * math.pi / inv
    long_wavelen, short_wavelen = old_ctx / low, old_ctx / high
    scaled = torch.where(wavelen > long_wavelen, inv / factor, inv)
    smooth = (old_ctx / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < short_wavelen) * ~(wavelen > long_wavelen)
    return torch.where(medium, blended, scaled)


def reference(cfg, seq_len):
    heads = cfg["num_attention_heads"]
    dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    rp = cfg.get("rope_parameters") or {}
    rs = cfg.get("rope_scaling") or {}
    scaling = rp or rs
    base = rp.get("rope_theta", cfg.get("rope_theta", 10000.0))
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if ROPE_INIT_FUNCTIONS is not None and kind in ("default", "linear", "llama3"):
        hf = transformers.LlamaConfig(**{**cfg, "rope_theta": base, "head_dim": dim,
                                         "rope_scaling": None if kind == "default" else scaling})
        return ROPE_INIT_FUNCTIONS[kind](hf, "cpu")[0]
    if kind == "default":
        return default_inv_freq(dim, base)
    if kind == "linear":
        return linear_inv_freq(dim, base, scaling["factor"])
    if kind == "dynamic":
        # original_max_position_embeddings, when given, replaces max_position_embeddings (sft's rule).
        max_pos = scaling.get("original_max_position_embeddings") or cfg["max_position_embeddings"]
        return dynamic_inv_freq(dim, base, scaling["factor"], max_pos, seq_len)
    if kind == "llama3":
        return llama3_inv_freq(dim, base, scaling["factor"], scaling["low_freq_factor"],
                               scaling["high_freq_factor"], scaling["original_max_position_embeddings"])
    raise ValueError(kind)


def llama(hidden, heads, **extra):
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
           "hidden_size": hidden, "intermediate_size": 4 * hidden, "num_hidden_layers": 2,
           "num_attention_heads": heads, "max_position_embeddings": 2048}
    cfg.update(extra)
    return cfg


LLAMA31_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192}
CASES = [
    ("default_theta1e4_hs128", llama(4096, 32), 2048),
    ("default_theta5e5_hs64", llama(2048, 32, rope_theta=500000.0), 2048),
    ("default_qwen2_theta1e6_hs128", {**llama(3584, 28, rope_theta=1000000.0), "architectures": ["Qwen2ForCausalLM"],
                                      "model_type": "qwen2", "num_key_value_heads": 4}, 2048),
    ("default_explicit_head_dim", llama(5120, 32, head_dim=128, rope_theta=1000000.0), 2048),
    ("default_hs16", llama(64, 4), 256),
    ("linear_type_key", llama(4096, 32, rope_scaling={"type": "linear", "factor": 4.0}), 2048),
    ("linear_rope_parameters", llama(2048, 16, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                                "rope_theta": 10000.0}), 2048),
    ("llama3_31_8b", llama(4096, 32, rope_theta=500000.0, max_position_embeddings=131072,
                           rope_scaling=LLAMA31_SCALING), 2048),
    ("llama3_32_1b", llama(2048, 32, rope_theta=500000.0, max_position_embeddings=131072,
                           rope_scaling={**LLAMA31_SCALING, "factor": 32.0}), 2048),
    ("llama3_rope_parameters", llama(4096, 32, max_position_embeddings=131072,
                                     rope_parameters={**LLAMA31_SCALING, "rope_theta": 500000.0}), 2048),
    ("dynamic_below_max_pos", llama(4096, 32, rope_scaling={"type": "dynamic", "factor": 2.0}), 1000),
    ("dynamic_above_max_pos", llama(4096, 32, rope_scaling={"type": "dynamic", "factor": 2.0}), 4096),
    ("dynamic_hs64_odd_len", llama(2048, 32, rope_theta=500000.0,
                                   rope_scaling={"rope_type": "dynamic", "factor": 4.0}), 3001),
    ("dynamic_original_max_pos", llama(4096, 32, max_position_embeddings=8192,
                                       rope_scaling={"rope_type": "dynamic", "factor": 2.0,
                                                     "original_max_position_embeddings": 2048}), 3000),
]


def main():
    cases = []
    for name, cfg, seq_len in CASES:
        inv = reference(cfg, seq_len).to(torch.float32)
        bits = [struct.unpack("<I", struct.pack("<f", float(x)))[0] for x in inv.tolist()]
        cases.append({"name": name, "config": cfg, "seq_len": seq_len, "inv_freq_bits": bits})
    out = {"generator": "tools/make_rope_reference.py", "transformers": transformers.__version__,
           "torch": torch.__version__, "cases": cases}
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}: {len(cases)} cases")


if __name__ == "__main__":
    main()
