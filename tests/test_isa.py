"""Every micro-kernel family (portable, avx2, avx512) and every GEMM path (packed, direct, dot) against float64 NumPy.

The GEMM picks its path from the operands' layout and shape: packed A and B panels for large products, the
direct path (operands read in place, only edge slivers copied) for small or skinny ones, and the dot-product
kernel when both operands are contiguous along k with a short batch or few outputs. The shapes below cross the
register tiles (mr up to 12, nr up to 32), the cache blocks (mc 120/240, kc 256, nc 2048/4096) and 1 in every
dimension; the layouts cover row-major, column-major (transposed), strided and negative-stride views; the
epilogue runs with and without bias (also strided), step and accumulate. Each family is forced with
linneuron._core.set_active_isa, and in a subprocess with LINNEURON_ISA.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import linneuron
import numpy as np
import pytest
from _reference import linear_tolerance
from linneuron import _core

CODES = {np.dtype(np.float32): _core.FLOAT32, np.dtype(np.float64): _core.FLOAT64}
ISAS = list(_core.supported_isas())
ALL_FAMILIES = ["avx512", "avx2", "portable"]


@pytest.fixture(params=ALL_FAMILIES)
def isa(request):
    """Runs the test with one micro-kernel family active; restores the previous one afterwards."""
    name = request.param
    if name not in ISAS:
        pytest.skip(f"{name} kernels are not compiled in or this CPU lacks them (supported: {ISAS})")
    before = _core.active_isa()
    assert _core.set_active_isa(name)
    assert linneuron.info()["isa"] == name
    yield name
    assert _core.set_active_isa(before)


def _ptr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _es(a: np.ndarray) -> tuple[int, ...]:
    return tuple(s // a.itemsize for s in a.strides)


def _matrix(rng, rows, cols, dtype, layout):
    """A rows x cols view with the given memory layout (values standard normal)."""
    if layout == "row":
        return rng.standard_normal((rows, cols)).astype(dtype)
    if layout == "col":  # column-major: a transposed row-major array
        return np.ascontiguousarray(rng.standard_normal((cols, rows)).astype(dtype)).T
    if layout == "padded":  # row-major with a leading dimension larger than the row
        return rng.standard_normal((rows, cols + 5)).astype(dtype)[:, 2 : cols + 2]
    if layout == "strided":  # neither dimension contiguous
        return rng.standard_normal((2 * rows, 3 * cols)).astype(dtype)[::2, ::3]
    if layout == "reversed":  # negative row stride
        return rng.standard_normal((rows, cols)).astype(dtype)[::-1]
    raise ValueError(layout)


def _gemm(a, b, c, bias=None, accumulate=False, step=False):
    m, k = a.shape
    n = b.shape[1]
    bias_ptr, bias_stride = (0, 0) if bias is None else (_ptr(bias), _es(bias)[0])
    _core.gemm(CODES[a.dtype], m, n, k, _ptr(a), *_es(a), _ptr(b), *_es(b), _ptr(c), *_es(c),
               bias_ptr, bias_stride, accumulate, step)  # fmt: skip


def _check(rng, m, n, k, dtype, a_layout, b_layout, c_layout="row", bias="plain", accumulate=False, step=False):
    a = _matrix(rng, m, k, dtype, a_layout)
    b = _matrix(rng, k, n, dtype, b_layout)
    c = _matrix(rng, m, n, dtype, c_layout)
    c0 = c.astype(np.float64)
    bias_arr = None
    if bias == "plain":
        bias_arr = rng.standard_normal(n).astype(dtype)
    elif bias == "strided":
        bias_arr = rng.standard_normal(3 * n).astype(dtype)[::3]
    # A guard band around C catches writes outside the valid tile.
    _gemm(a, b, c, bias_arr, accumulate, step)

    z = a.astype(np.float64) @ b.astype(np.float64)
    if bias_arr is not None:
        z = z + bias_arr.astype(np.float64)
    if accumulate:
        z = z + c0
    # linear_tolerance takes (x, weight): weight is Bᵀ; the accumulated C adds its own magnitude.
    tol = linear_tolerance(a, b.T, bias_arr, np.dtype(dtype))
    if accumulate:
        tol = tol + 4 * np.finfo(dtype).eps * np.abs(c0)
    if step:
        expected = (z >= 0).astype(np.float64)
        assert np.all((c == 0) | (c == 1)), "step output must be exactly 0 or 1"
        decided = np.abs(z) > tol  # where rounding cannot flip the sign
        bad = decided & (c.astype(np.float64) != expected)
        assert not bad.any(), f"{bad.sum()} step outputs wrong, first at {np.argwhere(bad)[0]}"
    else:
        err = np.abs(c.astype(np.float64) - z)
        worst = np.unravel_index(np.argmax(err - tol), err.shape)
        assert np.all(err <= tol), f"max excess at {worst}: |{c[worst]} - {z[worst]}| > {tol[worst]}"


DTYPES = [np.float32, np.float64]

# (m, n, k): 1 in each dimension, tails of every register tile, crossings of the mc, kc and nc blocks, and tall
# products with tiny k and n (the skinny kernel, with a tail of rows past its last full vector).
SHAPES = [
    (1, 1, 1),
    (1, 37, 5),
    (7, 1, 19),
    (3, 5, 1),
    (12, 32, 16),
    (13, 33, 17),
    (25, 47, 300),
    (100, 70, 129),
    (250, 19, 260),
    (130, 150, 300),
    (5, 4100, 3),
    (2, 2100, 40),
    (70, 1, 2),
    (133, 8, 8),
    (97, 5, 1),
]

# (A, B) layouts. ("row", "col") is the forward product X Wᵀ: both operands contiguous along k (dot path for short
# batches); ("row", "row") is dX = dY W (direct B); ("col", "row") is dW = dYᵀ X (column-major A).
LAYOUTS = [("row", "col"), ("row", "row"), ("col", "row"), ("col", "col"), ("padded", "strided"),
           ("strided", "padded"), ("reversed", "col")]  # fmt: skip


def _shape_id(s):
    return "x".join(map(str, s))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_every_layout_matches_reference(rng, isa, shape, dtype):
    for a_layout, b_layout in LAYOUTS:
        _check(rng, *shape, dtype, a_layout, b_layout)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(
    "shape", [(1, 9, 33), (13, 33, 17), (250, 19, 260), (130, 150, 300), (64, 3, 2)], ids=_shape_id
)
@pytest.mark.parametrize(
    "epilogue",
    [
        dict(bias=None),
        dict(bias="strided"),
        dict(bias="plain", step=True),
        dict(bias=None, step=True),
        dict(bias="plain", accumulate=True),
        dict(bias="strided", accumulate=True, step=True),
    ],
    ids=["nobias", "strided-bias", "bias-step", "step", "bias-accumulate", "all"],
)
def test_epilogues(rng, isa, shape, dtype, epilogue):
    for a_layout, b_layout in [("row", "col"), ("row", "row"), ("col", "row"), ("strided", "strided")]:
        _check(rng, *shape, dtype, a_layout, b_layout, **epilogue)


# Edge tiles run the smallest register tile that covers them (a vector narrower, four rows shorter): every count of
# edge rows (1 to 12 covers the tiles' mr of 12, 8 and 6) against edge columns below, at and past one vector, and
# into the third vector of a three-vector tile (AVX-512 float64: 24 columns; 47 and 70 leave 23 and 22), read in
# place (row- and column-major A) and packed (the panel driver of the larger products).
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("edge_rows", range(1, 13))
def test_edge_tiles_match_reference(rng, isa, edge_rows, dtype):
    for n in (33, 40, 47, 57, 63, 70):
        for a_layout in ("row", "col"):
            _check(rng, 36 + edge_rows, n, 40, dtype, a_layout, "row", bias="plain")
    _check(rng, 204 + edge_rows, 203, 300, dtype, "row", "col", bias="plain", accumulate=True, step=edge_rows % 2 == 1)


# The dot kernel's edge rows and columns, each in one smaller tile: every count of rows (1 to 9) against column
# counts on both sides of its tiles, short and long k, batches shorter and taller than the outputs.
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("m", range(1, 10))
def test_dot_edge_tiles_match_reference(rng, isa, m, dtype):
    for n in (2, 3, 5, 8, 37):
        for k in (5, 33, 300):
            _check(rng, m, n, k, dtype, "row", "col", bias="plain", accumulate=k == 33)


# A B read in place that is larger than L2 with rows past 1 KiB (dW = dYᵀ X of a layer with few outputs over a large
# batch): the blocked driver prefetches each next k block while it computes one. Many k blocks, a partial last one,
# rows split and columns split between two threads.
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("m, n, k", [(11, 300, 4001), (40, 700, 2500)])
def test_streamed_b_matches_reference(rng, isa, m, n, k, dtype):
    _check(rng, m, n, k, dtype, "col", "row", bias="plain")
    _check(rng, m, n, k, dtype, "row", "row", accumulate=True)
    _assert_same_bits_on_1_and_2_threads(rng, m, n, k, "col", "row", dtype)


# Tall products with few outputs (n <= 16) and a row-major A: the tall kernel (transposed rows of A), with tails in
# m below one vector of rows, k not a multiple of the vector width or below it, 1 to 16 columns (one or two passes,
# element-wise and transposing epilogues), both B layouts it takes (Wᵀ and W) and one it does not (strided).
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(
    "shape",
    [(64, 1, 16), (77, 2, 16), (200, 3, 1), (1000, 4, 5), (131, 9, 17), (260, 16, 40), (70, 13, 300), (4099, 16, 3)],
    ids=_shape_id,
)
def test_tall_products_match_reference(rng, isa, shape, dtype):
    for b_layout in ["col", "row", "strided"]:
        for c_layout, epilogue in [("row", {}), ("padded", dict(bias="strided", accumulate=True)),
                                   ("col", dict(step=True)), ("reversed", dict(bias="plain", accumulate=True))]:  # fmt: skip
            _check(rng, *shape, dtype, "row", b_layout, c_layout=c_layout, **epilogue)
    linneuron.set_num_threads(2)  # restored by conftest: row ranges split between two threads
    _check(rng, *shape, dtype, "padded", "col", bias="plain")


# A C of few rows over a longer k (the weight gradient dW = dYᵀ X of a layer with few outputs, a row vector times a
# matrix): the long-k kernel, with k across its chunk boundaries, 1 to 16 rows (one or two row groups), columns
# within one vector, two, partial ones and several column groups.
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(
    "shape",
    [(1, 1, 512), (2, 16, 513), (16, 16, 1500), (5, 21, 2048), (13, 9, 1025), (16, 32, 700), (8, 349, 600),
     (1, 349, 4087), (3, 70, 20), (9, 1, 5001), (1, 40, 3000), (1, 1000, 700), (1, 257, 9000), (20, 30, 3000),
     (30, 24, 2000), (19, 24, 1500), (7, 20, 2216), (15, 24, 700)],
    ids=_shape_id,
)  # fmt: skip
def test_long_k_products_match_reference(rng, isa, shape, dtype):
    for c_layout, epilogue in [("row", {}), ("col", dict(bias="strided", accumulate=True)),
                               ("padded", dict(bias="plain", step=True))]:  # fmt: skip
        _check(rng, *shape, dtype, "col", "row", c_layout=c_layout, **epilogue)
    if shape[0] == 1:  # a row vector: its row stride does not matter
        _check(rng, *shape, dtype, "row", "row")
    m, n, k = shape  # a C of few columns: the same kernel on the transposed product
    _check(rng, n, m, k, dtype, "col", "row", bias="strided", accumulate=True)
    _check(rng, n, m, k, dtype, "col", "col", c_layout="col", step=True)


# A C of one to four rows from a row-major A (the backward dX = dY W of a short batch): the long-k kernel reading
# A's rows in place, in wide column groups (three rows run as four), or two-vector groups for a narrow C; k within
# one chunk (C written directly when there is nothing to add) and across several; two threads splitting the columns
# on whole groups give the same bits.
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(1, 300, 40), (2, 431, 279), (3, 700, 300), (4, 1000, 100), (3, 20, 600),
                                   (2, 7, 33), (4, 129, 1300), (3, 1000, 1100)], ids=_shape_id)  # fmt: skip
def test_few_row_products_match_reference(rng, isa, shape, dtype):
    for a_layout in ("row", "padded", "col"):
        for c_layout, epilogue in [("row", {}), ("padded", dict(bias="strided", accumulate=True)),
                                   ("col", dict(bias="plain", step=True))]:  # fmt: skip
            _check(rng, *shape, dtype, a_layout, "row", c_layout=c_layout, **epilogue)
    _assert_same_bits_on_1_and_2_threads(rng, *shape, "row", "row", dtype)


# Tall products of k <= 8 and n <= 8 outputs with a dense row-major A (the forward 65536 x 2 -> 1): the skinny
# kernel, whose AVX2 and AVX-512 families form A's columns from whole rows in registers, for every k, with the rows
# past the last full vector (and, on AVX2, the blocks whose loads would reach past A) done by gathers; one output
# (C a contiguous column) and three (C strided), every epilogue, against float64 NumPy.
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("k", range(1, 9))
def test_skinny_products_of_a_dense_a_match_reference(rng, isa, k, dtype):
    for m, n in [(64, 1), (71, 1), (1003, 1), (203, 3)]:
        c_layout = "row" if n == 1 else "col"
        if n == 1:  # (a C of three columns written row by row would take the short-k kernel)
            assert _plan(dtype, m, n, k, "row") == "skinny", (m, n, k)
        _check(rng, m, n, k, dtype, "row", "col", c_layout=c_layout)
        _check(rng, m, n, k, dtype, "row", "col", c_layout=c_layout, bias="strided", accumulate=True, step=True)
        _check(rng, m, n, k, dtype, "row", "col", c_layout=c_layout, bias="plain", step=True)


# Two to four outputs over a k past 8 with a row-major A (the backward dX = dY W of a layer with few inputs, the
# forward of a few outputs where the tall kernel and dot products do not pay): the skinny kernel's gathered columns
# of A past k = 16 and the short-k kernel's rows up to it, not tiles padded to a vector; B row-major (dX's W) and
# column-major (the forward's Wᵀ), C row-major and padded, every epilogue, rows past the last whole vector, and two
# threads (rows split) bit-identical to one.
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(7120, 3, 10), (1981, 4, 27), (203, 2, 20), (1001, 3, 61), (77, 4, 9)],
                         ids=_shape_id)  # fmt: skip
def test_few_output_products_over_a_longer_k_match_reference(rng, isa, shape, dtype):
    m, n, k = shape
    lanes = (64 if isa == "avx512" else 32) // np.dtype(dtype).itemsize
    for b_layout in ("row", "col"):
        if isa != "portable" and b_layout == "row" and n <= min(4, lanes // 2):  # (AVX2 float64: n <= 2)
            # (up to k = 16 the short-k kernel's rows take them)
            assert _plan(dtype, m, n, k, "row", "row") == ("short_k" if k <= 16 else "skinny"), shape
        _check(rng, m, n, k, dtype, "row", b_layout)
        _check(rng, m, n, k, dtype, "row", b_layout, c_layout="padded", bias="strided", accumulate=True)
        _check(rng, m, n, k, dtype, "row", b_layout, bias="plain", step=True)
    _assert_same_bits_on_1_and_2_threads(rng, m, n, k, "row", "row", dtype)


# The rows past the skinny kernel's last whole vector are the block's last vector of rows once more, stored only in
# its new lanes: each is the same chain of FMAs as a row inside a whole vector, so a product's first m rows carry
# the same bits whether m ends on a vector or not, and the rows stored already are not added to C a second time.
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_skinny_rows_past_the_last_vector_are_those_of_a_whole_vector(rng, isa, dtype):
    for m, n, k, b_layout in [(78, 2, 490, "row"), (71, 2, 30, "row"), (203, 2, 20, "row"), (69, 1, 5, "col")]:
        assert _plan(dtype, m, n, k, "row", b_layout) == "skinny", (m, n, k)
        a = _matrix(rng, m + 16, k, dtype, "row")
        b = _matrix(rng, k, n, dtype, b_layout)
        whole = np.full((m + 16, n), np.nan, dtype)
        _gemm(a, b, whole)
        part = np.full((m, n), np.nan, dtype)
        _gemm(a[:m], b, part)
        assert np.array_equal(part, whole[:m]), (m, n, k)
        c0 = _matrix(rng, m, n, dtype, "row")
        c = c0.copy()
        _gemm(a[:m], b, c, accumulate=True)
        assert np.array_equal(c, c0 + part), (m, n, k)


# A batch of one through the forward's Wᵀ runs as the column W x (dot products summed by transposes, the skinny
# kernel for a short k), writing C's row in place: every epilogue (the bias put in first), C contiguous, strided and
# reversed, k below, at and past a vector, many outputs split between two threads.
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(1, 941, 6), (1, 883, 150), (1, 5, 3), (1, 300, 1), (1, 1024, 64), (1, 40, 17),
                                   (1, 5000, 33)], ids=_shape_id)  # fmt: skip
def test_row_vector_products_match_reference(rng, isa, shape, dtype):
    for a_layout in ("row", "padded"):
        for c_layout, epilogue in [("row", {}), ("padded", dict(bias="strided", accumulate=True)),
                                   ("col", dict(bias="plain", step=True)), ("reversed", dict(step=True)),
                                   ("strided", dict(bias="plain", accumulate=True, step=True))]:  # fmt: skip
            _check(rng, *shape, dtype, a_layout, "col", c_layout=c_layout, **epilogue)
    _assert_same_bits_on_1_and_2_threads(rng, *shape, "row", "col", dtype)
    if isa != "portable":  # whose plan may prefer tiles (no short-k kernel)
        assert _plan(dtype, *shape, "row").startswith("transposed "), _plan(dtype, *shape, "row")


# A column of C over a column-major A (the weight gradient dW = dYᵀ X of a layer with one input) that register tiles
# would take runs as the row Cᵀ = Bᵀ Aᵀ, written into C's column in place: every epilogue (the bias put in first),
# C contiguous, strided and reversed, a k short (the short-k kernel) and long (A's rows streamed), two threads.
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(703, 1, 13826), (5000, 1, 64), (2100, 1, 9), (97, 1, 2000), (2, 1, 40)], ids=_shape_id)
def test_column_products_of_a_column_major_a_match_reference(rng, isa, shape, dtype):
    for c_layout, epilogue in [("row", {}), ("padded", dict(bias="strided", accumulate=True)),
                               ("col", dict(bias="plain", step=True)), ("reversed", dict(step=True)),
                               ("strided", dict(bias="plain", accumulate=True, step=True))]:  # fmt: skip
        _check(rng, *shape, dtype, "col", "row", c_layout=c_layout, **epilogue)
        _check(rng, *shape, dtype, "col", "col", c_layout=c_layout, **epilogue)
    _assert_same_bits_on_1_and_2_threads(rng, *shape, "col", "row", dtype)
    m, n, k = shape
    if isa != "portable" and (m == 5000 or (m == 703 and dtype == np.float64)):
        # Register tiles before (Zen 3, 703 x 13826 -> 1 float64: 0.32x MKL). Which row path reads A's columns
        # depends on the CPU: streamed as rows of Cᵀ where L2 is small, the long-k kernel on Cᵀ on a Xeon's 2 MiB.
        plan = _plan(dtype, m, n, k, "col", "row")
        assert plan in ("transposed stream_rows", "transposed long_k", "long_k_transposed"), plan


def test_few_row_products_take_the_long_k_path(isa):
    # (m, n, k): B's rows read in at most 8 column groups of the kernel (AVX2 float32: 48 columns for 3 or 4 rows).
    for shape in [(2, 431, 279), (3, 380, 700), (4, 300, 1000)]:
        plan = _plan(np.float32, *shape, "row", "row")
        assert plan == ("blocked" if isa == "portable" else "long_k"), (shape, plan)
    # Wider rows of B only while B stays in L2 (half of it): read in many narrow bands from L3 or memory, the register
    # tiles win (Zen 3, 4 x 100 -> 1000 float32: the long-k kernel 0.72x of the tiles, 3 x 300 -> 700 0.85x).
    half_l2_floats = _core.cpu_caches()["l2"] // 8
    for k, fits in [(half_l2_floats // 900, True), (2 * half_l2_floats // 900 + 16, False)]:
        plan = _plan(np.float32, 3, 900, max(k, 16), "row", "row")
        # (rows of 3.6 KB: B's rows stream, from 1 KiB on)
        assert plan == ("blocked" if isa == "portable" else "long_k" if fits else "stream_rows"), (k, fits, plan)
    if isa == "avx512":  # a C of up to 32 rows in float32 (two vectors' lanes), of few columns with tile edges
        assert _plan(np.float32, 20, 30, 3000, "col", "row") == "long_k"
        assert _plan(np.float32, 30, 20, 3000, "col", "row") == "long_k_transposed"
        # but not where its transposing epilogue outweighs the FMAs it saves (a short k, columns the tiles fill)
        assert _plan(np.float32, 9546, 24, 19, "col", "row") == "blocked"
        assert _plan(np.float32, 300, 16, 60, "col", "row") == "blocked"
        assert _plan(np.float32, 100, 3, 120, "col", "row") == "long_k_transposed"
        # A C of 3 to 10 rows over a B of twice L2 and more streams its rows from 256 bytes on; narrower rows stay
        # with the long-k kernel (its bands of B cost little where a row is a line or two).
        rows_2l2 = 2 * _core.cpu_caches()["l2"] // 256 + 16
        assert _plan(np.float32, 5, 64, rows_2l2, "col", "row") == "stream_rows"
        assert _plan(np.float32, 5, 32, 2 * rows_2l2, "col", "row") == "long_k"
        # float64 C's within one tile's width (three vectors): the tiles would copy their edges every k block
        assert _plan(np.float64, 7, 20, 2216, "col", "row") == "long_k"
        assert _plan(np.float64, 15, 24, 3000, "col", "row") == "long_k"


# k <= 8, C written row by row: k = 1 (outer products) to 8 and one past, every B layout (strided ones are copied
# first), n of one or two vectors (B kept in registers), of 3 to 32 vectors over 16 rows or more (B copied into a
# zero-padded buffer: n a whole number of vectors or one element past, up to 32 AVX-512 float32 vectors and one
# past), n below, at and past a vector with a tail, a B past half of L1 (the tile path), rows split between two
# threads (a range shorter than 16 rows for the second).
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(1, 550, 1), (97, 1030, 1), (300, 17, 2), (64, 40, 3), (129, 349, 4), (50, 33, 5),
                                   (300, 8, 5), (70, 2, 8), (129, 31, 7), (97, 9, 6), (33, 250, 8), (40, 1000, 8),
                                   (67, 16, 9), (20, 512, 8), (17, 513, 4), (40, 96, 6)],
                         ids=_shape_id)  # fmt: skip
def test_short_k_products_match_reference(rng, isa, shape, dtype):
    for a_layout, b_layout in [("row", "col"), ("row", "row"), ("col", "row"), ("strided", "strided")]:
        _check(rng, *shape, dtype, a_layout, b_layout)
        _check(rng, *shape, dtype, a_layout, b_layout, c_layout="padded", bias="strided", accumulate=True)
        _check(rng, *shape, dtype, a_layout, b_layout, bias="plain", step=True)
    linneuron.set_num_threads(2)  # restored by conftest
    _check(rng, *shape, dtype, "row", "col", bias="plain")


# k = 9..16 with rows of C of at most two vectors: the short-k kernel too (B's k rows kept in registers), for every
# k, one vector and two (with tails), every epilogue, A row- and column-major, B row-major (dX's W) and strided (the
# forward's Wᵀ, copied first), rows split between two threads; wider rows over such a k stay with the tiles.
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("k", range(9, 17))
def test_short_k_products_of_narrow_rows_up_to_k_16_match_reference(rng, isa, k, dtype):
    lanes = (64 if isa == "avx512" else 32) // np.dtype(dtype).itemsize
    for m, n in [(203, 2), (77, lanes - 1), (300, lanes + 3), (64, 2 * lanes)]:
        if isa != "portable":
            assert _plan(dtype, m, n, k, "row", "row") == "short_k", (m, n, k)
        for a_layout, b_layout in [("row", "row"), ("col", "row"), ("row", "col")]:
            _check(rng, m, n, k, dtype, a_layout, b_layout)
            _check(rng, m, n, k, dtype, a_layout, b_layout, c_layout="padded", bias="strided", accumulate=True)
            _check(rng, m, n, k, dtype, a_layout, b_layout, bias="plain", step=True)
    assert _plan(dtype, 300, 2 * lanes + 1, k, "row", "row") != "short_k"
    linneuron.set_num_threads(2)  # restored by conftest
    _check(rng, 1001, lanes + 3, k, dtype, "row", "row", bias="plain")


# A contiguous C from six times L2 on, of rows that are mostly whole cache lines (a multiple of 64 bytes, or 640
# bytes and more), is written with streaming stores to whole lines, each row cut at its first and last line boundary.
# With L2 declared as 64 KiB (LINNEURON_CACHES, read once per process, so in a child), C's of a few hundred KB
# stream: rows starting anywhere within a line (C starts 1 to 6 elements past an allocation, n = 301 rows of odd
# length), rows of three lines (n = 48 float32), bias and step, two threads, and accumulate (which reads C, so does
# not stream), in every family, against float64 NumPy.
_STREAM_CHILD = """
import numpy as np, linneuron
from linneuron import _core
codes = {np.dtype(np.float32): _core.FLOAT32, np.dtype(np.float64): _core.FLOAT64}
rng = np.random.default_rng(5)
for isa in _core.supported_isas():
    assert _core.set_active_isa(isa)
    for dtype in (np.float32, np.float64):
        for m, n, k, pad, threads in ((700, 301, 3, 0, 1), (513, 300, 1, 3, 2), (520, 300, 8, 5, 1),
                                         (2000, 48, 2, 1, 1)):
            for bias_on, step, acc in ((False, False, False), (True, False, False), (True, True, False),
                                       (True, False, True)):
                _core.set_num_threads(threads)
                a = rng.standard_normal((m, k)).astype(dtype)
                b = rng.standard_normal((k, n)).astype(dtype)
                store = rng.standard_normal(m * n + pad + 2).astype(dtype)
                c = store[1 + pad : 1 + pad + m * n].reshape(m, n)  # contiguous, starting 1 + pad elements in
                c0 = c.astype(np.float64).copy()
                guard = store.copy()
                bias = rng.standard_normal(n).astype(dtype) if bias_on else None
                plan = _core.gemm_plan(codes[c.dtype], m, n, k, k, 1, n, 1, c.strides[0] // c.itemsize, 1)
                assert plan == "short_k" or isa == "portable", plan
                _core.gemm(codes[c.dtype], m, n, k, a.ctypes.data, k, 1, b.ctypes.data, n, 1,
                           c.ctypes.data, c.strides[0] // c.itemsize, 1, 0 if bias is None else bias.ctypes.data, 1,
                           acc, step)
                z = a.astype(np.float64) @ b.astype(np.float64) + (0 if bias is None else bias) + (c0 if acc else 0)
                if step:
                    decided = np.abs(z) > 1e-3
                    assert np.array_equal(c[decided], (z[decided] >= 0).astype(dtype)), (isa, dtype, m, n, k)
                else:
                    tol = (1e-4 if dtype == np.float32 else 1e-12) * (1 + np.abs(z))
                    assert np.all(np.abs(c - z) <= tol), (isa, dtype, m, n, k, bias_on, acc)
                outside = np.ones(store.shape, bool)
                outside[1 + pad : 1 + pad + m * n] = False
                assert np.array_equal(store[outside], guard[outside]), "write outside C"
print("ok")
"""


def _run_with_small_l2(child: str, caches: str = "49152,65536,0") -> None:
    """Runs `child` in a Python that sees a small L2 (cache sizes are read once per process; the library takes an
    L2 under 128 KiB as 128 KiB); it prints "ok"."""
    proc = subprocess.run([sys.executable, "-c", child], env={**os.environ, "LINNEURON_CACHES": caches},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_streaming_stores_of_a_large_c_match_reference():
    _run_with_small_l2(_STREAM_CHILD)


# What the children below share: the dtype codes and the check of C against float64 NumPy ([C0 +] A B [+ bias],
# [then H] where rounding cannot flip the sign).
_CHILD_PRELUDE = """
import numpy as np
from linneuron import _core
codes = {np.dtype(np.float32): _core.FLOAT32, np.dtype(np.float64): _core.FLOAT64}


def check_against_float64(a, b, c, c0, bias, acc, step, what):
    z = a.astype(np.float64) @ b.astype(np.float64) + (0 if bias is None else bias) + (c0 if acc else 0)
    if step:
        decided = np.abs(z) > 1e-2
        assert np.array_equal(c[decided], (z[decided] >= 0).astype(c.dtype)), what
    else:
        tol = (2e-4 if c.dtype == np.float32 else 1e-11) * (np.abs(a) @ np.abs(b) + np.abs(c0) + 1)
        assert np.all(np.abs(c - z) <= tol), what
"""


# A C of a few rows over a B with long rows that does not stay in L2 (the weight gradient dYᵀ X of a layer with few
# outputs, dX = dY W of a short batch): B's rows streamed into C's rows held in L1 (up to 16 rows beside register
# tiles of 8 rows or fewer, 10 beside AVX-512 float32's 12; for 3 to 10 rows from rows of 256 bytes on where B is
# twice L2 and more: 6 x 3001 -> 80 float32, 4 x 2100 -> 37 float64). With L2 declared as 64 KiB (in a child, as
# above) modest shapes take that path (a row vector too): every family, A column- and row-major, C plain
# (written in place) and padded with accumulate, bias and step (through the workspace), k not a multiple of the
# kernel's 4 rows, a last partial vector, k in one part (under 128 rows: threads split the columns), in two parts
# (128 to 2048 rows) and in 4 parts of 2048 rows or fewer (threads take whole parts, the last one shorter), against
# float64 NumPy; and 2 threads bit-identical to 1. Past those row counts AVX-512 keeps its register tiles.
_STREAM_ROWS_CHILD = _CHILD_PRELUDE + """
rng = np.random.default_rng(9)
for isa in _core.supported_isas():
    assert _core.set_active_isa(isa)
    for dtype, shapes in ((np.float32, ((3, 203, 1100), (7, 150, 1030), (5, 64, 1031), (1, 150, 700),
                                        (5, 4500, 270), (10, 4500, 270), (9, 203, 1100), (6, 3001, 80))),
                          (np.float64, ((5, 333, 530), (2, 97, 1025), (6, 41, 515), (1, 97, 300), (7, 5001, 131),
                                        (4, 2100, 37), (9, 150, 700), (16, 203, 330), (12, 2500, 140)))):
        for m, k, n in shapes:
            for a_col, pad, bias_on, acc, step in ((True, 0, False, False, False), (False, 3, True, True, False),
                                                   (True, 1, True, False, True)):
                a = (np.asfortranarray if a_col else np.ascontiguousarray)(rng.standard_normal((m, k)).astype(dtype))
                b = rng.standard_normal((k, n)).astype(dtype)
                store = rng.standard_normal((m, n + pad)).astype(dtype)
                c = store[:, :n]
                c0 = c.astype(np.float64).copy()
                bias = rng.standard_normal(n).astype(dtype) if bias_on else None
                es = lambda x: [s // x.itemsize for s in x.strides]
                args = (codes[c.dtype], m, n, k, a.ctypes.data, *es(a), b.ctypes.data, *es(b), c.ctypes.data, *es(c))
                plan = _core.gemm_plan(codes[c.dtype], m, n, k, *es(a), *es(b), *es(c))
                if isa == "avx512":
                    assert plan == "stream_rows", (plan, dtype, m, k, n)
                results = []
                for threads in (1, 2):
                    _core.set_num_threads(threads)
                    c[...] = c0
                    _core.gemm(*args, 0 if bias is None else bias.ctypes.data, 1, acc, step)
                    results.append(c.copy())
                assert np.array_equal(results[0], results[1]), (isa, plan, "2 threads differ from 1")
                check_against_float64(a, b, c, c0, bias, acc, step, (isa, plan, dtype, m, k, n, acc))
    if isa == "avx512":
        for dtype, m in ((np.float32, 11), (np.float64, 17)):
            plan = _core.gemm_plan(codes[np.dtype(dtype)], m, 1100, 203, 203, 1, 1100, 1, 1100, 1)
            assert plan != "stream_rows", (dtype, m, plan)
print("ok")
"""


def test_stream_rows_products_match_reference():
    _run_with_small_l2(_STREAM_ROWS_CHILD)


# A C from six times L2 on, through the blocked driver, is written in row strips: over B's whole panel where it fits
# in L2, else in equal column blocks whose panel takes half of it. With L2 declared as 128 KiB (in a child, as above),
# C's of 0.5-3 MB take that path: B column-major (the forward's Wᵀ) and row-major (dX's W), n cut into blocks with a
# partial last sliver, C plain and padded with bias, accumulate and step, every family, against float64 NumPy; and
# 2 threads bit-identical to 1. (The Xeon's sliver order wrote such a C in bands of nr columns: 57225 x 318 -> 1010
# float64 ran 0.7x MKL.)
_LARGE_C_CHILD = _CHILD_PRELUDE + """
rng = np.random.default_rng(13)
for isa in _core.supported_isas():
    assert _core.set_active_isa(isa)
    for dtype in (np.float32, np.float64):
        for m, k, n in ((700, 300, 1000), (400, 150, 333), (250, 260, 701)):
            for b_col, pad, bias_on, acc, step in ((True, 0, False, False, False), (False, 5, True, True, False),
                                                   (True, 3, True, False, True)):
                a = rng.standard_normal((m, k)).astype(dtype)
                b = (np.asfortranarray if b_col else np.ascontiguousarray)(rng.standard_normal((k, n)).astype(dtype))
                store = rng.standard_normal((m, n + pad)).astype(dtype)
                c = store[:, :n]
                c0 = c.astype(np.float64).copy()
                guard = store[:, n:].copy()
                bias = rng.standard_normal(n).astype(dtype) if bias_on else None
                args = (a.ctypes.data, k, 1, b.ctypes.data, b.strides[0] // b.itemsize, b.strides[1] // b.itemsize)
                plan = _core.gemm_plan(codes[c.dtype], m, n, k, k, 1, *args[4:], n + pad, 1)
                assert plan == "blocked" or isa == "portable", (isa, plan)
                results = []
                for threads in (1, 2):
                    _core.set_num_threads(threads)
                    store[:, :n] = c0
                    _core.gemm(codes[c.dtype], m, n, k, *args, c.ctypes.data, n + pad, 1,
                               0 if bias is None else bias.ctypes.data, 1, acc, step)
                    results.append(store.copy())
                assert np.array_equal(results[0], results[1]), (isa, plan, "2 threads differ from 1")
                assert np.array_equal(store[:, n:], guard), "write outside C"
                check_against_float64(a, b, c, c0, bias, acc, step, (isa, plan, dtype, m, k, n, acc))
print("ok")
"""


def test_large_c_products_in_row_strips_match_reference():
    _run_with_small_l2(_LARGE_C_CHILD)  # no L3: column blocks of 4 slivers, whose panels fit in L2
    _run_with_small_l2(_LARGE_C_CHILD, "49152,131072,67108864")  # columns in one block but for B's panel


# The weight gradient dYᵀ X (A = dYᵀ column-major, B = X row-major), in a child that sees a small L2 (as above):
# every family, C plain and padded with accumulate, bias and step, against float64 NumPy; 2 and 3 threads
# bit-identical to 1; nothing written outside C. `shapes`: (dtype, m, k, n, the plan expected) in Python, the plan
# a name or a dict of names by family ("*" for the others); the portable family is held to the k split alone.
_COLUMN_MAJOR_A_CHILD = _CHILD_PRELUDE + """
rng = np.random.default_rng(17)
for isa in _core.supported_isas():
    assert _core.set_active_isa(isa)
    for dtype, m, k, n, plan_name in SHAPES:
        for pad, bias_on, acc, step in ((0, False, False, False), (3, True, True, False), (1, True, False, True)):
            a = np.asfortranarray(rng.standard_normal((m, k)).astype(dtype))  # dYᵀ
            b = rng.standard_normal((k, n)).astype(dtype)  # X
            store = rng.standard_normal((m, n + pad)).astype(dtype)
            c = store[:, :n]
            c0 = c.astype(np.float64).copy()
            guard = store[:, n:].copy()
            bias = rng.standard_normal(n).astype(dtype) if bias_on else None
            plan = _core.gemm_plan(codes[c.dtype], m, n, k, 1, m, n, 1, n + pad, 1)
            expected = plan_name.get(isa, plan_name["*"]) if isinstance(plan_name, dict) else plan_name
            if isa == "portable":  # its own plans, but for the k split, which it never takes transposed
                expected = "k_split" if expected.startswith("k_split") else plan
            assert plan == expected, (isa, plan, dtype, m, k, n)
            results = []
            for threads in (1, 2, 3):
                _core.set_num_threads(threads)
                store[:, :n] = c0
                _core.gemm(codes[c.dtype], m, n, k, a.ctypes.data, 1, m, b.ctypes.data, n, 1, c.ctypes.data, n + pad,
                           1, 0 if bias is None else bias.ctypes.data, 1, acc, step)
                results.append(store.copy())
            assert np.array_equal(results[0], results[1]), (isa, plan, "2 threads differ from 1")
            assert np.array_equal(results[0], results[2]), (isa, plan, "3 threads differ from 1")
            assert np.array_equal(store[:, n:], guard), "write outside C"
            check_against_float64(a, b, c, c0, bias, acc, step, (isa, plan, dtype, m, k, n, acc))
print("ok")
"""


def _column_major_a_child(shapes: str) -> str:
    return _COLUMN_MAJOR_A_CHILD.replace("rng = np.random", f"SHAPES = {shapes}\nrng = np.random")


# A small C over a long batch: k cut into parts fixed by the shape (2, 4 or 8, each a product of its own, the last one
# shorter), threads taking whole parts, the parts' sums added in order before the epilogue. With L2 declared as
# 128 KiB modest shapes take that path. "transposed": each part computes Cᵀ = Xᵀ dY into its slot, for a C of few
# columns by the stream-rows kernel (300 x 9000 -> 6), and in tiles where that pads less (AVX-512 float32: 47 x 36 as
# 36 x 47, no edge rows).
def test_weight_gradients_with_k_in_parts_match_reference():
    only_avx512 = '{"avx512": "k_split transposed", "*": "k_split"}'
    _run_with_small_l2(_column_major_a_child(f"""(
        (np.float32, 37, 17001, 45, "k_split"), (np.float32, 33, 33000, 30, "k_split"),  # 4 parts, 8 parts
        (np.float64, 30, 8300, 40, "k_split"), (np.float64, 41, 17003, 19, "k_split"),  # 2, 4
        (np.float64, 50, 9001, 21, "k_split"),  # 2
        (np.float32, 300, 9000, 6, "k_split transposed"), (np.float64, 200, 9000, 5, "k_split transposed"),
        (np.float32, 47, 20000, 36, {only_avx512}))"""))


# A column-major A that comes from memory (its columns 512 bytes apart and more) is packed column by column of A,
# each dealt out to the row slivers (a partial last one zero-padded): by the blocked driver where few B slivers or a
# short k leave the panel driver out, by the panel driver otherwise, and in each part of a k split. With L2 declared
# as 128 KiB and no L3, an A from 768 KB on counts as coming from memory (tiles of 12, 8 and 6 rows).
def test_column_major_a_packed_matches_reference():
    _run_with_small_l2(_column_major_a_child("""(
        (np.float32, 150, 1400, 50, "blocked"), (np.float32, 250, 800, 60, "blocked"),
        (np.float64, 70, 1500, 100, "blocked"), (np.float64, 330, 300, 420, "blocked"),
        (np.float32, 200, 1100, 500, "panel"))"""))
    # Two parts of 2500 rows, each A a slice of 1.28 MB of the 2.56 MB that comes from memory (L2 declared 256 KiB).
    _run_with_small_l2(_column_major_a_child('((np.float32, 128, 5000, 40, "k_split"),)'), "49152,262144,0")


# One output column of a row-major A (a matrix-vector product: dX = dY W of a layer with one input): the dot kernel's
# column path, W rows at a time with a partial last block, short and long k, C contiguous, strided or reversed.
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(
    "shape",
    [(1, 1, 9), (7, 1, 1), (15, 1, 9), (16, 1, 16), (17, 1, 37), (300, 1, 5), (5003, 1, 9), (203, 1, 1000)],
    ids=_shape_id,
)
def test_single_column_products_match_reference(rng, isa, shape, dtype):
    for c_layout, epilogue in [("row", {}), ("padded", dict(bias="plain", accumulate=True)),
                               ("reversed", dict(step=True)), ("strided", dict(bias="strided"))]:  # fmt: skip
        _check(rng, *shape, dtype, "row", "col", c_layout=c_layout, **epilogue)
    _check(rng, *shape, dtype, "padded", "col", bias="plain")


def _assert_same_bits_on_1_and_2_threads(rng, m, n, k, a_layout, b_layout, dtype=np.float32):
    a = _matrix(rng, m, k, dtype, a_layout)
    b = _matrix(rng, k, n, dtype, b_layout)
    outs = []
    for threads in (1, 2):
        linneuron.set_num_threads(threads)  # restored by conftest
        c = np.full((m, n), np.nan, dtype)
        _gemm(a, b, c)
        outs.append(c)
    assert np.array_equal(outs[0], outs[1])


def test_single_column_results_do_not_depend_on_the_thread_count(rng, isa):
    # Each row's lanes are added in one order wherever the row falls in a block of W rows.
    _assert_same_bits_on_1_and_2_threads(rng, 50003, 1, 37, "row", "col")


def test_long_k_results_do_not_depend_on_the_thread_count(rng, isa):
    _assert_same_bits_on_1_and_2_threads(rng, 16, 16, 5000, "col", "row")
    # One k chunk for two threads: C's columns split on whole column groups (two vectors for more than four rows,
    # the wide kernel's for fewer), the last group partial; and the same on Cᵀ.
    for m, n, k, dtype in [(29, 205, 447, np.float32), (14, 100, 300, np.float64), (3, 700, 200, np.float32),
                           (300, 20, 400, np.float32), (200, 6, 400, np.float64)]:  # fmt: skip
        _assert_same_bits_on_1_and_2_threads(rng, m, n, k, "col", "row", dtype)
        linneuron.set_num_threads(2)
        _check(rng, m, n, k, dtype, "col", "row", bias="plain", accumulate=True, c_layout="padded")


# The blocked driver (A read in place, B packed) on two threads: rows split over a panel within half of L2 (a
# private copy per thread, no barrier) and columns split (each thread its own slivers); test_blocking.py runs the
# shared panel of a small L2. 300 x 700 -> 360 has k blocks shortened so that the panel fits in half of a 2 MiB L2.
# Every tile is the one a single thread computes, so the bits agree.
@pytest.mark.parametrize("m, n, k", [(68, 38, 484), (200, 130, 300), (8, 334, 268), (300, 360, 700)])
def test_blocked_packing_modes_do_not_depend_on_the_thread_count(rng, isa, m, n, k):
    _assert_same_bits_on_1_and_2_threads(rng, m, n, k, "row", "col", np.float64)
    linneuron.set_num_threads(2)
    _check(rng, m, n, k, np.float64, "row", "col", bias="plain", accumulate=True)


# Columns split over two threads, each packing its own slivers of one shared B panel, with a short last k block
# (1000 = 5 x 192 + 40 with AVX-512): a thread that reached that block first once packed its slivers at the block's
# shorter spacing, over slivers of the other thread still in use a block behind (wrong sums, from timing alone:
# hence the repeats).
def test_blocked_split_columns_with_a_short_last_k_block(rng, isa):
    if isa == "portable":
        pytest.skip("the SIMD families' plan")
    mr = _core.gemm_blocking()["float32"]["mr"]  # one row strip, A read in place
    # B row-major (dX's W), but strided where the family's tiles have at most 8 rows: a row strip of those streams a
    # row-major B of 16 MB (stream_rows) instead.
    b_layout = "row" if mr >= 12 else "strided"
    assert _plan(np.float32, mr, 4096, 1000, "row", b_layout) == "blocked"
    for _ in range(40):
        _assert_same_bits_on_1_and_2_threads(rng, mr, 4096, 1000, "row", b_layout)


# Columns split over two threads, each packing its own slivers without a barrier, over a B wider than one column block
# (nc): the last block has fewer slivers, so sliver indices pass to the other thread. Packed in one shared place, a
# thread packing that block overwrote slivers the other still read (wrong sums, from timing alone: hence the repeats);
# each thread's slivers now have their own region.
def test_blocked_split_columns_over_a_narrower_last_column_block(rng, isa):
    if isa == "portable":
        pytest.skip("the SIMD families' plan")
    # A read in place, B packed; 8500 and 10000 columns are wider than one block of 8192 (the most nc can be); more
    # than 16 rows, which would stream B's rows.
    for dtype, m, n, k in [(np.float32, 17, 8500, 300), (np.float64, 17, 8500, 300), (np.float64, 50, 10000, 100)]:
        assert _core.gemm_blocking()[np.dtype(dtype).name]["nc"] < n
        assert _plan(dtype, m, n, k, "row", "row") == "blocked"
        a, b = _matrix(rng, m, k, dtype, "row"), _matrix(rng, k, n, dtype, "row")
        c = np.zeros((m, n), dtype)  # one C, written again and again (a fresh one's page faults change the timing)
        linneuron.set_num_threads(1)  # restored by conftest
        _gemm(a, b, c)
        one_thread = c.copy()
        linneuron.set_num_threads(2)
        for _ in range(40):
            c[...] = 0
            _gemm(a, b, c)
            assert np.array_equal(c, one_thread), (dtype, m, n, k)


def _plan(dtype, m, n, k, a_layout, b_layout="col"):
    a = _matrix(np.random.default_rng(0), m, k, dtype, a_layout)
    b = _matrix(np.random.default_rng(0), k, n, dtype, b_layout)
    return _core.gemm_plan(CODES[np.dtype(dtype)], m, n, k, *_es(a), *_es(b), n, 1)


# A batch of a few rows through the forward's Wᵀ (B's columns contiguous) is computed transposed, Cᵀ = W Xᵀ, with W
# read in place and the batch packed (or read in place when X is column-major), then written back by the transposing
# epilogue: every epilogue, X row- and column-major, C row-major and padded (the family's transposes) or column-major
# and reversed (the element-wise one), tails of the vector width in m and n, C split between two threads by columns
# (a short batch) and by rows (70 x 66), bit-identical to one thread.
TRANSPOSED_SHAPES = [(35, 173, 798), (31, 595, 397), (22, 202, 573), (13, 441, 743), (16, 500, 300), (45, 282, 485),
                     (12, 363, 90), (20, 972, 53), (70, 66, 900)]  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", TRANSPOSED_SHAPES, ids=_shape_id)
def test_transposed_products_match_reference(rng, isa, shape, dtype):
    for a_layout in ("row", "col"):
        for c_layout, epilogue in [("row", {}), ("padded", dict(bias="strided", accumulate=True)),
                                   ("row", dict(bias="plain", step=True)), ("col", dict(bias="plain")),
                                   ("reversed", dict(bias="strided", accumulate=True, step=True))]:  # fmt: skip
            _check(rng, *shape, dtype, a_layout, "col", c_layout=c_layout, **epilogue)
    _assert_same_bits_on_1_and_2_threads(rng, *shape, "row", "col", dtype)
    _assert_same_bits_on_1_and_2_threads(rng, *shape, "col", "col", dtype)
    linneuron.set_num_threads(2)  # restored by conftest
    _check(rng, *shape, dtype, "row", "col", bias="plain", accumulate=True)


def test_transposed_path_is_taken(isa):
    """The shapes above exercise the transposed path: in each SIMD family most of them take it (the portable
    family never does)."""
    plans = [_plan(dtype, *shape, a_layout) for shape in TRANSPOSED_SHAPES for dtype in DTYPES
             for a_layout in ("row", "col")]  # fmt: skip
    transposed = sum(p.startswith("transposed ") for p in plans)
    if isa == "portable":
        assert transposed == 0, plans
    else:
        assert transposed >= len(plans) // 2, plans
        assert _plan(np.float64, 70, 66, 900, "col").startswith("transposed"), "the row-split epilogue is untested"


def test_gemm_plan_names_the_paths(isa):
    assert _core.gemm_plan(_core.FLOAT32, 0, 5, 5, 5, 1, 5, 1, 5, 1) == "empty"
    assert _core.gemm_plan(_core.FLOAT32, 5, 5, 0, 0, 1, 5, 1, 5, 1) == "epilogue"
    assert _plan(np.float32, 65536, 1, 2, "row") == "skinny"
    assert _plan(np.float32, 9000, 8, 2, "row", "row") == ("skinny" if isa == "portable" else "short_k")
    assert _plan(np.float32, 2048, 2048, 2048, "row") == "panel"
    with pytest.raises(ValueError, match="negative size"):
        _core.gemm_plan(_core.FLOAT32, -1, 5, 5, 5, 1, 5, 1, 5, 1)


@pytest.mark.parametrize("c_layout", ["col", "strided", "padded", "reversed"])
@pytest.mark.parametrize("shape", [(13, 33, 17), (1, 40, 20), (130, 150, 300), (40, 3, 70)], ids=_shape_id)
def test_output_layouts(rng, isa, shape, c_layout):
    for dtype in DTYPES:
        for a_layout, b_layout in [("row", "col"), ("row", "row"), ("col", "row")]:
            _check(rng, *shape, dtype, a_layout, b_layout, c_layout=c_layout, accumulate=True)


@pytest.mark.parametrize(
    "shape", [(300, 200, 300), (16, 3000, 300), (90, 120, 400), (250000, 8, 8), (1000, 5, 40), (3, 3, 3)], ids=_shape_id
)
def test_two_threads_match_reference(rng, isa, shape):
    linneuron.set_num_threads(2)  # restored by conftest
    for dtype in DTYPES:
        for a_layout, b_layout in [("row", "col"), ("row", "row"), ("col", "row")]:
            _check(rng, *shape, dtype, a_layout, b_layout, step=shape[0] == 8)


@pytest.mark.parametrize("m, n", [(600_000, 3), (5000, 200)])
def test_bias_grad_is_identical_for_one_and_two_threads(rng, m, n):
    """Large enough for two threads (both ways of splitting the work): the sums must match bit for bit."""
    dy = rng.standard_normal((m, n)).astype(np.float32)
    results = []
    for threads in (1, 2):
        linneuron.set_num_threads(threads)  # restored by conftest
        db = np.empty(n, dtype=np.float32)
        _core.bias_grad(_core.FLOAT32, m, n, _ptr(dy), n, 1, _ptr(db), 1, False)
        results.append(db)
    np.testing.assert_array_equal(results[0], results[1])
    expected = dy.astype(np.float64).sum(axis=0)
    np.testing.assert_allclose(results[0], expected, rtol=0, atol=1e-3 * np.sqrt(m))


@pytest.mark.parametrize("threads", [1, 2])
def test_large_step_and_surrogates_match_reference(rng, threads):
    """Sizes that take the streaming-store path of the step and split across threads, at an odd offset."""
    linneuron.set_num_threads(threads)
    n = (9 << 20) // 4 + 3  # just over the 8 MiB streaming threshold
    z = (rng.standard_normal(n + 1) * 2).astype(np.float32)[1:]  # not 16-byte aligned
    z[:4] = [-0.0, 0.0, np.nan, -1.0]
    out = linneuron.numpy.step(z)
    expected = np.where(z >= 0, 1.0, 0.0).astype(np.float32)
    expected[np.isnan(z)] = np.nan
    np.testing.assert_array_equal(out, expected)
    gy = rng.standard_normal(n).astype(np.float32)
    gz = np.empty_like(gy)
    for code, alpha, formula in [
        (1, 1.0, lambda z, a: (np.abs(a * z) <= 1).astype(np.float64)),
        (3, 2.0, lambda z, a: (a / 2) / (1 + (np.pi / 2 * a * z) ** 2)),
    ]:
        _core.step_backward(_core.FLOAT32, 1, n, _ptr(z), 0, 1, _ptr(gy), 0, 1, _ptr(gz), 0, 1, code, alpha)
        want = gy.astype(np.float64) * formula(z.astype(np.float64), alpha)
        finite = ~np.isnan(z)
        np.testing.assert_allclose(gz[finite], want[finite], rtol=8 * np.finfo(np.float32).eps, atol=1e-30)
        assert np.isnan(gz[2])


def test_guard_band_is_untouched(rng, isa):
    """C is a window of a larger buffer: nothing outside the window may change, for any path."""
    for m, n, k in [(13, 33, 17), (1, 5, 40), (130, 70, 300)]:
        for a_layout, b_layout in [("row", "col"), ("row", "row"), ("col", "row")]:
            a = _matrix(rng, m, k, np.float32, a_layout)
            b = _matrix(rng, k, n, np.float32, b_layout)
            big = np.full((m + 4, n + 40), 7.0, dtype=np.float32)
            c = big[2 : m + 2, 3 : n + 3]
            _gemm(a, b, c, rng.standard_normal(n).astype(np.float32), False, True)
            outside = big.copy()
            outside[2 : m + 2, 3 : n + 3] = 7.0
            assert np.all(outside == 7.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_step_epilogue_special_values(isa, dtype):
    # z = x * 0 + bias with x = 1: the bias values pass through exactly, so the step sees NaN, +-inf, zeros and
    # tiny values. (A GEMM sum starts from +0.0, so z = -0.0 cannot arise here; see test_core for step(-0.0).)
    values = np.tile(np.array([0.0, np.nan, np.inf, -np.inf, -1e-30, 1e-30, -2.0, 3.0], dtype=dtype), 5)
    expected = np.tile(np.array([1, np.nan, 1, 0, 0, 1, 0, 1], dtype=dtype), 5)
    n = values.size
    w = np.zeros((n, 1), dtype=dtype)
    # (m, B's strides): B = Wᵀ contiguous along k takes the dot path for m = 1; B with unit column stride takes
    # the register-tile kernel, reading B in place (m = 20) or packed (m = 300).
    for m, b_rs, b_cs in [(1, 1, 1), (20, n, 1), (300, n, 1)]:
        x = np.ones((m, 1), dtype=dtype)
        out = np.empty((m, n), dtype=dtype)
        _core.gemm(CODES[np.dtype(dtype)], m, n, 1, _ptr(x), 1, 1, _ptr(w), b_rs, b_cs, _ptr(out), n, 1,
                   _ptr(values), 1, False, True)  # fmt: skip
        np.testing.assert_array_equal(out, np.broadcast_to(expected, out.shape))


def test_families_agree_with_each_other(rng):
    """The same product through every supported family: each within tolerance of the float64 reference."""
    a = rng.standard_normal((77, 300)).astype(np.float32)
    w = rng.standard_normal((45, 300)).astype(np.float32)
    before = _core.active_isa()
    results = {}
    try:
        for name in ISAS:
            assert _core.set_active_isa(name)
            results[name] = linneuron.numpy.linear(a, w)
    finally:
        _core.set_active_isa(before)
    tol = linear_tolerance(a, w, None, np.dtype(np.float32))
    ref = a.astype(np.float64) @ w.astype(np.float64).T
    for name, out in results.items():
        assert np.all(np.abs(out - ref) <= tol), name


def test_set_active_isa_rejects_unknown_names():
    before = _core.active_isa()
    assert _core.set_active_isa("no-such-isa") is False
    assert _core.active_isa() == before


def test_best_family_is_the_default():
    out = subprocess.run(
        [sys.executable, "-c", "import json, linneuron; print(json.dumps(linneuron.info()))"],
        env={k: v for k, v in os.environ.items() if k != "LINNEURON_ISA"}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    info = json.loads(out.stdout)
    assert info["isa"] == info["supported_isas"][0]


@pytest.mark.parametrize("name", ALL_FAMILIES + ["bogus"])
def test_environment_variable_forces_a_family(name):
    code = (
        "import json, numpy as np, linneuron;"
        "x = np.arange(12.0).reshape(3, 4); w = np.ones((2, 4));"
        "print(json.dumps([linneuron.info()['isa'], linneuron.numpy.linear(x, w).tolist()]))"
    )
    env = dict(os.environ, LINNEURON_ISA=name)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    isa, result = json.loads(out.stdout)
    assert isa == (name if name in ISAS else ISAS[0])  # an unusable request falls back to the best family
    assert result == [[6.0, 6.0], [22.0, 22.0], [38.0, 38.0]]


def test_machine_probes_report_positive_rates():
    for code in (_core.FLOAT32, _core.FLOAT64):
        gflops = _core.fma_peak_gflops(code, 1, 0.01)
        assert np.isfinite(gflops) and gflops > 0.1
    for probe in (_core.memory_bandwidth_gbs, _core.memory_read_bandwidth_gbs):
        gbs = probe(1, 1 << 20, 1)
        assert np.isfinite(gbs) and gbs > 0.01
        with pytest.raises(ValueError, match="arguments"):
            probe(1, 0, 1)
    with pytest.raises(ValueError, match="threads"):
        _core.fma_peak_gflops(_core.FLOAT32, 0, 0.01)


_GUARD_SCRIPT = r"""
import ctypes, mmap, sys
import numpy as np
from linneuron import _core

PAGE = mmap.PAGESIZE
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
keep = []

def guarded(rows, cols, dtype, at_end, seed):
    # A C-contiguous rows x cols array flush against an inaccessible page (after it, or before it).
    nbytes = rows * cols * np.dtype(dtype).itemsize
    data_pages = (nbytes + PAGE - 1) // PAGE
    buf = mmap.mmap(-1, (data_pages + 2) * PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    assert libc.mprotect(base, PAGE, 0) == 0
    assert libc.mprotect(base + (data_pages + 1) * PAGE, PAGE, 0) == 0
    offset = (data_pages + 1) * PAGE - nbytes if at_end else PAGE
    arr = np.frombuffer(buf, dtype=dtype, count=rows * cols, offset=offset).reshape(rows, cols)
    arr[...] = np.random.default_rng(seed).standard_normal((rows, cols))
    keep.append(buf)
    return arr

def es(a):
    return tuple(s // a.itemsize for s in a.strides)

def ptr(a):
    return a.__array_interface__["data"][0]

_core.set_active_isa(sys.argv[1])
for dtype, code in [(np.float32, _core.FLOAT32), (np.float64, _core.FLOAT64)]:
    for m, n, k in [(1, 37, 5), (13, 33, 17), (7, 70, 300), (100, 5, 2), (250, 40, 3), (130, 150, 300), (3, 1, 1),
                    (77, 9, 20), (70, 16, 33), (5, 21, 1100), (16, 16, 600), (35, 173, 798), (70, 66, 900),
                    (131, 1, 3), (67, 1, 7), (200, 3, 5), (64, 1, 8), (97, 1, 1), (72, 2, 6)]:
        for at_end in (True, False):
            x = guarded(m, k, dtype, at_end, 1)
            w = guarded(n, k, dtype, at_end, 2)
            w_t = guarded(k, n, dtype, at_end, 3)
            b = guarded(1, n, dtype, at_end, 4)[0]
            for a, bmat in [(x, w.T), (x, w_t), (guarded(k, m, dtype, at_end, 5).T, w_t)]:
                for c in [guarded(m, n, dtype, at_end, 6), guarded(n, m, dtype, at_end, 7).T]:
                    _core.gemm(code, m, n, k, ptr(a), *es(a), ptr(bmat), *es(bmat), ptr(c), *es(c),
                               ptr(b), 1, True, True)
print("ok")
"""


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_no_reads_or_writes_outside_the_operands(name):
    """Every operand ends (or starts) right at an inaccessible page: any access outside it crashes the child."""
    if name not in ISAS:
        pytest.skip(f"{name} is not supported here")
    out = subprocess.run([sys.executable, "-c", _GUARD_SCRIPT, name], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", (out.returncode, out.stderr[-2000:])


def test_concurrent_python_threads_get_correct_results(rng):
    """The bindings release the GIL: several Python threads run GEMMs of every path at once (per-thread workspace)."""
    import threading

    shapes = [(300, 200, 300), (8, 700, 64), (5000, 3, 2), (40, 60, 70)]
    operands = [(rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((n, k)).astype(np.float32))
                for m, n, k in shapes]  # fmt: skip
    expected = [x.astype(np.float64) @ w.astype(np.float64).T for x, w in operands]
    errors = []

    def worker(index):
        x, w = operands[index]
        tol = linear_tolerance(x, w, None, np.dtype(np.float32))
        for _ in range(20):
            out = linneuron.numpy.linear(x, w)
            if not np.all(np.abs(out - expected[index]) <= tol):
                errors.append(shapes[index])
                return

    linneuron.set_num_threads(2)
    threads = [threading.Thread(target=worker, args=(i % len(shapes),)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


# Short-k products whose whole B panel fits in half of L2 run in row strips (m, n, k): K = 1 outer products, row
# strides of C at multiples of 4 KiB, n tails below one vector, on one and two threads.
@pytest.mark.parametrize(
    "shape", [(64, 1024, 1), (97, 1030, 1), (130, 1024, 3), (700, 45, 7), (64, 1024, 64), (2000, 20, 20)], ids=_shape_id
)
@pytest.mark.parametrize("threads", [1, 2])
def test_row_strip_order_matches_reference(rng, isa, shape, threads):
    linneuron.set_num_threads(threads)  # restored by conftest
    for dtype in DTYPES:
        for a_layout, b_layout in [("row", "col"), ("row", "row"), ("col", "row"), ("strided", "padded")]:
            _check(rng, *shape, dtype, a_layout, b_layout)
            _check(rng, *shape, dtype, a_layout, b_layout, bias="strided", accumulate=True, step=True)
