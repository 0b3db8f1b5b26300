#!/usr/bin/env bash
# The one GPU check of the CUDA backend (issue 5), in two halves:
#
#   tools/gpu_check.sh pack [BUILD_DIR]   here, on a build machine (no GPU needed): builds sft and
#       test_cuda in BUILD_DIR (default build-cuda), generates the HF parity fixtures, and packs
#       into BUILD_DIR/carry/ the stripped binaries, the shared libraries they need that a GPU image
#       may lack (oneDNN, SentencePiece, yaml-cpp, fmt, PCRE2, libgomp) and the fixtures.
#   tools/gpu_check.sh run [CARRY_DIR]    on the lent GPU machine (nvcc 13, python3 with torch and
#       transformers, but none of the Debian -dev packages sft builds against, so nothing is built
#       there): runs test_cuda, then (issue 12) a one-rank NCCL world (test_cuda's NcclWorld test
#       under `mpirun -np 1`, or as an MPI singleton where the machine has no mpirun) and a one-GPU
#       `--fsdp "full_shard offload"` bench of the 7b preset's widths with as many layers as the
#       host's memory holds (~18 B per parameter of pinned host state under bf16, from
#       /proc/meminfo's MemAvailable less a margin; SFT_OFFLOAD_LAYERS overrides), gradient
#       checkpointing, tokens/s and peak GPU and host memory; then `sft bench --device cuda` on
#       presets base and 1b with and without --gradient_checkpointing, the HF/PyTorch baseline
#       (bench/pytorch_baseline.py) on the same shapes, and prints one summary table last. Logs and
#       JSON go to $OUT (or /tmp/gpu_check); $OUT/gpu_notes_offload.md is the offload entry for
#       whoever runs it to append to docs/gpu-notes.md.
#
# With the device tool:  run(command="tools/gpu_check.sh run build-cuda/carry",
#                            carry=["build-cuda/carry"], timeout_s=540)
# SFT_GPU_CHECK=offload runs only test_cuda, the NCCL world and the offload bench (about 5 minutes);
# SFT_GPU_CHECK=bench only test_cuda and the benches: the whole check in two calls of the tool.
# Budget: about 6 minutes on an H200 for the benches (each step has its own timeout; a failing step
# is recorded and the rest still run).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-run}

pack() {
  local build=${1:-$root/build-cuda}
  set -e
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSFT_CUDA=ON >/dev/null
  cmake --build "$build" -j"$(nproc)" --target sft test_cuda test_model
  # The parity fixtures (tools/make_reference.py through the test venv) are made by test_model.
  "$build/test_model" --gtest_filter='HF/Parity.Fp32LogitsLossGrads/mha_untied' >/dev/null
  local fx="$build/tests/fixtures/generated/parity"
  [[ -f "$fx/stamp" ]] || { echo "gpu_check pack: no parity fixtures in $fx" >&2; exit 1; }
  local carry="$build/carry"
  rm -rf "$carry" && mkdir -p "$carry/stage/lib"
  cp "$build/sft" "$build/test_cuda" "$carry/stage/"
  strip --strip-debug "$carry/stage/sft" "$carry/stage/test_cuda"
  # Libraries outside glibc, the GCC runtime (the GPU image's is newer, and its Python needs that
  # one) and the CUDA toolkit (the GPU machine has its own libcublasLt.so.13).
  ldd "$build/sft" "$build/test_cuda" | awk '/=> \//{print $3}' | sort -u |
    grep -Ev '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libstdc\+\+|libgcc_s|libcublas[^/]*|libcuda[^/]*|libnccl)\.so' |
    while read -r lib; do cp -L "$lib" "$carry/stage/lib/"; done
  cp -r "$fx" "$carry/stage/parity"
  tar -C "$carry/stage" -cJf "$carry/sft-gpu.tar.xz" .
  rm -rf "$carry/stage"
  du -h "$carry/sft-gpu.tar.xz"
}

