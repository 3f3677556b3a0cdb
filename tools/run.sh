#!/usr/bin/env bash
# One-command set-up and run: makes .venv if missing, installs torch (CPU build, pinned) and linneuron with its
# test extras, then runs `test` (pytest) or `bench` (linneuron bench) with any further arguments.
set -euo pipefail
cd "$(dirname "$0")/.."

task=${1:-test}
shift || true
venv=${LINNEURON_VENV:-.venv}

[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"

# A bare `torch` requirement would pull a CUDA build of several GB; the pinned CPU build is what we test against.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${LINNEURON_TORCH_VERSION:-2.13.0}"
python -m pip install -q ".[test,plot,bench]"

case "$task" in
  test) python -m pytest "$@" ;;
  # OpenBLAS's idle workers spin for 2^28 cycles after each call of the numpy peer, taking the core that the next
  # peer's second thread needs on a small machine; 2^4 cycles lets them sleep at once.
  bench) OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4} linneuron bench "$@" ;;
  demo) linneuron demo "$@" ;;
  info) linneuron info "$@" ;;
  *) echo "usage: tools/run.sh {test|bench|demo|info} [args...]" >&2; exit 2 ;;
esac
