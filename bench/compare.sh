#!/usr/bin/env bash
# Side-by-side benchmark: `sft bench` vs the PyTorch/HF baseline (bench/pytorch_baseline.py),
# same presets, dtype, thread count and machine, run one after the other (never concurrently).
#
# Usage: bench/compare.sh [--presets "tiny small base"] [--dtypes "fp32 bf16"] [--steps N]
#                         [--sft PATH] [--baseline-only] [--keep-logs]
# Env:   PYTHON  interpreter for the baseline (default: <repo>/.venv-bench/bin/python, the newest
#                PyTorch, from scripts/setup_bench_venv.sh; else <repo>/.venv/bin/python, Debian's
#                PyTorch 1.13, from scripts/setup_venv.sh)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
presets="tiny small base"
dtypes="fp32 bf16"
steps=5
threads=2
sft="$root/build/sft"
baseline_only=0
keep_logs=0
if [[ -x "$root/.venv-bench/bin/python" ]]; then default_py="$root/.venv-bench/bin/python"; else default_py="$root/.venv/bin/python"; fi
py="${PYTHON:-$default_py}"

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "compare.sh: error: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --presets) [[ $# -ge 2 ]] || die "--presets needs a value"; presets="$2"; shift 2 ;;
    --presets=*) presets="${1#*=}"; shift ;;
    --dtypes) [[ $# -ge 2 ]] || die "--dtypes needs a value"; dtypes="$2"; shift 2 ;;
    --dtypes=*) dtypes="${1#*=}"; shift ;;
    --steps) [[ $# -ge 2 ]] || die "--steps needs a value"; steps="$2"; shift 2 ;;
    --steps=*) steps="${1#*=}"; shift ;;
    --sft) [[ $# -ge 2 ]] || die "--sft needs a value"; sft="$2"; shift 2 ;;
    --sft=*) sft="${1#*=}"; shift ;;
    --baseline-only) baseline_only=1; shift ;;
    --keep-logs) keep_logs=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

[[ "$steps" =~ ^[1-9][0-9]*$ ]] || die "--steps must be a positive integer (got '$steps')"
for p in $presets; do
  case "$p" in tiny|small|base) ;; *) die "unknown preset '$p' (tiny|small|base)" ;; esac
done
for d in $dtypes; do
  case "$d" in fp32|bf16) ;; *) die "unknown dtype '$d' (fp32|bf16)" ;; esac
done
[[ -n "${presets// }" ]] || die "no presets given"
[[ -n "${dtypes// }" ]] || die "no dtypes given"
command -v python3 >/dev/null || die "python3 not found (needed to parse JSON)"
[[ -x "$py" ]] || die "baseline interpreter '$py' not found; run scripts/setup_venv.sh (or set PYTHON)"
if [[ $baseline_only -eq 0 ]]; then
  [[ -x "$sft" ]] || die "sft binary '$sft' not found or not executable (build it, pass --sft PATH, or use --baseline-only)"
fi

logdir=$(mktemp -d "${TMPDIR:-/tmp}/sft-compare.XXXXXX")
results="$logdir/results.tsv"
: > "$results"
# Logs are kept when a run fails (the error message points into them) or with --keep-logs.
cleanup() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then echo "compare.sh: logs kept in $logdir" >&2
  elif [[ $keep_logs -eq 0 ]]; then rm -rf "$logdir"; fi
}
trap cleanup EXIT

# last_json LOG: print the log's last non-empty line if it is a JSON object with the bench keys.
last_json() {
  python3 - "$1" <<'EOF'
import json, sys
lines = [l.strip() for l in open(sys.argv[1], errors="replace") if l.strip()]
if not lines:
    sys.exit("no output")
try:
    obj = json.loads(lines[-1])
except ValueError:
    sys.exit("last line is not JSON: " + lines[-1][:200])
need = ["preset", "dtype", "tokens_per_s", "gflops", "mfu", "peak_rss_mb"]
missing = [k for k in need if not isinstance(obj, dict) or k not in obj]
if missing:
    sys.exit("last JSON line lacks keys: " + ", ".join(missing))
print(json.dumps(obj))
EOF
}

