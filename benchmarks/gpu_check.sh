#!/usr/bin/env bash
# GPU check of linneuron's CUDA part: build, reference smoke check, GPU and CPU tests, GPU benchmark, sanitizers.
#
#   benchmarks/gpu_check.sh LOG_DIR
#
# For a machine with an NVIDIA GPU, nvcc, torch, scikit-build-core, pybind11, numpy and pytest already installed,
# and no network. Builds a wheel with the installed build tools (pip --no-build-isolation --no-index) and unpacks it
# into a temp folder put first on PYTHONPATH, so nothing outside LOG_DIR, the repository's build/ folder and that
# temp folder is written, and the interpreter's own packages (torch) stay as they are. Every step has its own
# timeout and the whole run stays within GPU_CHECK_BUDGET seconds (default 470, under 8 minutes): steps that no
# longer fit are skipped and say so. Logs: LOG_DIR/NN-step.log, LOG_DIR/summary.txt, bench_cuda.{json,md},
# junit XML of the tests. Exit status 0 only if every step that ran passed.
#
# Environment: GPU_CHECK_ARCHS (default 90: one architecture, for speed), GPU_CHECK_BUDGET (seconds),
# GPU_CHECK_SANITIZER=0 to skip compute-sanitizer, PYTHON (default python3).
set -u -o pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 LOG_DIR" >&2
  exit 2
fi
mkdir -p "$1"
LOG=$(cd "$1" && pwd)
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET:-470}
START=$(date +%s)
WORK=$(mktemp -d /tmp/linneuron-gpu-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) LOG REPO PYTHON WORK
export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
SUMMARY="$LOG/summary.txt"
: >"$SUMMARY"
FAILED=0
STEP=0

remaining() { echo $((BUDGET - ($(date +%s) - START))); }

# run_step NAME TIMEOUT MIN_SECONDS REQUIRED COMMAND...: runs COMMAND with min(TIMEOUT, time left), logging to
# LOG/NN-NAME.log; skipped when fewer than MIN_SECONDS remain. REQUIRED: 1 = must run and pass, 2 = must pass if
# it runs (optional when out of time), 0 = informational. Failures of required steps set the exit status.
run_step() {
  local name=$1 limit=$2 min=$3 required=$4
  shift 4
  STEP=$((STEP + 1))
  local file
  file=$(printf '%s/%02d-%s.log' "$LOG" "$STEP" "$name")
  local left
  left=$(remaining)
  if [ "$left" -lt "$min" ]; then
    echo "SKIP  $name (only ${left}s of the budget left)" | tee -a "$SUMMARY"
    if [ "$required" = 1 ]; then FAILED=1; fi
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "==> $name (timeout ${limit}s)"
  local t0=$(date +%s) rc
  timeout --kill-after=10 "$limit" "$@" >"$file" 2>&1
  rc=$?
  local took=$(($(date +%s) - t0))
  tail -n 15 "$file"
  if [ $rc -eq 0 ]; then
    echo "PASS  $name (${took}s)" | tee -a "$SUMMARY"
  else
    [ $rc -eq 124 ] && echo "TIMEOUT after ${limit}s" >>"$file"
    echo "FAIL  $name (exit $rc after ${took}s, see $(basename "$file"))" | tee -a "$SUMMARY"
    if [ "$required" != 0 ]; then FAILED=1; fi
  fi
  return 0
}

environment() {
  date -u
  nvidia-smi || true
  nvcc --version
  "$PYTHON" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda,
      'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
  for mod in pytest numpy scikit_build_core pybind11 expecttest hypothesis; do
    "$PYTHON" -c "import $mod; print('$mod', getattr($mod, '__version__', 'present'))" 2>/dev/null || echo "$mod missing"
  done
  cmake --version | head -1
  ninja --version 2>/dev/null || echo "ninja missing"
  git -C "$REPO" log --oneline -1 2>/dev/null || true
}

build() {
  cd "$REPO" &&
    LINNEURON_CUDA=ON LINNEURON_CUDA_ARCHS="${GPU_CHECK_ARCHS:-90}" \
      "$PYTHON" -m pip install --no-build-isolation --no-deps --no-index --target "$WORK/site" -v . &&
    cd "$WORK" && "$PYTHON" -c "import linneuron, json, os; i = linneuron.info(); print(linneuron.__file__);
print(json.dumps(i, indent=1)); assert i['cuda_available'], i['cuda_reason']
assert linneuron.__file__.startswith(os.environ['WORK']), 'another linneuron install shadows this build'"
}

