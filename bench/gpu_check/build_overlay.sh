#!/usr/bin/env bash
# Build the overlay of Python wheels that bench/gpu_check/gpu_check.py needs on the lent GPU machine, which has
# PyTorch with CUDA on Python 3.12 and no network (/work/.library/device/KINDS.md: python3 is 3.12.3; its image
# has peft, accelerate, numpy, psutil, ninja, msgpack, py-cpuinfo, einops, tqdm, but not DeepSpeed, OpenRLHF,
# pydantic or hjson, and transformers 5.17 / tokenizers 0.23.2, not the 5.15 / 0.22.2 tested here).
#
#   bash bench/gpu_check/build_overlay.sh [OUT]      # default OUT: .whl in the repository root (.gitignore)
#
# Wheels for cp312 manylinux x86_64, --no-deps, one version each: transformers, tokenizers, safetensors,
# openrlhf==0.11.2 (only its models/ are imported), pydantic and what it imports, hjson; DeepSpeed publishes only
# a source distribution, so its wheel is built here without compiled ops (DS_BUILD_OPS=0: pure Python, any
# CPython) with this checkout's .venv, which has torch (DeepSpeed's setup.py imports it). On the GPU machine:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
# and PYTHONPATH=/tmp/site:. (docs/gpu.md, "GPU check").
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-.whl}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d "$OUT" \
  transformers==5.15.0 tokenizers==0.22.2 safetensors==0.8.0 openrlhf==0.11.2 \
  pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.7.0 typing-inspection==0.4.4 \
  typing-extensions==4.16.0 hjson==3.1.0
if ! ls "$OUT"/deepspeed-0.19.6-*.whl >/dev/null 2>&1; then
  src=$(mktemp -d)
  "$PY" -m pip download -q --no-deps --no-binary=:all: -d "$src" deepspeed==0.19.6
  "$PY" -m pip install -q --target "$src/build-tools" wheel  # bdist_wheel, for this build only
  PYTHONPATH="$src/build-tools" DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" "$src"/deepspeed-0.19.6.tar.gz
  rm -rf "$src"
fi
ls -l "$OUT"
du -sh "$OUT"