# run_one NAME LOG CMD... : run, check the exit status and the JSON line; print the JSON.
run_one() {
  local name="$1" log="$2"; shift 2
  echo "== $name: $*" >&2
  local t0=$SECONDS rc=0
  "$@" > "$log" 2>&1 || rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "compare.sh: error: $name failed (exit $rc) after $((SECONDS - t0)) s; last lines of $log:" >&2
    tail -n 20 "$log" | sed 's/^/    /' >&2
    exit 1
  fi
  local json
  if ! json=$(last_json "$log" 2>&1); then
    echo "compare.sh: error: $name: bad output ($json); last lines of $log:" >&2
    tail -n 20 "$log" | sed 's/^/    /' >&2
    exit 1
  fi
  echo "   done in $((SECONDS - t0)) s" >&2
  printf '%s\n' "$json"
}

for p in $presets; do
  for d in $dtypes; do
    sft_json="null"
    if [[ $baseline_only -eq 0 ]]; then
      sft_json=$(run_one "sft $p $d" "$logdir/sft-$p-$d.log" \
        "$sft" bench --preset "$p" --dtype "$d" --steps "$steps" --threads "$threads" --json)
    fi
    # The baseline's MFU against the same peak as sft's (sft measures this machine's at start).
    peak_args=()
    if [[ "$sft_json" != "null" ]]; then
      peak=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("peak_gflops", ""))' "$sft_json")
      [[ -n "$peak" ]] && peak_args=(--peak_gflops "$peak")
    fi
    pt_json=$(run_one "pytorch $p $d" "$logdir/pytorch-$p-$d.log" \
      "$py" "$root/bench/pytorch_baseline.py" --preset "$p" --dtype "$d" --steps "$steps" \
      --threads "$threads" "${peak_args[@]}" --json)
    printf '%s\t%s\t%s\t%s\n' "$p" "$d" "$sft_json" "$pt_json" >> "$results"
  done
done

# Versions of the baseline (from its first output line), then the table.
first_pt_log=$(ls "$logdir"/pytorch-*.log 2>/dev/null | head -n 1)
[[ -n "$first_pt_log" ]] && echo "baseline: $(head -n 1 "$first_pt_log")"
[[ $baseline_only -eq 0 ]] && echo "sft: $sft"
echo "steps $steps, threads $threads; ratio = sft tokens/s / pytorch tokens/s"
python3 - "$results" <<'EOF'
import json, sys
rows = []
for line in open(sys.argv[1]):
    p, d, s, t = line.rstrip("\n").split("\t")
    s, t = json.loads(s), json.loads(t)
    f = lambda o, k, fmt: fmt.format(o[k]) if o else "-"
    ratio = "{:.2f}x".format(s["tokens_per_s"] / t["tokens_per_s"]) if s and t["tokens_per_s"] > 0 else "-"
    # The issue's targets (sft >= 4x the baseline in bf16, >= 3x in fp32) as the sft MFU they need
    # against the same peak: above 100% no implementation can meet them on this machine.
    target = 4.0 if d == "bf16" else 3.0
    rows.append([p, d, f(s, "tokens_per_s", "{:.1f}"), f(t, "tokens_per_s", "{:.1f}"), ratio,
                 "{:.1f}%".format(100 * s["mfu"]) if s else "-", "{:.1f}%".format(100 * t["mfu"]),
                 "{:.0f}x: {:.0f}%".format(target, 100 * target * t["mfu"]), f(s, "peak_gflops", "{:.0f}"),
                 f(s, "peak_rss_mb", "{:.0f}"), f(t, "peak_rss_mb", "{:.0f}")])
head = ["preset", "dtype", "sft tok/s", "pytorch tok/s", "ratio", "sft MFU", "pytorch MFU",
        "target needs MFU", "peak GFLOP/s", "sft RSS MB", "pytorch RSS MB"]
w = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
fmt = lambda r: "  ".join(str(c).rjust(w[i]) if i >= 2 else str(c).ljust(w[i]) for i, c in enumerate(r))
print(fmt(head))
print("  ".join("-" * x for x in w))
for r in rows:
    print(fmt(r))
for line in open(sys.argv[1]):
    p, d, s, t = line.rstrip("\n").split("\t")
    t = json.loads(t)
    if d == "fp32" and t.get("blas") == "netlib-reference":
        print("note: the baseline's fp32 matmuls ran on the netlib reference BLAS (no OpenBLAS installed);"
              " its fp32 numbers are far below what PyTorch does with OpenBLAS.")
        break
EOF
if [[ $keep_logs -eq 1 ]]; then echo "logs: $logdir"; fi