export -f environment build

# Exercises every kernel once per dtype and layout on small shapes and compares with NumPy float64 on the host,
# a reference outside torch and outside the GPU; also the payload of the compute-sanitizer runs.
cat >"$LOG/smoke.py" <<'EOF'
"""Every linneuron CUDA kernel against NumPy float64 on the host: small shapes, each dtype and operand layout."""
import math
import os
import sys

import numpy as np
import torch

import linneuron.functional as LF
from linneuron import ops

torch.backends.cuda.matmul.allow_tf32 = False
EPS = {torch.float32: 2.0**-24, torch.float64: 2.0**-53, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
failures = 0


def host(t):
    return t.detach().double().cpu().numpy()


def check(name, got, want, bound):
    global failures
    err = np.abs(host(got) - want)
    ok = bool(np.all(err <= bound))
    failures += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max error {err.max() if err.size else 0:.3g}, bound {bound.max() if np.size(bound) else 0:.3g}")


def matmul_bound(a, b, ref, dtype):
    acc = EPS[torch.float64] if dtype == torch.float64 else EPS[torch.float32]
    return 2 * EPS[dtype] * np.abs(ref) + 4 * math.sqrt(max(a.shape[1], 1)) * acc * (np.abs(a) @ np.abs(b)) + 1e-30


torch.manual_seed(0)
for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
    # (1536, 24, 1536) fills >= 132 tiles of 128 x 128, so float32 takes the large-tile kernel; the sanitizer
    # runs (LINNEURON_SMOKE_SMALL=1) leave out only the biggest shape.
    # (24, 2100, 100) is split along K for float32/float64 (few tiles, long K).
    shapes = [(1, 33, 5), (8, 70, 9), (9, 70, 130), (130, 64, 257), (300, 129, 200), (1536, 24, 1536), (24, 2100, 100)]
    if not os.environ.get("LINNEURON_SMOKE_SMALL"):
        shapes.append((2048, 96, 2176))
    for m, k, n in shapes:
        for layout in ("contiguous", "w transposed", "x transposed", "misaligned"):
            x = torch.randn(m, k, device="cuda").to(dtype)
            w = torch.randn(n, k, device="cuda").to(dtype)
            if layout == "w transposed":
                w = w.t().contiguous().t()
            elif layout == "x transposed":
                x = x.t().contiguous().t()
            elif layout == "misaligned":
                x = torch.cat([x.new_zeros(1), x.flatten()])[1:].view(m, k)
            b = torch.randn(n, device="cuda").to(dtype)
            xa, wa, ba = host(x), host(w), host(b)
            ref = xa @ wa.T + ba
            bound = matmul_bound(xa, wa.T, ref, dtype) + 4 * EPS[dtype] * np.abs(ba)
            check(f"linear {dtype} ({m},{k},{n}) {layout}", LF.linear(x, w, b), ref, bound)
            fired = host(LF.neuron(x, w, b))
            clear = np.abs(ref) > bound
            ok = bool(np.all(fired[clear] == (ref[clear] >= 0))) and bool(np.all((fired == 0) | (fired == 1)))
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} neuron {dtype} ({m},{k},{n}) {layout}")
        # backward: dX = dY W, dW = dYᵀ X, db = column sums
        x = torch.randn(m, k, device="cuda").to(dtype).requires_grad_()
        w = torch.randn(n, k, device="cuda").to(dtype).requires_grad_()
        b = torch.randn(n, device="cuda").to(dtype).requires_grad_()
        gy = torch.randn(m, n, device="cuda").to(dtype)
        LF.linear(x, w, b).backward(gy)
        ga, xa, wa = host(gy), host(x), host(w)
        check(f"dX {dtype} ({m},{k},{n})", x.grad, ga @ wa, matmul_bound(ga, wa, ga @ wa, dtype))
        check(f"dW {dtype} ({m},{k},{n})", w.grad, ga.T @ xa, matmul_bound(ga.T, xa, ga.T @ xa, dtype))
        ones = np.ones((1, m))
        check(f"db {dtype} ({m},{k},{n})", b.grad[None], ones @ ga, matmul_bound(ones, ga, ones @ ga, dtype))
    z = torch.randn(4099, device="cuda").to(dtype)
    z[:3] = torch.tensor([-0.0, 0.0, float("nan")])
    want = np.where(np.isnan(host(z)), np.nan, (host(z) >= 0).astype(np.float64))
    got = host(LF.step(z))
    ok = bool(np.array_equal(got, want, equal_nan=True))
    failures += not ok
    print(f"{'ok  ' if ok else 'FAIL'} step {dtype}")
    gy = torch.randn(4099, device="cuda").to(dtype)
    za = host(z)[3:]
    atan = host(gy)[3:] * (1.0 / (1 + (math.pi / 2 * 2.0 * za) ** 2))
    check(f"step_backward atan {dtype}", ops.step_backward(gy[3:], z[3:], 3, 2.0), atan,
          8 * EPS[dtype] * (np.abs(atan) + 2 * np.abs(host(gy)[3:])))
