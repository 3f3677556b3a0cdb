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
from _reference import assert_linear_close, linear_tolerance, reference_linear
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
    # The panel order: the mr x kc A sliver in half of L1, the kc x nc B block in half of L2.
    assert blk["panel_kc"] * blk["mr"] * item <= caches["l1d"] // 2
    assert blk["panel_kc"] * blk["panel_nc"] * item <= caches["l2"] // 2
    assert blk["panel_mc"] % blk["mr"] == 0 and blk["panel_nc"] % blk["nr"] == 0
    assert linneuron.info()["gemm_blocking"][dtype] == blk


_CHILD = r"""
import json, os, sys
import numpy as np
from linneuron import _core
_core.set_num_threads(int(os.environ.get("LINNEURON_NUM_THREADS_FOR_TEST", "1")))
print(json.dumps({"caches": dict(_core.cpu_caches()), "blocking": _core.gemm_blocking()["float32"]}))
rng = np.random.default_rng(1)
for dtype in (np.float32, np.float64):
    for m, k, n in ((97, 301, 83), (200, 64, 130), (13, 700, 41), (301, 97, 260)):
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


@pytest.mark.parametrize(
    "env",
    [
        {"LINNEURON_BLOCKING": "12,24,32"},
        {"LINNEURON_PANEL_BLOCKING": "24,16,64"},
        {"LINNEURON_PANEL_BLOCKING": "36,40,32", "LINNEURON_NUM_THREADS_FOR_TEST": "2"},
        {"LINNEURON_CACHES": "16384,131072,0"},
        # Two threads over a 128 KiB L2 (1 MiB L3): float64 200x64->130 shares one B panel between barriers,
        # 97x301->83 packs a private panel per thread.
        {"LINNEURON_CACHES": "16384,131072,1048576", "LINNEURON_NUM_THREADS_FOR_TEST": "2"},
    ],
)
def test_overridden_blocking_still_computes_the_product(tmp_path, env):
    """Tiny blocks force many k, row and column blocks (and edges) through both drivers; results stay right."""
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
    elif "LINNEURON_PANEL_BLOCKING" in env:
        blk = report["blocking"]
        wanted = tuple(int(v) for v in env["LINNEURON_PANEL_BLOCKING"].split(","))
        assert (blk["panel_mc"], blk["panel_kc"]) == wanted[:2] and blk["panel_nc"] % blk["nr"] == 0
    else:
        assert report["caches"]["source"] == "LINNEURON_CACHES" and report["caches"]["l1d"] == 16384
        assert report["blocking"]["kc"] * report["blocking"]["nr"] * 4 <= 16384
    for dtype in ("float32", "float64"):
        for m, k, n in ((97, 301, 83), (200, 64, 130), (13, 700, 41), (301, 97, 260)):
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


def _strided(rng, shape, dtype, layout):
    """A (rows, cols) operand laid out as asked: row-major, column-major (a transposed view), or every other
    element of a wider array (neither stride 1)."""
    rows, cols = shape
    if layout == "row":
        return rng.standard_normal((rows, cols)).astype(dtype)
    if layout == "col":
        return rng.standard_normal((cols, rows)).astype(dtype).T
    return rng.standard_normal((rows, 2 * cols + 1)).astype(dtype)[:, : 2 * cols : 2]


def _gemm_any(a, b, c, bias=None, accumulate=False, step=False):
    s = a.itemsize
    dt = _core.FLOAT32 if a.dtype == np.float32 else _core.FLOAT64
    m, k = a.shape
    n = b.shape[1]
    _core.gemm(dt, m, n, k, a.ctypes.data, a.strides[0] // s, a.strides[1] // s, b.ctypes.data, b.strides[0] // s,
               b.strides[1] // s, c.ctypes.data, c.strides[0] // s, c.strides[1] // s,
               0 if bias is None else bias.ctypes.data, 1, accumulate, step)  # fmt: skip


# Short-k and few-column products take the row-strip order (the whole B panel fits in half of L2); row strides of
# C that are multiples of 4 KiB, tails in m and n below one register tile and one vector, k = 1 outer products, and
# a k across the longer k blocks of that order (partial last block).
@pytest.mark.parametrize(
    "shape",
    [(64, 1, 1024), (97, 1, 1030), (4096, 1, 256), (130, 3, 1024), (13, 20, 20), (700, 7, 45), (64, 64, 1024),
     (300, 1100, 40)],
)  # fmt: skip
@pytest.mark.parametrize("a_layout,b_layout", [("row", "col"), ("row", "row"), ("col", "row"), ("gap", "gap")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_strip_order_and_tails_match_reference(shape, a_layout, b_layout, dtype):
    m, k, n = shape
    rng = np.random.default_rng(m + 31 * k + 7 * n)
    a = _strided(rng, (m, k), dtype, a_layout)
    b = _strided(rng, (k, n), dtype, b_layout)
    bias = rng.standard_normal(n).astype(dtype)
    c = np.full((m, n), np.nan, dtype)
    _gemm_any(a, b, c, bias)
    assert_linear_close(c, a, b.T, bias)
    start = rng.standard_normal((m, n)).astype(dtype)
    c[...] = start
    _gemm_any(a, b, c, accumulate=True)  # C += A B: loads every valid element of C, partial vectors included
    expected = start.astype(np.float64) + reference_linear(a, b.T)
    tol = linear_tolerance(a, b.T, None, dtype) + 2 * np.finfo(dtype).eps * np.abs(expected)
    assert np.all(np.abs(c - expected) <= tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_partial_vectors_write_nothing_outside_the_output(dtype):
    """C is a window of a larger array: the masked stores of the last columns must leave its neighbours alone."""
    rng = np.random.default_rng(5)
    m, k, n = 37, 5, 21
    big = np.full((m + 2, n + 40), 7.0, dtype)
    c = big[1 : m + 1, 3 : n + 3]
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    _gemm_any(a, b, c)
    assert_linear_close(c, a, b.T)
    outside = np.ones(big.shape, bool)
    outside[1 : m + 1, 3 : n + 3] = False
    assert np.all(big[outside] == 7.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_strided_output_columns_match_reference(dtype):
    """C with a column stride (a transposed view): the epilogue's buffered path, next to the masked one."""
    rng = np.random.default_rng(6)
    m, k, n = 50, 9, 70
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    c = np.full((n, m), np.nan, dtype).T
    _gemm_any(a, b, c, step=False)
    assert_linear_close(c, a, b.T)


