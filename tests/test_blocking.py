"""Cache detection, the blocking derived from it, and the GEMM plan's paths, checked against outside references:
the kernel's own sysfs view of the caches, and float64 NumPy for products computed under unusual blockings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import linneuron
import numpy as np
import pytest
from _reference import assert_linear_close
from linneuron import _core


def _sysfs_caches() -> dict[int, int]:
    sizes = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for index in sorted(base.glob("index*")) if base.exists() else []:
        try:
            kind = (index / "type").read_text().strip()
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        unit = {"K": 1024, "M": 1024 * 1024}.get(text[-1], 1)
        sizes[level] = int(text.rstrip("KM")) * unit
    return sizes


def test_cache_sizes_are_plausible_and_ordered():
    caches = _core.cpu_caches()
    assert caches["source"] in ("cpuid", "sysfs", "sysconf", "default", "LINNEURON_CACHES")
    assert 16 * 1024 <= caches["l1d"] <= caches["l2"]
    assert caches["l3"] == 0 or caches["l3"] >= caches["l2"]
    assert caches["l2"] <= caches["l3_share"] <= max(caches["l3"], caches["l2"])


def test_cache_sizes_agree_with_sysfs():
    sysfs = _sysfs_caches()
    if 1 not in sysfs or 2 not in sysfs:
        pytest.skip("no cache description in sysfs")
    caches = _core.cpu_caches()
    assert caches["l1d"] == sysfs[1]
    assert caches["l2"] == sysfs[2]
    if 3 in sysfs:
        assert caches["l3"] == sysfs[3]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_blocking_fits_the_caches(dtype):
    caches, blk = _core.cpu_caches(), _core.gemm_blocking()[dtype]
    item = np.dtype(dtype).itemsize
    assert blk["kc"] * blk["nr"] * item <= caches["l1d"]
    assert blk["mc"] * blk["kc"] * item <= caches["l2"]
    assert blk["mc"] % blk["mr"] == 0 and blk["nc"] % blk["nr"] == 0
    assert linneuron.info()["gemm_blocking"][dtype] == blk


_CHILD = r"""
import json, sys
import numpy as np
from linneuron import _core
print(json.dumps({"caches": dict(_core.cpu_caches()), "blocking": _core.gemm_blocking()["float32"]}))
rng = np.random.default_rng(1)
for dtype in (np.float32, np.float64):
    for m, k, n in ((97, 301, 83), (200, 64, 130), (13, 700, 41)):
        x = rng.standard_normal((m, k)).astype(dtype)
        w = rng.standard_normal((n, k)).astype(dtype)
        out = np.empty((m, n), dtype)
        dt = _core.FLOAT32 if dtype == np.float32 else _core.FLOAT64
        s = x.itemsize
        _core.gemm(dt, m, n, k, x.ctypes.data, k, 1, w.ctypes.data, 1, k, out.ctypes.data, n, 1, 0, 1, False, False)
        np.save(sys.argv[1] + f"/{np.dtype(dtype).name}_{m}_{k}_{n}.npy", np.stack([out.astype(np.float64)]))
        np.save(sys.argv[1] + f"/in_{np.dtype(dtype).name}_{m}_{k}_{n}.npy", x.astype(np.float64))
        np.save(sys.argv[1] + f"/w_{np.dtype(dtype).name}_{m}_{k}_{n}.npy", w.astype(np.float64))
"""


@pytest.mark.parametrize("env", [{"LINNEURON_BLOCKING": "12,24,32"}, {"LINNEURON_CACHES": "16384,131072,0"}])
def test_overridden_blocking_still_computes_the_product(tmp_path, env):
    """Tiny blocks force many k, row and column blocks (and edges) through the driver; results stay right."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(proc.stdout.splitlines()[0])
    if "LINNEURON_BLOCKING" in env:
        assert (report["blocking"]["mc"], report["blocking"]["kc"], report["blocking"]["nc"]) == (12, 24, 32)
    else:
        assert report["caches"]["source"] == "LINNEURON_CACHES" and report["caches"]["l1d"] == 16384
        assert report["blocking"]["kc"] * report["blocking"]["nr"] * 4 <= 16384
    for dtype in ("float32", "float64"):
        for m, k, n in ((97, 301, 83), (200, 64, 130), (13, 700, 41)):
            out = np.load(tmp_path / f"{dtype}_{m}_{k}_{n}.npy")[0].astype(dtype)
            x = np.load(tmp_path / f"in_{dtype}_{m}_{k}_{n}.npy").astype(dtype)
            w = np.load(tmp_path / f"w_{dtype}_{m}_{k}_{n}.npy").astype(dtype)
            assert_linear_close(out, x, w)


# Shapes on both sides of the plan's dot/tile/skinny choices: short K, K = 1, tall with N <= 16, M = 1.
@pytest.mark.parametrize(
    "shape",
    [
        (4096, 3, 16),
        (1000, 8, 16),
        (16, 1, 512),
        (16, 64, 256),
        (1, 300, 257),
        (3, 1000, 40),
        (700, 16, 16),
        (129, 2, 5),
        (1, 1, 1),
        (2, 500, 3),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plan_paths_match_reference(shape, dtype):
    m, k, n = shape
    rng = np.random.default_rng(m * 7 + k * 3 + n)
    x = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((n, k)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    out = np.full((m, n), np.nan, dtype)
    dt = _core.FLOAT32 if dtype == np.float32 else _core.FLOAT64
    _core.gemm(
        dt, m, n, k, x.ctypes.data, k, 1, w.ctypes.data, 1, k, out.ctypes.data, n, 1, b.ctypes.data, 1, False, False
    )
    assert_linear_close(out, x, w, b)
