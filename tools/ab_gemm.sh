#!/usr/bin/env bash
# In-process A/B of the CPU GEMM: a baseline revision against the working tree, linked into one program
# (tools/ab_gemm.cpp), so that both run on the same clock, caches and neighbours, interleaved.
#   bash tools/ab_gemm.sh BASE_REV m,k,n[,f|d[,layout[,threads]]] ...
# e.g. bash tools/ab_gemm.sh HEAD 2048,2048,2048,d 5,57,433,f 3,2086,1001,d,3,2
# Builds the static CPU library of BASE_REV (a git worktree in build/ab/base-src) and of the working tree with
# CMake (Release, no CUDA), renames the baseline's symbols from namespace linneuron to linneurob with objcopy (same
# length, so its mangled names stay valid), and runs the harness. Needs the Python with pybind11 that builds linneuron
# (PYTHON, default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 3,4p "$0" >&2; exit 2; }
base_rev=$1
shift
PYTHON=${PYTHON:-.venv/bin/python}
out=build/ab
mkdir -p "$out"
pybind11_dir=$("$PYTHON" -c "import pybind11; print(pybind11.get_cmake_dir())")

build_lib() {  # source dir, build dir
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLINNEURON_CUDA=OFF -DSKBUILD_PROJECT_VERSION=0.0.0 \
    -Dpybind11_DIR="$pybind11_dir" -DPython_EXECUTABLE="$("$PYTHON" -c 'import sys; print(sys.executable)')" \
    > "$2.log" 2>&1 || { cat "$2.log" >&2; exit 1; }
  cmake --build "$2" --target linneuron_cpu >> "$2.log" 2>&1 || { cat "$2.log" >&2; exit 1; }
}

# The baseline's library is kept between runs for the same commit (build/ab/base.rev), so that a series of A/Bs
# against one revision builds it once.
base_sha=$(git rev-parse "$base_rev^{commit}")
if [ "$(cat "$out/base.rev" 2> /dev/null)" != "$base_sha" ] || [ ! -f "$out/base/liblinneuron_cpu.a" ]; then
  rm -rf "$out/base-src" "$out/base.rev"
  git worktree prune
  git worktree add --detach -f "$out/base-src" "$base_sha" > /dev/null
  trap 'git worktree remove --force "$out/base-src" > /dev/null 2>&1 || true' EXIT
  build_lib "$out/base-src" "$out/base"
  echo "$base_sha" > "$out/base.rev"
fi
build_lib . "$out/new"
nm "$out/base/liblinneuron_cpu.a" 2> /dev/null | awk '{print $NF}' | grep 9linneuron | sort -u |
  awk '{new = $0; gsub(/9linneuron/, "9linneurob", new); print $0, new}' > "$out/rename.txt"
objcopy --redefine-syms="$out/rename.txt" "$out/base/liblinneuron_cpu.a" "$out/base/liblinneurob_cpu.a"
"${CXX:-g++}" -O2 -std=c++17 -fopenmp -Isrc/cpp tools/ab_gemm.cpp "$out/new/liblinneuron_cpu.a" \
  "$out/base/liblinneurob_cpu.a" -o "$out/ab_gemm"
"$out/ab_gemm" "$@"
