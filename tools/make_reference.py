#!/usr/bin/env python3
# Reference generator for tests/model/test_parity.cpp (in the spirit of llm.c's test_gpt2): tiny
# random HF LlamaForCausalLM / Qwen2ForCausalLM / MistralForCausalLM models (fp32, eager attention)
# and, per case, the logits, mean loss, every parameter gradient and 10 torch.optim.AdamW step losses on one packed +
# padded batch. Packed samples are run through HF one at a time: that is the definition of "no
# cross-contamination". Usage: make_reference.py --out DIR [--bf16-report]
import argparse
import copy
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

ADAMW_STEPS = 10
ADAMW_LR = 3e-3  # at 1e-2 the 10-step trajectory turns chaotic (torch fp32 vs fp64: 1.3e-4 apart)
ADAMW_WEIGHT_DECAY = 0.1
IGNORE = -100

# Each case: HF config keys, the two batch rows (row 0: three packed sample lengths summing to T;
# row 1: one sample of len1 < T, then padding) and the features HF 4.40 lacks, patched in below.
BASE = dict(vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
            rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
            bos_token_id=1, eos_token_id=2)
CASES = [
    dict(name="mha_untied", arch="llama", cfg={}, T=48, row0=[20, 12, 16], len1=30),
    dict(name="gqa_tied", arch="llama",
         cfg=dict(vocab_size=300, num_key_value_heads=2, tie_word_embeddings=True),
         T=40, row0=[9, 17, 14], len1=23),
    dict(name="qwen2_bias_gqa", arch="qwen2",
         cfg=dict(vocab_size=384, intermediate_size=176, num_key_value_heads=2, rms_norm_eps=1e-6,
                  max_position_embeddings=512),
         T=48, row0=[16, 21, 11], len1=37),
    dict(name="rope_linear", arch="llama",
         cfg=dict(num_key_value_heads=2, rope_scaling={"type": "linear", "factor": 2.0}),
         T=64, row0=[30, 14, 20], len1=45),
    # original_max_position_embeddings 64 with HS 16, theta 1e4: wavelengths 6.3 (high band, kept),
    # 20 and 63 (medium band, smoothed), 199..19869 (low band, divided by 8).
    dict(name="rope_llama3", arch="llama", cfg=dict(num_key_value_heads=2),
         llama3=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                     original_max_position_embeddings=64),
         T=64, row0=[28, 20, 16], len1=50),
    dict(name="attention_bias", arch="llama",
         cfg=dict(vocab_size=320, num_key_value_heads=2, attention_bias=True),
         T=48, row0=[18, 18, 12], len1=29),
    dict(name="head_dim_32", arch="llama", cfg=dict(num_key_value_heads=2), head_dim=32,
         T=40, row0=[13, 15, 12], len1=26),
    # Longer than the CPU attention's 64-token tiles: multi-tile online softmax, sample boundaries
    # inside a tile, and a 150-token sample spanning three tiles.
    dict(name="long_seq_tiles", arch="llama", cfg=dict(num_key_value_heads=2),
         T=160, row0=[70, 50, 40], len1=150),
    # MistralForCausalLM (no biases) with a sliding window of 24 < max_position_embeddings: every
    # sequence (the samples and row 1's 16-token padding) is at most 24 tokens, where HF's window
    # masks nothing; sft keeps the window as a length limit (test_parity's MistralWindow).
    dict(name="mistral_window", arch="mistral", cfg=dict(num_key_value_heads=2, sliding_window=24),
         T=40, row0=[14, 12, 14], len1=24),
]


# ---- features of newer transformers, patched into the 4.40 classes -----------------------------