# A k within one long block whose B panel overflows half of L2 by its width alone runs over the whole k in column
# blocks of equal width (C written once), not in k blocks. In a child with a 512 KiB L2, float64 100 x 200 -> 300 is
# three column blocks of 120, 120 and 60 columns (B packed, A = Xᵀ in place, as the weight gradient reads them; and
# the forward's B = Wᵀ), on one and two threads, with bias, accumulate and step; the same bits on both thread counts.
_COLUMN_BLOCKS_CHILD = r"""
import sys
import numpy as np
from linneuron import _core
rng = np.random.default_rng(3)
out = {}
for dtype in (np.float32, np.float64):
    dt = _core.FLOAT32 if dtype == np.float32 else _core.FLOAT64
    for m, k, n in ((100, 200, 300), (37, 380, 1001)):
        a = rng.standard_normal((k, m)).astype(dtype).T  # column-major A
        b = rng.standard_normal((k, n)).astype(dtype)
        bias = rng.standard_normal(n).astype(dtype)
        start = rng.standard_normal((m, n)).astype(dtype)
        np.save(f"{sys.argv[1]}/a_{dtype.__name__}_{m}.npy", a)
        np.save(f"{sys.argv[1]}/b_{dtype.__name__}_{m}.npy", b)
        np.save(f"{sys.argv[1]}/bias_{dtype.__name__}_{m}.npy", bias)
        np.save(f"{sys.argv[1]}/start_{dtype.__name__}_{m}.npy", start)
        for threads in (1, 2):
            _core.set_num_threads(threads)
            for name, use_bias, accumulate, step in (("plain", False, False, False), ("bias_acc", True, True, False),
                                                     ("bias_step", True, False, True)):
                c = start.copy()
                _core.gemm(dt, m, n, k, a.ctypes.data, 1, m, b.ctypes.data, n, 1, c.ctypes.data, n, 1,
                           bias.ctypes.data if use_bias else 0, 1, accumulate, step)
                np.save(f"{sys.argv[1]}/c_{dtype.__name__}_{m}_{threads}_{name}.npy", c)
"""


def test_column_blocks_over_a_whole_short_k_match_reference(tmp_path):
    subprocess.run([sys.executable, "-c", _COLUMN_BLOCKS_CHILD, str(tmp_path)],
                   env={**os.environ, "LINNEURON_CACHES": "49152,524288,0"}, check=True, timeout=120)  # fmt: skip
    for dtype in ("float32", "float64"):
        for m in (100, 37):
            a, b, bias, start = (np.load(tmp_path / f"{part}_{dtype}_{m}.npy") for part in ("a", "b", "bias", "start"))
            for name in ("plain", "bias_acc", "bias_step"):
                one, two = (np.load(tmp_path / f"c_{dtype}_{m}_{t}_{name}.npy") for t in (1, 2))
                assert one.tobytes() == two.tobytes(), (dtype, m, name)
                if name == "plain":
                    assert_linear_close(one, a, b.T)
                elif name == "bias_acc":
                    expected = start.astype(np.float64) + reference_linear(a, b.T, bias)
                    tol = linear_tolerance(a, b.T, bias, a.dtype) + 2 * np.finfo(a.dtype).eps * np.abs(expected)
                    assert np.all(np.abs(one - expected) <= tol), (dtype, m)
                else:  # the step of z, away from z = 0 where rounding decides
                    z = reference_linear(a, b.T, bias)
                    clear = np.abs(z) > linear_tolerance(a, b.T, bias, a.dtype)
                    assert np.array_equal(one[clear], (z[clear] >= 0).astype(a.dtype)), (dtype, m)