torch.cuda.synchronize()
print(f"{failures} failure(s)")
sys.exit(1 if failures else 0)
EOF

run_step environment 30 10 0 bash -c environment
run_step build 240 60 1 bash -c build
VPY="$PYTHON"
if (cd "$WORK" && "$VPY" -c "import linneuron._cuda") 2>/dev/null; then
  # Tests that need packages this machine lacks are deselected (and say so) rather than failing on imports.
  DESELECT=""
  if ! "$VPY" -c "import expecttest" 2>/dev/null; then
    # torch.testing._internal (imported by opcheck and by torch's OpInfo samples) needs expecttest at import time:
    # a stub lets those modules import; the opcheck tests, which might use it, are deselected.
    mkdir -p "$WORK/stubs"
    cat >"$WORK/stubs/expecttest.py" <<'STUB'
"""Import-only stand-in for expecttest (missing on this machine); gpu_check.sh deselects the opcheck tests."""
import unittest

ACCEPT = False


class TestCase(unittest.TestCase):
    def assertExpectedInline(self, *args, **kwargs):
        raise NotImplementedError("expecttest is not installed here")
STUB
    export PYTHONPATH="$PYTHONPATH:$WORK/stubs"
    DESELECT="not opcheck"
    echo "note: expecttest missing: import stub on PYTHONPATH, opcheck tests deselected" | tee -a "$SUMMARY"
  fi
  run_step smoke-vs-numpy 90 20 1 "$VPY" "$LOG/smoke.py"
  run_step cuda-tests 180 60 1 "$VPY" -m pytest -p no:cacheprovider -q -rs "$REPO/tests" -m cuda \
    ${DESELECT:+-k "$DESELECT"} --junitxml="$LOG/cuda-tests.xml"
  run_step gpu-benchmark 150 60 1 "$VPY" -m linneuron.bench.cuda --out "$LOG"
  run_step cpu-tests 120 30 1 "$VPY" -m pytest -p no:cacheprovider -q -x "$REPO/tests" -m "not cuda" \
    ${DESELECT:+-k "$DESELECT"} --junitxml="$LOG/cpu-tests.xml"
  SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
  if [ "${GPU_CHECK_SANITIZER:-1}" != 0 ] && [ -n "$SANITIZER" ]; then
    for tool in memcheck racecheck; do
      run_step "sanitizer-$tool" 120 45 2 env LINNEURON_SMOKE_SMALL=1 "$SANITIZER" --tool "$tool" \
        --error-exitcode 9 "$VPY" "$LOG/smoke.py"
    done
  else
    echo "SKIP  compute-sanitizer (not found or GPU_CHECK_SANITIZER=0)" | tee -a "$SUMMARY"
  fi
else
  echo "FAIL  linneuron._cuda did not build or import: no GPU steps ran" | tee -a "$SUMMARY"
  FAILED=1
fi

echo "---- summary ($(($(date +%s) - START))s of ${BUDGET}s) ----" | tee -a "$SUMMARY"
cat "$SUMMARY"
[ -f "$LOG/bench_cuda.md" ] && cat "$LOG/bench_cuda.md"
exit $FAILED