def llama3_inv_freq(head_dim, theta, rs):
    """transformers >= 4.43 modeling_rope_utils._compute_llama3_parameters, same fp32 tensor ops."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old_context_len = rs["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low
    high_freq_wavelen = old_context_len / high
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    bands = (int((wavelen < high_freq_wavelen).sum()), int(is_medium.sum()),
             int((wavelen > low_freq_wavelen).sum()))
    return torch.where(is_medium, smoothed, inv_freq_llama), bands


def patch_head_dim(model, cfg, head_dim):
    """An explicit config head_dim (transformers >= 4.45 LlamaAttention): q/k/v project to
    heads*head_dim, o_proj maps NH*head_dim back to C, scores scale by 1/sqrt(head_dim)."""
    C, NH, NKV = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
    for layer in model.model.layers:
        a = layer.self_attn
        a.head_dim = head_dim
        a.hidden_size = NH * head_dim  # 4.40 uses it only to reshape the attention output
        a.q_proj = torch.nn.Linear(C, NH * head_dim, bias=cfg.attention_bias)
        a.k_proj = torch.nn.Linear(C, NKV * head_dim, bias=cfg.attention_bias)
        a.v_proj = torch.nn.Linear(C, NKV * head_dim, bias=cfg.attention_bias)
        a.o_proj = torch.nn.Linear(NH * head_dim, C, bias=cfg.attention_bias)
        a.rotary_emb = LlamaRotaryEmbedding(head_dim, max_position_embeddings=cfg.max_position_embeddings,
                                            base=cfg.rope_theta)
    cfg.head_dim = head_dim  # saved to config.json as an extra key


def patch_llama3(model, cfg, rs, head_dim):
    inv_freq, bands = llama3_inv_freq(head_dim, cfg.rope_theta, rs)
    assert min(bands) > 0, f"llama3 case must exercise all three frequency bands, got {bands}"
    for layer in model.model.layers:
        layer.self_attn.rotary_emb.inv_freq.copy_(inv_freq)
    cfg.rope_scaling = dict(rope_type="llama3", **rs)  # written to config.json; modules already built


# ---- model, batch, reference -------------------------------------------------------------------

def build_model(case, seed):
    torch.manual_seed(seed)
    kw = dict(BASE, **case["cfg"])
    if case["arch"] == "qwen2":
        kw.pop("attention_bias", None)
        cfg = Qwen2Config(**kw, attn_implementation="eager")
        model = Qwen2ForCausalLM(cfg)
    elif case["arch"] == "mistral":
        kw.pop("attention_bias", None)
        cfg = MistralConfig(**kw, attn_implementation="eager")
        model = MistralForCausalLM(cfg)
    else:
        cfg = LlamaConfig(**kw, attn_implementation="eager")
        model = LlamaForCausalLM(cfg)
    head_dim = case.get("head_dim", cfg.hidden_size // cfg.num_attention_heads)
    if "head_dim" in case:
        patch_head_dim(model, cfg, head_dim)
    if "llama3" in case:
        with torch.no_grad():
            patch_llama3(model, cfg, case["llama3"], head_dim)
    # Weights normal(0, 0.02) as HF's _init_weights, except q/k (std 0.1, so attention is far from
    # uniform and RoPE/mask errors show); norm weights 1 + 0.1 N(0,1) and biases 0.1 N(0,1) so
    # their gradients are exercised.
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "q_proj" in name or "k_proj" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    model.eval()  # no dropout anywhere (attention_dropout is 0 too)
    return model


def make_batch(case, vocab, seed):
    """Row 0 packs three samples, row 1 is one sample then padding (its own sequence, targets -100).
    Labels mask the prompt (first third), one mid span in the first sample (a second user turn),
    and each sample's last position (its next token belongs to another sample)."""
    g = torch.Generator().manual_seed(seed + 2)
    T = case["T"]
    assert sum(case["row0"]) == T and case["len1"] < T
    tokens, targets, positions, valid, cu = [], [], [], [], [0]
    samples = []  # (flat offset, tokens, labels)
    for row, lens in enumerate([case["row0"], [case["len1"]]]):
        off = 0
        for si, L in enumerate(lens):
            toks = torch.randint(3, vocab, (L,), generator=g)
            labels = toks.clone()
            p = max(2, L // 3)
            labels[:p] = IGNORE
            if row == 0 and si == 0:
                labels[p + 3:p + 6] = IGNORE
            samples.append((row * T + off, toks, labels))
            tokens += toks.tolist()
            targets += labels[1:].tolist() + [IGNORE]
            positions += list(range(L))
            valid += [1] * L
            off += L
            cu.append(row * T + off)
        if off < T:
            pad = T - off
            tokens += [0] * pad
            targets += [IGNORE] * pad
            positions += list(range(pad))
            valid += [0] * pad
            cu.append(row * T + T)
    batch = dict(B=2, T=T, tokens=tokens, targets=targets, positions=positions, cu_seqlens=cu,
                 valid_logit_mask=valid, num_targets=sum(t != IGNORE for t in targets))
    return batch, samples


def loss_sum(model, samples, targets, check_hf_loss=False):
    """Σ CE over valid targets, each sample run alone; returns (sum, [(offset, logits)])."""
    total = 0.0
    outs = []
    for off, toks, labels in samples:
        logits = model(input_ids=toks[None]).logits[0]  # (L, V) fp32
        tgt = torch.tensor(targets[off:off + len(toks)])
        s = F.cross_entropy(logits, tgt, ignore_index=IGNORE, reduction="sum")
        if check_hf_loss:  # our shifted targets reproduce HF's own labels= loss
            hf = model(input_ids=toks[None], labels=labels[None]).loss * int((labels[1:] != IGNORE).sum())
            assert abs(float(hf) - float(s)) <= 1e-5 * max(1.0, abs(float(s))), (float(hf), float(s))
        total = total + s
        outs.append((off, logits))
    return total, outs


def adamw_groups(model):
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]      # matmul + embedding weights
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]    # norm weights, biases
    return [dict(params=decay, weight_decay=ADAMW_WEIGHT_DECAY), dict(params=no_decay, weight_decay=0.0)]


def adamw_losses(model, samples, targets, n):
    model = copy.deepcopy(model)
    opt = torch.optim.AdamW(adamw_groups(model), lr=ADAMW_LR, betas=(0.9, 0.999), eps=1e-8)
    losses = []
    for _ in range(ADAMW_STEPS):
        opt.zero_grad(set_to_none=False)
        s, _ = loss_sum(model, samples, targets)
        loss = s / n
        losses.append(float(loss))
        loss.backward()
        opt.step()
    return losses


