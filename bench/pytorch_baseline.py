#!/usr/bin/env python3
"""PyTorch/HF baseline for `sft bench` (see docs/design.md §9).

Times full training steps (zero_grad, forward with labels, backward, AdamW step) of a randomly
initialised HF LlamaForCausalLM with the same preset shapes as `sft bench`, on random tokens.

Run with the test venv (scripts/setup_venv.sh):
    .venv/bin/python bench/pytorch_baseline.py --preset tiny --dtype bf16 --steps 5 --json
On a GPU (what HF Trainer does with --bf16 True: fp32 master weights, autocast to bf16, SDPA
attention, fused AdamW; peak memory from torch.cuda.max_memory_allocated):
    python3 bench/pytorch_baseline.py --device cuda --preset 1b --batch_size 8 --dtype bf16 --json

With --json the last line of stdout is one JSON object with the same keys `sft bench --json`
prints (preset, dtype, tokens_per_s, gflops, mfu, peak_rss_mb) plus extras.
"""
import argparse
import json
import platform
import resource
import statistics
import sys
import time

PRESETS = {
    # name: dim, layers, heads, kv_heads, ffn_hidden, seq, batch
    "tiny": dict(dim=288, layers=6, heads=6, kv_heads=6, ffn=768, seq=256, batch=8),
    "small": dict(dim=512, layers=8, heads=8, kv_heads=8, ffn=1376, seq=512, batch=4),
    "base": dict(dim=768, layers=12, heads=12, kv_heads=12, ffn=2048, seq=1024, batch=2),
    "1b": dict(dim=2048, layers=22, heads=32, kv_heads=4, ffn=5632, seq=2048, batch=1),  # TinyLlama-1.1B shape
}
VOCAB = 32000
# Measured 2-thread peaks on the AVX-512 build machines (docs/machine-notes.md).
DEFAULT_PEAK_GFLOPS = {"fp32": 420.0, "bf16": 780.0}
# H100/H200 SXM dense peaks (datasheet), as `sft bench --device cuda` uses.
CUDA_PEAK_GFLOPS = {"fp32": 67000.0, "tf32": 494500.0, "bf16": 989000.0}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                   help="bf16 = autocast(cpu, bfloat16) over forward+loss, fp32 master weights")
    p.add_argument("--steps", type=int, default=5, help="timed steps (after warmup)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--attn", choices=["auto", "sdpa", "eager"], default="auto",
                   help="HF attn_implementation; auto = sdpa if this torch/transformers allow it, else eager")
    p.add_argument("--peak_gflops", "--peak-gflops", type=float, default=None,
                   help="peak for MFU (default: 780 for bf16, 420 for fp32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch_size", type=int, default=0, help="rows per step (default: the preset's)")
    p.add_argument("--seq_len", type=int, default=0, help="tokens per row (default: the preset's)")
    p.add_argument("--gradient_checkpointing", action="store_true",
                   help="HF gradient checkpointing (per decoder layer), as the Trainer flag")
    p.add_argument("--tf32", action="store_true", help="cuda fp32: allow TF32 matmuls")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    a = p.parse_args()
    if a.steps < 1:
        p.error("--steps must be >= 1")
    if a.warmup < 0:
        p.error("--warmup must be >= 0")
    if a.threads < 1:
        p.error("--threads must be >= 1")
    return a


def build_model(cfg_kwargs, attn):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(**cfg_kwargs)
    tried = ["sdpa", "eager"] if attn == "auto" else [attn]
    last_err = None
    for impl in tried:
        try:
            model = LlamaForCausalLM._from_config(cfg, attn_implementation=impl)
        except (ImportError, ValueError) as e:  # transformers 4.40 refuses sdpa on torch < 2.1.1
            last_err = e
            continue
        return model, model.config._attn_implementation, last_err
    raise SystemExit(f"error: attn_implementation {attn!r} not usable: {last_err}")


def blas_library():
    """Which BLAS torch's fp32 matmuls go to (Debian's torch is built with BLAS_INFO=generic and links
    libblas.so.3, whatever the Debian alternatives point at). Returns (kind, path)."""
    import os
    paths = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and "blas" in os.path.basename(parts[-1]).lower():
                    paths.add(os.path.realpath(parts[-1]))
    except OSError:
        return "unknown", ""
    if not paths:
        return "unknown", ""
    path = sorted(paths)[0]
    low = " ".join(sorted(paths)).lower()
    for key in ("openblas", "mkl", "blis", "atlas"):
        if key in low:
            return key, path
    if "/blas/libblas.so" in low:
        return "netlib-reference", path
    return "other", path


