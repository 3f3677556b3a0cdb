"""The CPU core through the NumPy API and the raw _core bindings, against float64 NumPy references."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import linneuron
import numpy as np
import pytest
from _reference import assert_linear_close, reference_linear
from linneuron import _core
from linneuron.numpy import linear, neuron, step

DTYPES = [np.float32, np.float64]

# (M, N, K): ones, primes and sizes that are not multiples of any register tile or cache block.
SHAPES = [
    (1, 1, 1),
    (1, 7, 3),
    (5, 1, 9),
    (3, 4, 1),
    (2, 3, 2),
    (17, 33, 65),
    (64, 64, 64),
    (1, 513, 1025),
    (130, 257, 300),
    (301, 5, 2000),
    (257, 129, 17),
]


def _operands(rng, m, n, k, dtype, bias=True):
    x = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((n, k)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype) if bias else None
    return x, w, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear_matches_reference(rng, shape, dtype):
    x, w, b = _operands(rng, *shape, dtype)
    out = linear(x, w, b)
    assert out.dtype == dtype
    assert_linear_close(out, x, w, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_without_bias(rng, dtype):
    x, w, _ = _operands(rng, 33, 20, 47, dtype, bias=False)
    assert_linear_close(linear(x, w), x, w)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tutorial_example_is_exact(dtype):
    # The tutorial's tensor form: z = X w with X = [[1,0,0],[1,0,1],[1,1,0]], w = [-0.1, 0.2, 0.2].
    x = np.array([[1, 0, 0], [1, 0, 1], [1, 1, 0]], dtype=dtype)
    w = np.array([[-0.1, 0.2, 0.2]], dtype=dtype)
    out = linear(x, w)
    np.testing.assert_array_equal(out[:, 0], np.array([-0.1, 0.1, 0.1], dtype=dtype))
    np.testing.assert_array_equal(neuron(x, w)[:, 0], np.array([0.0, 1.0, 1.0], dtype=dtype))


def test_one_dimensional_input_gives_one_dimensional_output(rng):
    x, w, b = _operands(rng, 1, 6, 4, np.float64)
    out = linear(x[0], w, b)
    assert out.shape == (6,)
    assert_linear_close(out, x[0], w, b)


@pytest.mark.parametrize("lead", [(2, 3), (4, 1, 5), (1,), (2, 0, 3)])
def test_leading_batch_dims(rng, lead):
    x = rng.standard_normal((*lead, 7))
    w = rng.standard_normal((5, 7))
    b = rng.standard_normal(5)
    out = linear(x, w, b)
    assert out.shape == (*lead, 5)
    if out.size:
        assert_linear_close(out, x, w, b)


@pytest.mark.parametrize("op", [linear, neuron])
def test_empty_batch_and_empty_features(rng, op):
    w = rng.standard_normal((4, 3))
    assert op(np.empty((0, 3)), w).shape == (0, 4)
    # K = 0: the weighted sum is empty, so the result is the bias alone (then stepped for the neuron).
    b = np.array([-1.0, 0.0, 2.0, -0.0])
    out = op(np.empty((2, 0)), np.empty((4, 0)), b)
    expected = np.broadcast_to(b, (2, 4))
    np.testing.assert_array_equal(out, expected if op is linear else np.array([[0.0, 1, 1, 1]] * 2))
    assert op(np.empty((3, 5)), np.empty((0, 5))).shape == (3, 0)


def _layouts(rng, m, n, k, dtype):
    """(name, x, w, b) for views whose strides the kernels must take without copying."""
    x, w, b = _operands(rng, m, n, k, dtype)
    big_x = rng.standard_normal((2 * m, 3 * k)).astype(dtype)
    big_w = rng.standard_normal((n, 2 * k)).astype(dtype)
    yield "contiguous", x, w, b
    yield "x transposed", np.ascontiguousarray(x.T).T, w, b
    yield "w transposed", x, np.ascontiguousarray(w.T).T, b
    yield "both transposed", np.asfortranarray(x), np.asfortranarray(w), b
    yield "x sliced", big_x[::2, 1::3], w, b
    yield "w sliced", x, big_w[:, ::2], b
    yield "negative strides", x[::-1, ::-1], w[::-1], b[::-1]
    yield "bias strided", x, w, np.repeat(b, 2)[::2]
    yield "x stride 0 rows", np.broadcast_to(x[0], (m, k)), w, b
    yield "w stride 0", x, np.broadcast_to(w[0], (n, k)), b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(9, 11, 13), (70, 40, 300)], ids=lambda s: "x".join(map(str, s)))
def test_strided_operands(rng, shape, dtype):
    for name, x, w, b in _layouts(rng, *shape, dtype):
        out = linear(x, w, b)
        try:
            assert_linear_close(out, x, w, b)
        except AssertionError as err:
            raise AssertionError(f"layout {name!r}: {err}") from None


def test_leading_dims_that_do_not_collapse(rng):
    base = rng.standard_normal((4, 6, 5))
    x = base.transpose(1, 0, 2)  # (6, 4, 5): rows no longer equally spaced
    w = rng.standard_normal((3, 5))
    assert_linear_close(linear(x, w), x, w)


def test_broadcast_input_is_not_copied(rng):
    # 20000 x 1000 float64 would be 160 MB if copied; the stride-0 view costs one row.
    row = rng.standard_normal(1000)
    x = np.broadcast_to(row, (20000, 1000))
    w = rng.standard_normal((2, 1000))
    tracemalloc.start()
    try:
        out = linear(x, w)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * out.nbytes + 1_000_000
    np.testing.assert_allclose(out, np.broadcast_to(w @ row, (20000, 2)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_step_special_values(dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    z = np.array([-np.inf, -1.0, -tiny, -0.0, 0.0, tiny, 1.0, np.inf, np.nan], dtype=dtype)
    out = step(z)
    np.testing.assert_array_equal(out[:-1], np.array([0, 0, 0, 1, 1, 1, 1, 1], dtype=dtype))
    assert np.isnan(out[-1])
    assert out.dtype == dtype


def test_step_matches_heaviside_on_any_layout(rng):
    base = rng.standard_normal((6, 7, 8))
    base[base > 1.5] = 0.0
    for z in (base, base[:, ::2], base.transpose(2, 0, 1), base[::-1, :, ::3], base[0, 0], np.float64(-2.0)):
        out = step(z)
        np.testing.assert_array_equal(out, np.heaviside(z, 1.0))
        assert out.shape == np.shape(z)


def test_step_large_parallel_input(rng):
    z = rng.standard_normal(1 << 20).astype(np.float32)
    np.testing.assert_array_equal(step(z), np.heaviside(z, np.float32(1)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 1, 3), (40, 30, 20), (200, 100, 70)], ids=lambda s: "x".join(map(str, s)))
def test_neuron_equals_step_of_linear(rng, shape, dtype):
    x, w, b = _operands(rng, *shape, dtype)
    b[0] = -(x[0] @ w[0])  # puts some sums right at the threshold
    np.testing.assert_array_equal(neuron(x, w, b), step(linear(x, w, b)))
    np.testing.assert_array_equal(neuron(x, w), step(linear(x, w)))


# ---- the raw bindings: backward products, bias gradient, accumulate, surrogates --------------------------------


def _ptr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _es(a: np.ndarray) -> tuple[int, ...]:
    return tuple(s // a.itemsize for s in a.strides)


CODES = {np.dtype(np.float32): _core.FLOAT32, np.dtype(np.float64): _core.FLOAT64}


def _gemm(a, b, c, accumulate=False, bias=None, step_=False):
    m, k = a.shape
    n = b.shape[1]
    _core.gemm(CODES[a.dtype], m, n, k, _ptr(a), *_es(a), _ptr(b), *_es(b), _ptr(c), *_es(c),
               0 if bias is None else _ptr(bias), 1, accumulate, step_)  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (37, 19, 53), (300, 130, 90)], ids=lambda s: "x".join(map(str, s)))
def test_backward_products(rng, shape, dtype):
    m, n, k = shape
    x, w, _ = _operands(rng, m, n, k, dtype, bias=False)
    dy = rng.standard_normal((m, n)).astype(dtype)
    dx = np.empty((m, k), dtype)
    _gemm(dy, w, dx)  # dX = dY W
    assert_linear_close(dx, dy, w.T)
    dw = np.empty((n, k), dtype)
    _gemm(dy.T, x, dw)  # dW = dYᵀ X, dY read transposed in place
    assert_linear_close(dw, dy.T, x.T)
    before = dw.copy()
    _gemm(dy.T, x, dw, accumulate=True)  # gradient accumulation: dW += dYᵀ X
    assert_linear_close(dw - before, dy.T, x.T)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n", [(0, 5), (1, 1), (7, 3), (1000, 2), (300, 700), (70000, 1)])
def test_bias_grad(rng, m, n, dtype):
    dy = rng.standard_normal((m, n)).astype(dtype)
    db = np.full(n, np.nan, dtype)
    _core.bias_grad(CODES[np.dtype(dtype)], m, n, _ptr(dy), *_es(dy), _ptr(db), 1, False)
    expected = dy.astype(np.float64).sum(axis=0)
    tol = 8 * np.finfo(dtype).eps * np.sqrt(max(m, 1)) * np.abs(dy).astype(np.float64).sum(axis=0) + 1e-30
    assert np.all(np.abs(db - expected) <= tol)
    _core.bias_grad(CODES[np.dtype(dtype)], m, n, _ptr(dy), *_es(dy), _ptr(db), 1, True)
    assert np.all(np.abs(db - 2 * expected) <= 2 * tol)


def test_bias_grad_is_identical_for_every_thread_count(rng):
    dy = rng.standard_normal((50000, 3)).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        linneuron.set_num_threads(threads)
        db = np.empty(3, np.float32)
        _core.bias_grad(_core.FLOAT32, 50000, 3, _ptr(dy), 3, 1, _ptr(db), 1, False)
        results.append(db)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


SURROGATES = {  # code: (name, default-like alpha, float64 formula of dH/dz)
    0: ("none", 1.0, lambda z, a: np.zeros_like(z)),
    1: ("ste", 1.0, lambda z, a: (np.abs(a * z) <= 1).astype(np.float64)),
    2: ("sigmoid", 4.0, lambda z, a: a * np.exp(-np.abs(a * z)) / (1 + np.exp(-np.abs(a * z))) ** 2),
    3: ("atan", 2.0, lambda z, a: (a / 2) / (1 + (np.pi / 2 * a * z) ** 2)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("code", sorted(SURROGATES), ids=lambda c: SURROGATES[c][0])
def test_step_backward_surrogates(rng, code, dtype):
    _, alpha, formula = SURROGATES[code]
    z = (rng.standard_normal((31, 17)) * 2).astype(dtype)
    z[0, :4] = [0.0, -0.0, 1.0, -1.0]
    gy = rng.standard_normal((31, 17)).astype(dtype)
    gz = np.empty_like(z)
    _core.step_backward(CODES[np.dtype(dtype)], 31, 17, _ptr(z), 17, 1, _ptr(gy), 17, 1, _ptr(gz), 17, 1, code, alpha)
    expected = gy.astype(np.float64) * formula(z.astype(np.float64), alpha)
    np.testing.assert_allclose(gz, expected, rtol=8 * np.finfo(dtype).eps, atol=np.finfo(dtype).tiny)


def test_gemm_fused_step_and_bias_through_bindings(rng):
    a = rng.standard_normal((20, 30))
    b = rng.standard_normal((30, 10))
    bias = rng.standard_normal(10)
    c = np.empty((20, 10))
    _gemm(a, b, c, bias=bias, step_=True)
    expected = reference_linear(a, b.T, bias)
    decided = np.abs(expected) > 1e-9  # away from the threshold, where rounding cannot flip the step
    np.testing.assert_array_equal(c[decided], np.heaviside(expected, 1.0)[decided])


# ---- API surface ----------------------------------------------------------------------------------------------


def test_thread_count_controls_and_results_agree(rng):
    x, w, b = _operands(rng, 257, 190, 333, np.float32)
    linneuron.set_num_threads(1)
    assert linneuron.get_num_threads() == 1
    one = linear(x, w, b)
    linneuron.set_num_threads(2)
    two = linear(x, w, b)
    # Each output element is computed by one thread with the same k order, so the results are bit-identical.
    np.testing.assert_array_equal(one, two)
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        linneuron.set_num_threads(0)
    with pytest.raises(TypeError, match="must be an int"):
        linneuron.set_num_threads(2.0)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: linear(np.ones((2, 3), np.int64), np.ones((4, 3))), TypeError, r"x must be float16, float32 or float64, got int64"),
        (lambda: linear(np.ones((2, 3)), np.ones((4, 3), np.float32)), TypeError, r"same dtype.*float64.*float32"),
        (lambda: linear(np.ones((2, 3)), np.ones((4, 5))), ValueError, r"x has 3 features but weight expects 5 \(x \(2, 3\), weight \(4, 5\)\)"),
        (lambda: linear(np.ones((2, 3)), np.ones(3)), ValueError, r"weight must be 2-D"),
        (lambda: linear(np.float64(1.0), np.ones((4, 1))), ValueError, r"at least 1 dimension"),
        (lambda: linear(np.ones((2, 3)), np.ones((4, 3)), np.ones(5)), ValueError, r"bias must have shape \(4,\)"),
        (lambda: linear(np.ones((2, 3)), np.ones((4, 3)), np.ones(4, np.float32)), TypeError, r"bias must have dtype float64"),
        (lambda: neuron(np.ones((2, 3), np.complex128), np.ones((4, 3))), TypeError, r"neuron\(\): x must be float16, float32"),
        (lambda: step(np.array(["a"])), TypeError, r"step\(\): z must be float16, float32 or float64"),
        (lambda: step(np.ones(3, np.longdouble)), TypeError, r"got float128"),
    ],
    ids=["int", "dtype-mismatch", "features", "weight-ndim", "0-d", "bias-len", "bias-dtype", "complex", "str", "f128"],
)  # fmt: skip
def test_bad_input_raises_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_lists_are_accepted_as_float64():
    out = linear([[1.0, 2.0]], [[3.0, 4.0]], [0.5])
    np.testing.assert_array_equal(out, [[11.5]])


def test_info_reports_the_build():
    data = linneuron.info()
    assert data["version"] == linneuron.__version__
    assert data["isa"] in data["supported_isas"]
    assert set(data["supported_isas"]) <= set(data["compiled_isas"])
    assert "portable" in data["compiled_isas"]
    assert data["openmp"] is True
    assert data["num_threads"] == linneuron.get_num_threads()
    assert isinstance(data["cuda_built"], bool)
    assert data["cuda_available"] == (data["cuda_reason"] is None)


def test_cli_info_prints_the_build():
    result = subprocess.run(
        [sys.executable, "-m", "linneuron.cli", "info", "--json"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert '"openmp": true' in result.stdout


def test_import_does_not_import_torch():
    code = "import sys, linneuron, numpy as np; linneuron.numpy.step(np.ones(2)); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