def reference(model, batch, samples):
    N, V = batch["B"] * batch["T"], model.config.vocab_size
    n = batch["num_targets"]
    model.zero_grad(set_to_none=False)
    s, outs = loss_sum(model, samples, batch["targets"], check_hf_loss=True)
    loss = s / n
    loss.backward()
    logits = torch.zeros(N, V)
    with torch.no_grad():
        for off, lg in outs:
            logits[off:off + lg.shape[0]] = lg
    grads = {n_: p.grad.detach().clone() for n_, p in model.named_parameters()}
    return logits, float(loss), grads


# ---- bf16 GEMM emulation (only for --bf16-report: how far bf16 operands move the results) -----

def bf16_round(x):
    return x.to(torch.bfloat16).to(torch.float32)


class Bf16Linear(torch.autograd.Function):
    """y = bf16(x)·bf16(w)ᵀ + b with fp32 accumulation; both backward GEMMs round their operands
    too — what the C++ backend's bf16 matmul mode does."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        y = bf16_round(x) @ bf16_round(w).t()
        return y + b if b is not None else y

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        dyr = bf16_round(dy)
        dx = dyr @ bf16_round(w)
        dw = dyr.reshape(-1, dy.shape[-1]).t() @ bf16_round(x).reshape(-1, x.shape[-1])
        db = dy.reshape(-1, dy.shape[-1]).sum(0) if ctx.has_bias else None
        return dx, dw, db


def rel_err(a, b):
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-30)


def bf16_report(model, batch, samples, logits32, loss32, grads32, losses32):
    orig = F.linear
    F.linear = lambda x, w, b=None: Bf16Linear.apply(x, w, b)
    try:
        logits, loss, grads = reference(model, batch, samples)
        steps = adamw_losses(model, samples, batch["targets"], batch["num_targets"])
    finally:
        F.linear = orig
    mask = torch.tensor(batch["valid_logit_mask"], dtype=torch.bool)
    a = max(abs(x - y) / abs(y) for x, y in zip(steps, losses32))
    g = max(rel_err(grads[k], grads32[k]) for k in grads)
    worst = max(grads, key=lambda k: rel_err(grads[k], grads32[k]))
    print(f"  bf16-emulated vs fp32: logits {rel_err(logits[mask], logits32[mask]):.2e}  "
          f"loss {abs(loss - loss32) / abs(loss32):.2e}  grads max {g:.2e} ({worst})  "
          f"adamw losses {a:.2e}")


def write_case(case, seed, out_dir, report_bf16):
    d = os.path.join(out_dir, case["name"])
    os.makedirs(d, exist_ok=True)
    model = build_model(case, seed)
    batch, samples = make_batch(case, model.config.vocab_size, seed)
    logits, loss, grads = reference(model, batch, samples)
    losses = adamw_losses(model, samples, batch["targets"], batch["num_targets"])
    model.save_pretrained(os.path.join(d, "model"), safe_serialization=True)
    batch["adamw"] = dict(lr=ADAMW_LR, betas=[0.9, 0.999], eps=1e-8, weight_decay=ADAMW_WEIGHT_DECAY,
                          steps=ADAMW_STEPS)  # the torch run; decay on >= 2-D weights only
    with open(os.path.join(d, "batch.json"), "w") as f:
        json.dump(batch, f)
    tensors = {"logits": logits, "loss": torch.tensor([loss], dtype=torch.float32),
               "adamw_losses": torch.tensor(losses, dtype=torch.float32)}
    tensors.update({f"grad.{k}": v.contiguous() for k, v in grads.items()})
    save_file(tensors, os.path.join(d, "reference.safetensors"))
    print(f"{case['name']}: N={batch['B'] * batch['T']} V={model.config.vocab_size} "
          f"targets={batch['num_targets']} params={len(grads)} loss={loss:.6f} "
          f"adamw {losses[0]:.4f} -> {losses[-1]:.4f}")
    if report_bf16:
        bf16_report(model, batch, samples, logits, loss, grads, losses)


def main():
    ap = argparse.ArgumentParser(description="Write the HF parity fixtures of tests/model/test_parity.cpp.")
    ap.add_argument("--out", required=True, help="output directory (one sub-directory per case)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--bf16-report", action="store_true",
                    help="also print how far bf16 GEMM operands move logits/loss/grads")
    args = ap.parse_args()
    torch.set_num_threads(1)  # reproducible reductions on any machine
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    print(f"make_reference: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"python {sys.version.split()[0]}")
    names = [c for c in args.cases.split(",") if c]
    os.makedirs(args.out, exist_ok=True)
    for i, case in enumerate(CASES):
        if names and case["name"] not in names:
            continue
        write_case(case, args.seed + 100 * i, args.out, args.bf16_report)
    with open(os.path.join(args.out, "cases.txt"), "w") as f:
        f.write("".join(c["name"] + "\n" for c in CASES if not names or c["name"] in names))
    print(f"make_reference: done in {time.time() - t0:.1f}s -> {args.out}")


if __name__ == "__main__":
    main()
