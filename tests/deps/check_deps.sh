#!/usr/bin/env bash
# Checks the folder dependency order of src/ (design.md §3, issue 11 item 4). Lowest first:
#   core; backend, tokenizer; model; io, data; dist; train; cli
# A file may include (with "..." or <...>) only headers of its own top folder or of a folder on a
# strictly lower level: peers on one level (backend/tokenizer, io/data) may not include each other.
# Prints every offending include as "FILE:LINE: FROM -> TO (...)" and exits 1 if there is any.
# Usage: check_deps.sh [SRC_DIR]   (default: the src/ beside this script's tests/ folder)
set -euo pipefail

src=${1:-"$(cd "$(dirname "${BASH_SOURCE[0]}")/../../src" && pwd)"}
[[ -d $src ]] || { echo "check_deps: $src: not a directory" >&2; exit 2; }

declare -A level=([core]=0 [backend]=1 [tokenizer]=1 [model]=2 [io]=3 [data]=3 [dist]=4 [train]=5 [cli]=6)
order="core; backend, tokenizer; model; io, data; dist; train; cli"

bad=0 files=0
while IFS= read -r -d '' file; do
  rel=${file#"$src"/}
  from=${rel%%/*}
  files=$((files + 1))
  if [[ $rel != */* || -z ${level[$from]+x} ]]; then
    echo "src/$rel: file outside the known folders ($order): add its folder to tests/deps/check_deps.sh"
    bad=$((bad + 1))
    continue
  fi
  while IFS= read -r line; do
    lineno=${line%%:*}
    line=${line#*:}
    [[ $line =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*[\"\<]([^\"\>]+)[\"\>] ]] || continue
    inc=${BASH_REMATCH[1]}
    [[ $inc == */* ]] || continue
    to=${inc%%/*}
    [[ -n ${level[$to]+x} ]] || continue  # a system or third-party header (fmt/, nlohmann/, sys/, ...)
    [[ $to == "$from" ]] && continue
    if ((level[$to] >= level[$from])); then
      if ((level[$to] == level[$from])); then why="peers on one level may not include each other"
      else why="$to is above $from"; fi
      echo "src/$rel:$lineno: $from -> $to: #include \"$inc\" ($why; order: $order)"
      bad=$((bad + 1))
    fi
  done < <(grep -nE '^[[:space:]]*#[[:space:]]*include' "$file" || true)
done < <(find "$src" -type f \( -name '*.h' -o -name '*.hpp' -o -name '*.cpp' -o -name '*.cc' -o -name '*.cu' \
  -o -name '*.cuh' -o -name '*.inc' \) -print0 | sort -z)

if ((files == 0)); then echo "check_deps: no source files under $src" >&2; exit 2; fi
if ((bad > 0)); then
  echo "check_deps: $bad include(s) break the folder order in $files files"
  exit 1
fi
echo "check_deps: $files files, every include points to its own folder or one below"