def main():
    a = parse_args()
    import torch
    import transformers

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    P = PRESETS[a.preset]
    d, L, T, B = P["dim"], P["layers"], P["seq"], P["batch"]
    B = a.batch_size or B
    T = a.seq_len or T
    cuda = a.device == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda but torch.cuda.is_available() is False")
        torch.backends.cuda.matmul.allow_tf32 = a.tf32
        torch.backends.cudnn.allow_tf32 = a.tf32

    cfg_kwargs = dict(
        vocab_size=VOCAB,
        hidden_size=d,
        intermediate_size=P["ffn"],
        num_hidden_layers=L,
        num_attention_heads=P["heads"],
        num_key_value_heads=P["kv_heads"],
        max_position_embeddings=max(2048, T),
        tie_word_embeddings=False,
        hidden_act="silu",
        rms_norm_eps=1e-5,
        attention_bias=False,
        use_cache=False,
        torch_dtype=torch.float32,
    )
    model, attn_impl, sdpa_err = build_model(cfg_kwargs, a.attn)
    model = model.float().train()
    if a.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cuda:
        model = model.to("cuda")

    # Matmul weights: every nn.Linear (q,k,v,o, gate,up,down, LM head); not the embedding, not norms.
    n_matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    hd = d // P["heads"]
    n_formula = L * (2 * d * d + 2 * d * P["kv_heads"] * hd + 3 * d * P["ffn"]) + d * VOCAB
    assert n_matmul == n_formula, (n_matmul, n_formula)
    n_params = sum(p.numel() for p in model.parameters())
    flops_per_token = 6 * n_matmul + 12 * L * d * T

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, **({"fused": True} if cuda else {}))
    gen = torch.Generator().manual_seed(a.seed + 1)
    ids = torch.randint(0, VOCAB, (B, T), generator=gen)
    if cuda:
        ids = ids.to("cuda")
    labels = ids.clone()  # HF shifts labels inside the loss

    use_bf16 = a.dtype == "bf16"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(a.device, dtype=torch.bfloat16, enabled=use_bf16):
            out = model(input_ids=ids, labels=labels, use_cache=False)
            loss = out.loss
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        return float(loss.detach())

    blas_kind, blas_path = blas_library()
    where = f"gpu {torch.cuda.get_device_name()}" if cuda else f"threads {torch.get_num_threads()}"
    print(f"python {platform.python_version()}  torch {torch.__version__}  "
          f"transformers {transformers.__version__}  attn {attn_impl}  {where}  "
          f"blas {blas_kind} ({blas_path or '?'})")
    if blas_kind == "netlib-reference" and not cuda:
        print("warning: torch's fp32 matmuls run on the netlib reference BLAS here (a few GFLOP/s); "
              "fp32 numbers are not a meaningful baseline. Install OpenBLAS (libopenblas0) so that "
              "libblas.so.3 points at it. bf16 autocast matmuls use oneDNN and are unaffected.")
    if a.attn == "auto" and attn_impl != "sdpa" and sdpa_err is not None:
        print(f"note: sdpa unavailable, using {attn_impl} ({sdpa_err})")
    print(f"preset {a.preset}: dim {d} layers {L} heads {P['heads']} kv {P['kv_heads']} ffn {P['ffn']} "
          f"seq {T} batch {B} vocab {VOCAB}; params {n_params/1e6:.2f}M, matmul {n_matmul/1e6:.2f}M, "
          f"{flops_per_token/1e6:.1f} MFLOP/token; dtype {a.dtype}")
    sys.stdout.flush()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for i in range(a.warmup):
        t0 = time.perf_counter()
        loss = step()
        print(f"warmup {i}: {time.perf_counter() - t0:.3f} s  loss {loss:.4f}", flush=True)
    times = []
    for i in range(a.steps):
        t0 = time.perf_counter()
        loss = step()
        dt = time.perf_counter() - t0
        times.append(dt)
        print(f"step {i}: {dt:.3f} s  loss {loss:.4f}", flush=True)

    mean_t = statistics.mean(times)
    tokens_per_s = B * T / mean_t
    gflops = tokens_per_s * flops_per_token / 1e9
    if a.peak_gflops is not None:
        peak = a.peak_gflops
    elif cuda:
        peak = CUDA_PEAK_GFLOPS["tf32" if a.dtype == "fp32" and a.tf32 else a.dtype]
    else:
        peak = DEFAULT_PEAK_GFLOPS[a.dtype]
    mfu = gflops / peak
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0

    print(f"pytorch {a.preset} {a.dtype}: {tokens_per_s:.1f} tokens/s  {gflops:.1f} GFLOP/s  "
          f"MFU {100*mfu:.1f}% (peak {peak:g})  step {mean_t:.3f} s (min {min(times):.3f}, "
          f"max {max(times):.3f}, {a.steps} steps)  peak RSS {peak_rss_mb:.0f} MB"
          + (f"  peak GPU memory {peak_gpu_mb:.0f} MiB" if cuda else ""))
    if a.json:
        extra = {}
        if cuda:  # keys of `sft bench --device cuda --json`
            extra = {"device": "cuda", "gpu": torch.cuda.get_device_name(), "peak_gpu_mb": round(peak_gpu_mb, 1),
                     "batch": B, "seq_len": T, "tf32": a.tf32, "gradient_checkpointing": a.gradient_checkpointing}
        print(json.dumps({
            "preset": a.preset,
            "dtype": a.dtype,
            "tokens_per_s": round(tokens_per_s, 3),
            "gflops": round(gflops, 3),
            "mfu": round(mfu, 5),
            "peak_rss_mb": round(peak_rss_mb, 1),
            "impl": "pytorch",
            "attn": attn_impl,
            "threads": torch.get_num_threads(),
            "blas": blas_kind,
            "steps": a.steps,
            "warmup": a.warmup,
            "step_s_mean": round(mean_t, 5),
            "step_s_min": round(min(times), 5),
            "flops_per_token": flops_per_token,
            "n_matmul": n_matmul,
            "peak_gflops": peak,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            **extra,
        }))


if __name__ == "__main__":
    main()