# Issue 12's GPU steps, inside run (its step, sft and test_cuda): (a) NCCL in a world of one, the
# communicator GPU ranks use, bootstrapped over MPI; (b) full_shard offload on one GPU, LLaMA-2-7B
# widths with as many layers as the host memory holds. Host state per parameter under bf16: fp32
# master, gradient sums, AdamW m and v (16 B) + the bf16 rounding (2 B); the embedding and the LM
# head (131.1M parameters each) besides the layers (202.4M each).
offload_checks() {
  local out=$1 work=$2 libs=$3
  if command -v mpirun >/dev/null; then
    step nccl_world 90 mpirun -np 1 --allow-run-as-root --oversubscribe \
      -x LD_LIBRARY_PATH="$libs" "$work/test_cuda" --gtest_filter='NcclWorld.*'
  else  # no launcher there: an MPI singleton (needs the machine's Open MPI components; recorded if not)
    step nccl_world 90 "${test_cuda[@]}" --gtest_filter='NcclWorld.*'
  fi
  grep -E '^\[  (PASSED|FAILED|SKIPPED) |no GPU|no NCCL' "$out/nccl_world.log"
  # sft bench's random init (model/init.cpp) acquires every unit at once: while it runs the GPU
  # holds each unit's gather buffer, gradient buffer and reduce output (3 x 4 B/param), which
  # bounds the layers too on a 78 GiB H100.
  local avail_kb gpu_mib layers
  avail_kb=$(awk '/^MemAvailable:/{print $2}' /proc/meminfo)
  gpu_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -n 1)
  layers=${SFT_OFFLOAD_LAYERS:-$(python3 -c "
avail, gpu = $avail_kb * 1024, ${gpu_mib:-81920} * 2**20
margin = 16 * 2**30 + 0.1 * avail  # the OS, CUDA's own pinned pools, the data, the staging
host = (avail - margin - 2 * 131.1e6 * 18) / (202.4e6 * 18)
device = (0.85 * gpu - 4 * 2**30 - 2 * 131.1e6 * 12) / (202.4e6 * 12)
print(max(1, min(32, int(host), int(device))))")}
  echo "offload: MemAvailable $((avail_kb / 1048576)) GiB, GPU ${gpu_mib:-?} MiB -> $layers of 7b's 32 layers"
  local timed=()
  [[ -x /usr/bin/time ]] && timed=(/usr/bin/time -v)
  step offload_7b 420 "${timed[@]}" "${sft[@]}" bench --device cuda --preset 7b --num_layers "$layers" \
    --dtype bf16 --batch_size 1 --seq_len 2048 --gradient_checkpointing --fsdp "full_shard offload" \
    --warmup 1 --steps 3 --json
  grep -E 'Maximum resident|Elapsed|^memory|^note: --fsdp' "$out/offload_7b.log"
  python3 - "$out" "$layers" <<'EOF'
import json, os, sys
out, layers = sys.argv[1], sys.argv[2]
log = open(os.path.join(out, "offload_7b.log")).read().splitlines()
js = [l for l in log if l.startswith("{")]
rss = [l.split(":")[-1].strip() for l in log if "Maximum resident" in l]
with open(os.path.join(out, "gpu_notes_offload.md"), "w") as f:
    if not js:
        f.write(f"- offload, 7b widths x {layers} layers: no result (offload_7b.log: {log[-1] if log else 'empty'})\n")
    else:
        j = json.loads(js[-1])
        f.write(f"- `--fsdp \"full_shard offload\"`, 7b widths x {j['num_layers']} layers, bf16, B=1 T=2048, "
                f"gradient checkpointing, one {j.get('gpu', 'GPU')}: {j['tokens_per_s']:.0f} tokens/s, "
                f"MFU {100 * j['mfu']:.1f}%, peak GPU memory {j.get('peak_gpu_mb', 0):.0f} MiB (after init), "
                f"peak host RSS {j['peak_rss_mb']:.0f} MB (time -v: {rss[0] if rss else 'n/a'} kB)\n")
print(open(os.path.join(out, "gpu_notes_offload.md")).read().strip())
EOF
}

run() {
  local carry=${1:-$root/build-cuda/carry}
  local out=${OUT:-/tmp/gpu_check}
  local work=/tmp/sft-gpu
  mkdir -p "$out" "$work"
  tar -C "$work" -xJf "$carry/sft-gpu.tar.xz" || { echo "gpu_check: cannot unpack $carry/sft-gpu.tar.xz" >&2; exit 1; }
  # cuBLASLt: the toolkit's, else the one in PyTorch's nvidia wheels (nvidia/cu13/lib or nvidia/cublas/lib).
  local cublas_dir="" lib
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -e "$d/libcublasLt.so.13" ]] && { cublas_dir=$d; break; }
  done
  if [[ -z $cublas_dir ]]; then
    lib=$(find $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null) \
            -name 'libcublasLt.so.13' 2>/dev/null | head -n 1)
    [[ -n $lib ]] && cublas_dir=$(dirname "$lib")
  fi
  # NCCL (not carried: ~200 MB): the toolkit's, else PyTorch's nvidia-nccl-cu13 wheel.
  local nccl_dir=""
  for d in /usr/local/cuda/lib /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -e "$d/libnccl.so.2" ]] && { nccl_dir=$d; break; }
  done
  if [[ -z $nccl_dir ]]; then
    lib=$(find $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null) \
            -name 'libnccl.so.2' 2>/dev/null | head -n 1)
    [[ -n $lib ]] && nccl_dir=$(dirname "$lib")
  fi
  # Only sft's processes see the carried libraries (python3 keeps its own).
  local libs="$work/lib${cublas_dir:+:$cublas_dir}${nccl_dir:+:$nccl_dir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  local sft=(env LD_LIBRARY_PATH="$libs" SFT_PARITY_FIXTURES="$work/parity" "$work/sft")
  local test_cuda=(env LD_LIBRARY_PATH="$libs" SFT_PARITY_FIXTURES="$work/parity" "$work/test_cuda")
  {
    echo "== $(date -u +%FT%TZ) $(hostname)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1
    echo "cublasLt from: ${cublas_dir:-not found}; NCCL from: ${nccl_dir:-not found}; mpirun: $(command -v mpirun || echo none)"
    grep -E 'MemTotal|MemAvailable' /proc/meminfo
    LD_LIBRARY_PATH="$libs" ldd "$work/sft" | grep -E 'not found|cublas' || true
    python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
  } 2>&1 | tee "$out/env.txt"

  local status=()
  step() {  # step NAME TIMEOUT CMD... : runs with a timeout, log in $out/NAME.log, records the status
    local name=$1 limit=$2; shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    tail -n 3 "$out/$name.log"
    status+=("$name rc=$rc")
  }

  local only=${SFT_GPU_CHECK:-all}
  step test_cuda 150 "${test_cuda[@]}" --gtest_brief=1 --gtest_filter='-NcclWorld.*'
  grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/test_cuda.log"

  [[ $only != bench ]] && offload_checks "$out" "$work" "$libs"
  [[ $only == offload ]] && { printf '%s\n' "${status[@]}" | tee "$out/status.txt"; return; }

  for preset in base 1b; do
    local bargs=(--preset "$preset" --dtype bf16)
    local pargs=(--preset "$preset" --dtype bf16)
    if [[ $preset == 1b ]]; then
      bargs+=(--batch_size 8 --warmup 1 --steps 4); pargs+=(--batch_size 8 --warmup 1 --steps 4)
    else
      bargs+=(--batch_size 8 --warmup 2 --steps 10); pargs+=(--batch_size 8 --warmup 2 --steps 10)
    fi
    for gc in "" --gradient_checkpointing; do
      local tag="${preset}${gc:+_gc}"
      step "sft_$tag" 120 "${sft[@]}" bench --device cuda "${bargs[@]}" $gc --json
      step "torch_$tag" 150 python3 "$root/bench/pytorch_baseline.py" --device cuda "${pargs[@]}" $gc --json
    done
  done

  printf '%s\n' "${status[@]}" >"$out/status.txt"
  python3 - "$out" <<'EOF'
