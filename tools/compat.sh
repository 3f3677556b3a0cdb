#!/usr/bin/env bash
# Compat run for one torch version: a fresh venv with that torch from the registry, the project installed as a user
# would (`pip install ".[test]"`, build isolation on), then the test suite; prints wall time per step and disk used.
#
# usage: tools/compat.sh TORCH_VERSION [pytest args...]
#   env: COMPAT_ROOT   where venvs go (default ~/.cache/linneuron-compat; keep it outside the repo)
#        LINNEURON_CUDA  passed to the build (OFF skips the CUDA module and is much faster; default AUTO)
#        COMPAT_REUSE=1  keep an existing venv and its torch (iterating on a fix; recorded runs use a fresh one)
#        COMPAT_KEEP=0   delete the venv after the run (default keeps it)
# Linux torch wheels other than the local CPU build (2.13.0+cpu) are CUDA builds, ~3 GB with their nvidia wheels.
set -euo pipefail
cd "$(dirname "$0")/.."

version=${1:?usage: tools/compat.sh TORCH_VERSION [pytest args...]}
shift
root=${COMPAT_ROOT:-$HOME/.cache/linneuron-compat}
venv="$root/torch-$version"
export LINNEURON_CUDA=${LINNEURON_CUDA:-AUTO}

step_start=$SECONDS
t0=$SECONDS
step() {  # step NAME: report how long the step before took
  echo "== compat[$version] $1 ($((SECONDS - step_start)) s since start)"
  t0=$SECONDS
}

mkdir -p "$root"
if [ "${COMPAT_REUSE:-0}" = 1 ] && [ -x "$venv/bin/python" ]; then
  step "reusing $venv"
else
  rm -rf "$venv"
  step "fresh venv $venv"
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "torch==$version"
fi
torch_s=$((SECONDS - t0))
step "installing linneuron (LINNEURON_CUDA=$LINNEURON_CUDA)"
# A build dir per venv: a user's install starts from nothing, and runs for different torches never share one.
"$venv/bin/python" -m pip install -q ".[test]" -C build-dir="$venv/linneuron-build"
install_s=$((SECONDS - t0))
"$venv/bin/python" -c "import torch, linneuron; print('torch', torch.__version__, 'linneuron', linneuron.__version__)"

step "pytest"
log="$venv/pytest.log"
set +e
# Run from outside the source tree so the tests import the installed package, as a user's would.
# With no path among the arguments pytest collects the current directory, tests/.
(cd tests && "$venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir=.. -c ../pyproject.toml "$@") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
test_s=$((SECONDS - t0))

disk=$(du -sh "$venv" | cut -f1)
summary=$(grep -E "[0-9]+ (passed|failed)" "$log" | tail -n 1)  # absent with -qq
echo "== compat[$version] torch install ${torch_s}s, linneuron install ${install_s}s, tests ${test_s}s," \
  "total $((SECONDS - step_start))s, venv $disk, pytest rc $rc"
echo "== compat[$version] $summary"
if [ "${COMPAT_KEEP:-1}" = 0 ]; then rm -rf "$venv"; fi
exit "$rc"
