#!/usr/bin/env bash
# Compiles linneuron's CUDA kernels for the host (shims in this folder, launches rewritten by transform.py) and runs
# emu_test against a float64 reference. Needs g++ >= 12 (C++20 <barrier>, _Float16). About a minute on 2 cores;
# `run.sh big` adds the 1536 x 1536 cases of the large float32 and tensor-core tiles (much longer).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
WORK=$(mktemp -d /tmp/linneuron-emulation.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
for f in gemm gemm_simt gemm_wmma elementwise; do
  python3 "$HERE/transform.py" "$SRC/$f.cu" "$WORK/$f.cpp"
done
# The sources include "gemm_kernels.cuh" from their own folder, so the rewritten copy beside them is used.
python3 "$HERE/transform.py" "$SRC/gemm_kernels.cuh" "$WORK/gemm_kernels.cuh"
${CXX:-g++} -std=c++20 -O1 -pthread -w -I"$HERE" -I"$SRC" -I"$SRC/../cpp" -x c++ "$WORK"/gemm.cpp "$WORK"/gemm_simt.cpp \
  "$WORK"/gemm_wmma.cpp "$WORK"/elementwise.cpp "$HERE/emu_test.cpp" -o "$WORK/emu_test"
"$WORK/emu_test" "$@"