import json, os, sys
out = sys.argv[1]
def last_json(name):
    try:
        lines = open(os.path.join(out, name + ".log")).read().strip().splitlines()
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None
gpu = ""
rows = []
for preset in ("base", "1b"):
    for gc in ("", "_gc"):
        tag = preset + gc
        s, t = last_json("sft_" + tag), last_json("torch_" + tag)
        gpu = gpu or (s or {}).get("gpu") or (t or {}).get("gpu") or ""
        def cell(j):
            if not j:
                return ("failed", "", "")
            return (f"{j['tokens_per_s']:.0f}", f"{100 * j['mfu']:.1f}%", f"{j.get('peak_gpu_mb', 0):.0f}")
        ratio = f"{s['tokens_per_s'] / t['tokens_per_s']:.2f}x" if s and t else "-"
        rows.append((tag, *cell(s), *cell(t), ratio))
print(open(os.path.join(out, "status.txt")).read().strip())
print(f"\nGPU: {gpu}   (bf16, MFU against 989 TFLOP/s; peak memory in MiB: sft = its allocations' high-water "
      "mark, torch = max_memory_allocated)")
head = ("run", "sft tok/s", "sft MFU", "sft MiB", "torch tok/s", "torch MFU", "torch MiB", "sft/torch")
print(" | ".join(f"{h:>11}" for h in head))
for r in rows:
    print(" | ".join(f"{c:>11}" for c in r))
EOF
}

case "$mode" in
  pack) shift; pack "$@" ;;
  run) shift || true; run "$@" ;;
  *) sed -n '2,19p' "$0"; exit 2 ;;
esac
