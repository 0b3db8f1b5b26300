#!/usr/bin/env bash
# Installs the Debian packages sft needs (and, with --test, those its tests need), then builds:
# the sft binary alone without the CUDA backend (what the demo runs), or with --test every target
# (the test binaries; the CUDA backend when nvcc is found). SFT_CUDA=ON|OFF|AUTO in the environment
# overrides either default (e.g. SFT_CUDA=AUTO bash scripts/demo.sh builds CUDA when nvcc is found).
# Usage: scripts/setup.sh [--test] [--sanitize] [--build-dir DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build"; test=0; sanitize=OFF
while [[ $# -gt 0 ]]; do
  case "$1" in
    --test) test=1 ;;
    --sanitize) sanitize=ON ;;
    --build-dir) build="$2"; shift ;;
    *) echo "setup.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

pkgs=(cmake g++ make pkg-config libdnnl-dev libsentencepiece-dev nlohmann-json3-dev libpcre2-dev
      libcli11-dev libyaml-cpp-dev libfmt-dev libgtest-dev openmpi-bin libopenmpi-dev libxxhash-dev)
# Test references run on Debian's PyTorch (CPU) in a virtualenv (scripts/setup_venv.sh).
[[ $test == 1 ]] && pkgs+=(python3 python3-venv python3-pip python3-torch python3-numpy)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "setup: installing ${missing[*]}"
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# SFT_CUDA is passed every time: the demo and the tests share build/, and a cached value from one
# must not decide the other's.
if [[ $test == 1 ]]; then cuda=${SFT_CUDA:-AUTO}; targets=(); else cuda=${SFT_CUDA:-OFF}; targets=(--target sft); fi
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSFT_SANITIZE="$sanitize" -DSFT_CUDA="$cuda" >/dev/null
cmake --build "$build" -j"$(nproc)" "${targets[@]}"
