"""The bad-input matrix of the NumPy API and the raw _core bindings: each case raises a clear error or is correct."""

from __future__ import annotations

import mmap
import sys

import linneuron
import numpy as np
import pytest
from _hardening import assert_linear_close, assert_neuron_matches, reference_step
from linneuron import _core
from linneuron import numpy as lnp
from numpy.lib.stride_tricks import as_strided

GEMM_FNS = {"linear": lnp.linear, "neuron": lnp.neuron}

BAD_DTYPES = [
    np.bool_,
    np.int8,
    np.uint8,
    np.int32,
    np.int64,
    np.uint64,
    np.longdouble,
    np.complex64,
    np.complex128,
    np.object_,
    np.str_,
    np.dtype("datetime64[s]"),
    np.dtype([("a", np.float32), ("b", np.float32)]),
]
BAD_DTYPE_IDS = [np.dtype(d).name if np.dtype(d).names is None else "structured" for d in BAD_DTYPES]


def _operands(dtype=np.float64, m=5, n=3, k=4, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((m, k)).astype(dtype),
        rng.standard_normal((n, k)).astype(dtype),
        rng.standard_normal(n).astype(dtype),
    )


def _cast(arr: np.ndarray, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.names is not None:
        return np.zeros(arr.shape, dtype=dtype)
    if dtype.kind == "M":
        return np.zeros(arr.shape, dtype=dtype)
    return arr.astype(dtype)


def _check_gemm(fn_name, out, x, w, b):
    if fn_name == "linear":
        assert_linear_close(out, x, w, b)
    else:
        assert_neuron_matches(out, x, w, b)


# ---- dtypes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=BAD_DTYPE_IDS)
@pytest.mark.parametrize("arg", ["x", "weight", "bias"])
@pytest.mark.parametrize("fn_name", sorted(GEMM_FNS))
def test_gemm_rejects_unsupported_dtype(fn_name, arg, dtype):
    args = dict(zip(("x", "weight", "bias"), _operands()))
    args[arg] = _cast(args[arg], dtype)
    with pytest.raises(TypeError, match=rf"{fn_name}\(\): {arg} must be float16, float32 or float64, got"):
        GEMM_FNS[fn_name](args["x"], args["weight"], args["bias"])


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=BAD_DTYPE_IDS)
def test_step_rejects_unsupported_dtype(dtype):
    with pytest.raises(TypeError, match=r"step\(\): z must be float16, float32 or float64, got"):
        lnp.step(_cast(np.linspace(-1, 1, 6).reshape(2, 3), dtype))


@pytest.mark.parametrize("fn_name", sorted(GEMM_FNS))
@pytest.mark.parametrize(
    "dtypes",
    [
        (np.float32, np.float64, np.float64),
        (np.float64, np.float32, np.float64),
        (np.float32, np.float32, np.float64),
        (np.float64, np.float64, np.float32),
        (np.float16, np.float32, np.float32),
        (np.float32, np.float16, np.float32),
        (np.float16, np.float16, np.float32),
        (np.float64, np.float64, np.float16),
    ],
    ids=["x32-w64", "x64-w32", "bias64-on-32", "bias32-on-64", "x16-w32", "x32-w16", "bias32-on-16", "bias16-on-64"],
)
def test_gemm_rejects_mixed_dtypes(fn_name, dtypes):
    x, w, b = (a.astype(d) for a, d in zip(_operands(), dtypes))
    with pytest.raises(TypeError, match=rf"{fn_name}\(\): .*(same dtype|bias must have dtype)"):
        GEMM_FNS[fn_name](x, w, b)


@pytest.mark.parametrize("fn_name", sorted(GEMM_FNS))
@pytest.mark.parametrize("bad", [None, "abc", {"a": 1}, object(), [[1.0, 2.0], [3.0]], {1.0, 2.0}], ids=repr)
@pytest.mark.parametrize("arg", ["x", "weight"])
def test_gemm_rejects_non_arrays(fn_name, arg, bad):
    args = dict(zip(("x", "weight", "bias"), _operands()))
    args[arg] = bad
    with pytest.raises(TypeError, match=rf"{fn_name}\(\): {arg} must be"):
        GEMM_FNS[fn_name](args["x"], args["weight"], args["bias"])


@pytest.mark.parametrize("bad", ["abc", object(), [[1.0], [2.0, 3.0]]], ids=repr)
def test_step_rejects_non_arrays(bad):
    with pytest.raises(TypeError, match=r"step\(\): z must be"):
        lnp.step(bad)


def test_nested_lists_of_floats_are_accepted():
    x, w, b = _operands()
    assert_linear_close(lnp.linear(x.tolist(), w.tolist(), b.tolist()), x, w, b)
    np.testing.assert_array_equal(lnp.step([[-1.0, 0.0], [-0.0, 2.0]]), [[0.0, 1.0], [1.0, 1.0]])


# ---- shapes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn_name", sorted(GEMM_FNS))
@pytest.mark.parametrize(
    "x_shape, w_shape, b_shape, error",
    [
        ((5, 4), (), (3,), r"weight must be 2-D"),
        ((5, 4), (4,), (3,), r"weight must be 2-D"),
        ((5, 4), (3, 4, 1), (3,), r"weight must be 2-D"),
        ((), (3, 4), (3,), r"x must have at least 1 dimension"),
        ((5, 5), (3, 4), (3,), r"x has 5 features but weight expects 4"),
        ((5,), (3, 4), (3,), r"x has 5 features but weight expects 4"),
        ((2, 5, 3), (3, 4), (3,), r"x has 3 features but weight expects 4"),
        ((5, 4), (3, 4), (4,), r"bias must have shape \(3,\)"),
        ((5, 4), (3, 4), (2,), r"bias must have shape \(3,\)"),
        ((5, 4), (3, 4), (), r"bias must have shape \(3,\)"),
        ((5, 4), (3, 4), (1, 3), r"bias must have shape \(3,\)"),
        ((5, 4), (3, 4), (3, 1), r"bias must have shape \(3,\)"),
        ((5, 4), (0, 4), (1,), r"bias must have shape \(0,\)"),
    ],
)
def test_gemm_rejects_bad_shapes(fn_name, x_shape, w_shape, b_shape, error):
    with pytest.raises(ValueError, match=rf"{fn_name}\(\): {error}"):
        GEMM_FNS[fn_name](np.ones(x_shape), np.ones(w_shape), np.ones(b_shape))


@pytest.mark.parametrize("fn_name", sorted(GEMM_FNS))
@pytest.mark.parametrize(
    "x_shape, n",
    [((4,), 3), ((2, 3, 4), 3), ((1, 1, 1, 4), 2), ((0, 4), 3), ((5, 0), 3), ((5, 4), 0), ((0, 0), 0), ((2, 0, 4), 3)],
)
def test_gemm_accepts_any_leading_dims_and_empty_sizes(fn_name, x_shape, n):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((n, x_shape[-1]))
    b = rng.standard_normal(n)
    for bias in (b, None):
        out = GEMM_FNS[fn_name](x, w, bias)
        assert out.shape == x_shape[:-1] + (n,)
        _check_gemm(fn_name, out, x, w, bias)


@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 0, 2), (2, 3, 4, 5)])
def test_step_accepts_any_shape(shape):
    z = np.random.default_rng(2).standard_normal(shape)
    out = lnp.step(z)
    assert out.shape == z.shape and out.dtype == z.dtype
    np.testing.assert_array_equal(out, reference_step(z))


# ---- memory layouts ------------------------------------------------------------------------------------------


def _misaligned(arr: np.ndarray) -> np.ndarray:
    """A copy of ``arr`` whose data starts one byte past an aligned address (so numpy marks it unaligned)."""
    raw = np.zeros(arr.nbytes + 1, dtype=np.uint8)
    view = raw[1:].view(arr.dtype).reshape(arr.shape)
    view[...] = arr
    assert not view.flags.aligned
    return view


def _read_only(arr: np.ndarray) -> np.ndarray:
    arr = arr.copy()
    arr.flags.writeable = False
    return arr


def _byteswapped(arr: np.ndarray) -> np.ndarray:
    return arr.astype(arr.dtype.newbyteorder(">" if sys.byteorder == "little" else "<"))


def _negative_strides(arr: np.ndarray) -> np.ndarray:
    """The same values read backwards from a reversed copy: every stride negative."""
    flip = (slice(None, None, -1),) * arr.ndim
    return arr[flip].copy()[flip]


def _sliced(arr: np.ndarray) -> np.ndarray:
    """The same values at every other element of a bigger buffer (positive, non-unit strides)."""
    big = np.zeros(tuple(2 * s for s in arr.shape), dtype=arr.dtype)
    view = big[tuple(slice(None, None, 2) for _ in arr.shape)]
    view[...] = arr
    return view


def _fortran(arr: np.ndarray) -> np.ndarray:
    return np.asfortranarray(arr)


LAYOUTS = {
    "read_only": _read_only,
    "misaligned": _misaligned,
    "byteswapped": _byteswapped,
    "negative_strides": _negative_strides,
    "sliced": _sliced,
    "fortran": _fortran,
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("arg", ["x", "weight", "bias"])
@pytest.mark.parametrize("fn_name", sorted(GEMM_FNS))
def test_gemm_odd_layouts_give_correct_results(fn_name, arg, layout, dtype):
    x, w, b = _operands(dtype, m=9, n=11, k=13)
    args = {"x": x, "weight": w, "bias": b}
    args[arg] = LAYOUTS[layout](args[arg])
    np.testing.assert_array_equal(args[arg], {"x": x, "weight": w, "bias": b}[arg])
    out = GEMM_FNS[fn_name](args["x"], args["weight"], args["bias"])
    assert out.dtype == np.dtype(dtype)
    _check_gemm(fn_name, out, x, w, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_step_odd_layouts_give_correct_results(layout, dtype):
    z = np.random.default_rng(3).standard_normal((6, 7)).astype(dtype)
    z[0, :3] = [0.0, -0.0, np.nan]
    out = lnp.step(LAYOUTS[layout](z))
    np.testing.assert_array_equal(out, reference_step(z))


@pytest.mark.parametrize("fn_name", sorted(GEMM_FNS))
def test_gemm_zero_strides_broadcast_operands(fn_name):
    rng = np.random.default_rng(4)
    x = np.broadcast_to(rng.standard_normal(6), (5, 6))  # every row the same: row stride 0
    w = np.broadcast_to(rng.standard_normal((3, 1)), (3, 6))  # every column the same: column stride 0
    b = np.broadcast_to(np.float64(0.25), (3,))  # stride 0
    assert x.strides[0] == 0 and w.strides[1] == 0 and b.strides[0] == 0
    _check_gemm(fn_name, GEMM_FNS[fn_name](x, w, b), x, w, b)


def test_gemm_non_collapsible_leading_dims():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 5)).transpose(1, 0, 2)  # leading dims (3, 4) with strides that do not merge
    w = rng.standard_normal((2, 5))
    out = lnp.linear(x, w)
    assert out.shape == (3, 4, 2)
    assert_linear_close(out, x, w)


def test_step_non_collapsible_strides():
    z = np.random.default_rng(6).standard_normal((4, 5, 6)).transpose(2, 0, 1)[:, ::2, 1:]
    np.testing.assert_array_equal(lnp.step(z), reference_step(z))


def test_inputs_are_not_modified():
    x, w, b = _operands()
    before = [a.copy() for a in (x, w, b)]
    lnp.linear(x, w, b)
    lnp.neuron(x, w, b)
    lnp.step(x)
    for a, kept in zip((x, w, b), before):
        np.testing.assert_array_equal(a, kept)


# ---- sizes past 32 bits --------------------------------------------------------------------------------------


def _ones_stride0(shape, dtype=np.float64) -> np.ndarray:
    """A read-only array of ``shape`` built on one element: every stride is 0, so it costs no memory."""
    return as_strided(np.ones(1, dtype=dtype), shape=shape, strides=(0,) * len(shape), writeable=False)


@pytest.mark.parametrize(
    "x_shape, n",
    [
        ((2**33, 4), 0),  # M * N = 0 although M alone passes 32 bits
        ((2**20, 2**14), 0),  # M * K = 2**34
        ((0, 2**40), 7),  # K past 32 bits with no rows
        ((2**31 + 3, 0), 0),  # K = 0, N = 0
    ],
)
def test_huge_but_empty_results(x_shape, n):
    x = _ones_stride0(x_shape)
    w = _ones_stride0((n, x_shape[-1]))
    out = lnp.linear(x, w)
    assert out.shape == x_shape[:-1] + (n,)


def test_k_zero_with_many_rows_is_bias():
    x = _ones_stride0((3, 0))
    b = np.array([1.0, -2.0])
    np.testing.assert_array_equal(lnp.linear(x, np.ones((2, 0)), b), np.tile(b, (3, 1)))
    np.testing.assert_array_equal(lnp.neuron(x, np.ones((2, 0)), b), np.tile([1.0, 0.0], (3, 1)))


@pytest.mark.slow
def test_rows_times_features_past_32_bits_is_exact():
    """M * K = 2**31 + 2**15 multiply-adds of ones: exact in float64, and every loop counter passes int32."""
    m, k = 2**16 + 1, 2**15
    out = lnp.linear(_ones_stride0((m, k)), _ones_stride0((1, k)))
    assert out.shape == (m, 1)
    np.testing.assert_array_equal(out, np.full((m, 1), float(k)))


def _sparse_mapping(nbytes: int):
    """An anonymous mapping of ``nbytes`` that reserves no memory (pages read before a write are the zero page)."""
    map_noreserve = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform.startswith("linux") else 0)
    try:
        return mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | map_noreserve)
    except (OSError, OverflowError, ValueError) as err:
        pytest.skip(f"cannot map {nbytes} bytes of address space here: {err}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_offsets_past_32_bits_are_exact(dtype):
    """Rows 2**31 + 5 elements apart (more than 8 GiB) in a sparse mapping: i * row_stride must be 64-bit.

    Only a few pages are ever touched. With a 32-bit product the kernel would read row 0 for row 1 (or fault).
    """
    itemsize = np.dtype(dtype).itemsize
    row_stride = 2**31 + 5  # elements
    k = 3
    buf = _sparse_mapping((row_stride + k) * itemsize)
    try:
        base = np.frombuffer(buf, dtype=dtype)
        x = as_strided(base, shape=(2, k), strides=(row_stride * itemsize, itemsize))
        x[0] = [1.0, 2.0, 3.0]
        x[1] = [-4.0, 5.0, -6.0]
        z = as_strided(base, shape=(2, k), strides=(row_stride * itemsize, itemsize))
        w = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=dtype)
        np.testing.assert_array_equal(lnp.linear(x, w), [[6.0, 1.0], [-5.0, -4.0]])
        np.testing.assert_array_equal(lnp.neuron(x, w), [[1.0, 1.0], [0.0, 0.0]])
        np.testing.assert_array_equal(lnp.step(z), [[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
        # The same rows reached through a negative stride from the far end.
        np.testing.assert_array_equal(lnp.linear(x[::-1], w), [[-5.0, -4.0], [6.0, 1.0]])
        del base, x, z
    finally:
        buf.close()


# ---- the raw bindings (linneuron._core) ----------------------------------------------------------------------


def _gemm_args(**overrides):
    a = np.ones((2, 3))
    b = np.ones((3, 4))
    c = np.zeros((2, 4))
    args = dict(
        dtype=_core.FLOAT64, m=2, n=4, k=3,
        a=a.ctypes.data, a_rs=3, a_cs=1,
        b=b.ctypes.data, b_rs=4, b_cs=1,
        c=c.ctypes.data, c_rs=4, c_cs=1,
        bias=0, bias_stride=0, accumulate=False, step=False,
    )  # fmt: skip
    args.update(overrides)
    return args, (a, b, c)


@pytest.mark.parametrize(
    "overrides, error",
    [
        ({"dtype": 7}, r"unknown dtype"),
        ({"dtype": -1}, r"unknown dtype"),
        ({"m": -1}, r"negative size"),
        ({"n": -1}, r"negative size"),
        ({"k": -1}, r"negative size"),
        ({"c": 0}, r"null output"),
        ({"a": 0}, r"null operand"),
        ({"b": 0}, r"null operand"),
    ],
)
def test_core_gemm_rejects_bad_arguments(overrides, error):
    args, keep = _gemm_args(**overrides)
    with pytest.raises(ValueError, match=error):
        _core.gemm(*args.values())
    assert not keep[2].any(), "nothing may be written before the error"


def test_core_gemm_rejects_wrong_python_types():
    args, _ = _gemm_args()
    for name, bad in [("m", 2.5), ("a", "0x10"), ("a", -5), ("step", "yes"), ("m", 2**64)]:
        bad_args = dict(args, **{name: bad})
        with pytest.raises(TypeError):
            _core.gemm(*bad_args.values())


def test_core_gemm_correct_through_raw_pointers():
    args, (a, b, c) = _gemm_args()
    _core.gemm(*args.values())
    np.testing.assert_array_equal(c, a @ b)


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda p: _core.step_forward(5, 1, 1, p, 1, 1, p, 1, 1), r"unknown dtype"),
        (lambda p: _core.step_forward(0, -1, 1, p, 1, 1, p, 1, 1), r"negative size"),
        (lambda p: _core.step_forward(0, 1, 1, 0, 1, 1, p, 1, 1), r"null pointer"),
        (lambda p: _core.step_backward(0, 1, 1, p, 1, 1, p, 1, 1, p, 1, 1, 9, 1.0), r"unknown surrogate"),
        (lambda p: _core.step_backward(0, 1, 1, p, 1, 1, p, 1, 1, p, 1, 1, -1, 1.0), r"unknown surrogate"),
        (lambda p: _core.step_backward(0, 1, 1, 0, 1, 1, p, 1, 1, p, 1, 1, 1, 1.0), r"null pointer"),
        (lambda p: _core.step_backward(0, 1, -3, p, 1, 1, p, 1, 1, p, 1, 1, 1, 1.0), r"negative size"),
        (lambda p: _core.bias_grad(0, 1, 1, 0, 1, 1, p, 1, False), r"null pointer"),
        (lambda p: _core.bias_grad(0, 1, 1, p, 1, 1, 0, 1, False), r"null pointer"),
        (lambda p: _core.bias_grad(0, -1, 1, p, 1, 1, p, 1, False), r"negative size"),
        (lambda p: _core.bias_grad(4, 1, 1, p, 1, 1, p, 1, False), r"unknown dtype"),
    ],
)
def test_core_elementwise_rejects_bad_arguments(call, error):
    buf = np.zeros(4, dtype=np.float32)
    with pytest.raises(ValueError, match=error):
        call(buf.ctypes.data)
    assert not buf.any()


@pytest.mark.parametrize("dtype_code, itemsize", [(0, 4), (1, 8)])
def test_core_rejects_misaligned_pointers(dtype_code, itemsize):
    """Element-misaligned buffers are refused before any kernel runs (a misaligned float load is UB)."""
    raw = np.zeros(256, dtype=np.uint8)
    base = raw.ctypes.data + (-raw.ctypes.data) % 64  # 64-byte aligned address inside raw
    good, bad = base, base + 1
    calls = {
        "gemm a": lambda: _core.gemm(dtype_code, 2, 2, 2, bad, 2, 1, good, 2, 1, good + 64, 2, 1, 0, 0, False, False),
        "gemm c": lambda: _core.gemm(dtype_code, 2, 2, 2, good, 2, 1, good, 2, 1, bad + 64, 2, 1, 0, 0, False, False),
        "gemm bias": lambda: _core.gemm(dtype_code, 2, 2, 2, good, 2, 1, good, 2, 1, good + 64, 2, 1, bad, 1, False,
                                        False),
        "step src": lambda: _core.step_forward(dtype_code, 1, 4, bad, 0, 1, good + 64, 0, 1),
        "step_backward grad_z": lambda: _core.step_backward(dtype_code, 1, 4, good, 0, 1, good, 0, 1, bad + 64, 0, 1,
                                                            1, 1.0),
        "bias_grad dy": lambda: _core.bias_grad(dtype_code, 2, 2, bad, 2, 1, good + 64, 1, False),
    }  # fmt: skip
    before = raw.copy()
    for call in calls.values():
        with pytest.raises(ValueError, match=rf"is not aligned to its {itemsize}-byte elements"):
            call()
    np.testing.assert_array_equal(raw, before, err_msg="nothing is written before the error")


@pytest.mark.parametrize("n", [-1, -(2**31)])
def test_core_set_num_threads_rejects_negative(n):
    with pytest.raises(ValueError, match="n must be >= 0"):
        _core.set_num_threads(n)


@pytest.mark.parametrize(
    "bad, error",
    [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError), ("4", TypeError), (2**40, ValueError)],
)
def test_set_num_threads_rejects_bad_values(bad, error):
    before = linneuron.get_num_threads()
    with pytest.raises(error, match=r"set_num_threads\(\): n must be"):
        linneuron.set_num_threads(bad)
    assert linneuron.get_num_threads() == before


def test_set_active_isa_rejects_unknown_names():
    active = _core.active_isa()
    assert _core.set_active_isa("no-such-isa") is False
    assert _core.active_isa() == active


@pytest.mark.parametrize("fn_name", sorted(GEMM_FNS))
def test_empty_x_with_non_collapsible_strides(fn_name):
    """Found by hypothesis: K = 0 and leading dims whose strides do not merge. numpy's ascontiguousarray keeps an
    empty array's strides, so the copy fallback could not collapse the rows either (TypeError from an unpack)."""
    x = as_strided(np.zeros(4, np.float32), shape=(1, 2, 2, 0), strides=(16, 4, 8, 4))
    b = np.array([0.5, -1.0, 0.0], np.float32)
    out = GEMM_FNS[fn_name](x, np.zeros((3, 0), np.float32), b)
    expected = np.broadcast_to(b if fn_name == "linear" else reference_step(b), (1, 2, 2, 3))
    np.testing.assert_array_equal(out, expected)


def test_numpy_api_names_the_argument_for_tensors_it_cannot_convert():
    torch = pytest.importorskip("torch")
    w = torch.ones(3, 4, requires_grad=True)  # np.asarray raises RuntimeError for it
    with pytest.raises(TypeError, match=r"linear\(\): weight must be a float16, float32 or float64 array, got Tensor"):
        lnp.linear(np.ones((2, 4)), w)
    x = torch.ones(2, 4, device="meta")
    with pytest.raises(TypeError, match=r"neuron\(\): x must be a float16, float32 or float64 array, got Tensor"):
        lnp.neuron(x, np.ones((3, 4)))
    np.testing.assert_array_equal(lnp.step(torch.tensor([-1.0, 0.0])), [0.0, 1.0])  # a CPU tensor converts


# ================================================================================================================
# The torch API: linneuron.functional, the modules, and the dispatch to devices
# ================================================================================================================

try:
    import linneuron.functional as LF
    import torch
    import torch.nn.functional as torch_F
    from linneuron import _cuda_loader, _kernels
except ImportError:  # the NumPy half of this file runs without torch
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")

TORCH_GEMM = {"linear": lambda *a: LF.linear(*a), "neuron": lambda *a: LF.neuron(*a)}
TORCH_BAD_DTYPES = (
    ["bool", "uint8", "int8", "int16", "int32", "int64", "complex64", "complex128"] if torch is not None else []
)


def _t_operands(dtype_name="float64", m=5, n=3, k=4):
    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, dtype_name)
    return (
        torch.randn(m, k, generator=g, dtype=torch.float64).to(dtype),
        torch.randn(n, k, generator=g, dtype=torch.float64).to(dtype),
        torch.randn(n, generator=g, dtype=torch.float64).to(dtype),
    )


def _t_check(fn_name, out, x, w, b):
    expected = torch_F.linear(x.double(), w.double(), None if b is None else b.double())
    assert out.dtype == x.dtype and out.shape == expected.shape
    if fn_name == "linear":
        assert_linear_close(out.numpy(), x.numpy(), w.numpy(), None if b is None else b.numpy())
    else:
        assert_neuron_matches(out.numpy(), x.numpy(), w.numpy(), None if b is None else b.numpy())


LOWP_MIXES = [
    ("bfloat16", "float32", "float32"),
    ("float32", "bfloat16", "bfloat16"),
    ("float16", "bfloat16", "float16"),
    ("bfloat16", "bfloat16", "float16"),
    ("float16", "float16", "float64"),
    ("float64", "float16", "float16"),
]


@needs_torch
@pytest.mark.parametrize("dtypes", LOWP_MIXES, ids=["-".join(m) for m in LOWP_MIXES])
@pytest.mark.parametrize("fn_name", sorted(TORCH_GEMM))
def test_torch_gemm_rejects_mixed_low_precision_dtypes(fn_name, dtypes):
    x, w, b = (t.to(getattr(torch, d)) for t, d in zip(_t_operands(), dtypes))
    expected = rf"{fn_name}\(\): expected input, weight and bias to have the same dtype, got input torch.{dtypes[0]}, "
    expected += rf"weight torch.{dtypes[1]}, bias torch.{dtypes[2]}"
    with pytest.raises(TypeError, match=expected):
        TORCH_GEMM[fn_name](x, w, b)


@needs_torch
@pytest.mark.parametrize("dtype_name", TORCH_BAD_DTYPES)
@pytest.mark.parametrize("arg", ["input", "weight", "bias"])
@pytest.mark.parametrize("fn_name", sorted(TORCH_GEMM))
def test_torch_gemm_rejects_unsupported_dtype(fn_name, arg, dtype_name):
    args = dict(zip(("input", "weight", "bias"), _t_operands()))
    args[arg] = args[arg].to(getattr(torch, dtype_name))
    # A dtype that differs from the others is reported as a mismatch; all-equal unsupported dtypes by name.
    with pytest.raises(TypeError, match=rf"{fn_name}\(\): .*(same dtype|must be a floating-point|only on CUDA)"):
        TORCH_GEMM[fn_name](args["input"], args["weight"], args["bias"])
    same = {k: v.to(getattr(torch, dtype_name)) for k, v in args.items()}
    with pytest.raises(TypeError, match=rf"{fn_name}\(\): input .*{dtype_name}"):
        TORCH_GEMM[fn_name](same["input"], same["weight"], same["bias"])


@needs_torch
@pytest.mark.parametrize("dtype_name", TORCH_BAD_DTYPES)
def test_torch_step_rejects_unsupported_dtype(dtype_name):
    with pytest.raises(TypeError, match=rf"step\(\): input .*{dtype_name}"):
        LF.step(torch.zeros(2, 3, dtype=getattr(torch, dtype_name)))


@needs_torch
@pytest.mark.parametrize("fn_name", sorted(TORCH_GEMM))
@pytest.mark.parametrize("arg", ["input", "weight", "bias"])
@pytest.mark.parametrize("bad", [np.ones((5, 4)), [[1.0] * 4] * 5, 1.5, "x"], ids=["ndarray", "list", "float", "str"])
def test_torch_gemm_rejects_non_tensors(fn_name, arg, bad):
    args = dict(zip(("input", "weight", "bias"), _t_operands()))
    args[arg] = bad
    with pytest.raises(TypeError, match=rf"{fn_name}\(\): {arg} must be a Tensor"):
        TORCH_GEMM[fn_name](args["input"], args["weight"], args["bias"])


@needs_torch
@pytest.mark.parametrize("fn_name", sorted(TORCH_GEMM))
@pytest.mark.parametrize(
    "x_shape, w_shape, b_shape, error",
    [
        ((5, 4), (), (3,), r"weight must be 2-D"),
        ((5, 4), (4,), (3,), r"weight must be 2-D"),
        ((5, 4), (3, 4, 1), (3,), r"weight must be 2-D"),
        ((), (3, 4), (3,), r"input must have at least 1 dimension"),
        ((5, 5), (3, 4), (3,), r"input has 5 features but weight expects 4"),
        ((2, 5, 3), (3, 4), (3,), r"input has 3 features but weight expects 4"),
        ((5, 4), (3, 4), (4,), r"bias must have shape \(3,\)"),
        ((5, 4), (3, 4), (), r"bias must have shape \(3,\)"),
        ((5, 4), (3, 4), (1, 3), r"bias must have shape \(3,\)"),
    ],
)
def test_torch_gemm_rejects_bad_shapes(fn_name, x_shape, w_shape, b_shape, error):
    with pytest.raises(ValueError, match=rf"{fn_name}\(\): {error}"):
        TORCH_GEMM[fn_name](torch.ones(x_shape), torch.ones(w_shape), torch.ones(b_shape))


@needs_torch
@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: LF.step(torch.ones(3), surrogate="relu"), ValueError, r"step\(\): surrogate must be one of"),
        (lambda: LF.step(torch.ones(3), surrogate=3), ValueError, r"step\(\): surrogate must be one of"),
        (lambda: LF.step(torch.ones(3), alpha=0.0), ValueError, r"step\(\): alpha must be a positive finite"),
        (lambda: LF.step(torch.ones(3), alpha=-1.0), ValueError, r"step\(\): alpha must be a positive finite"),
        (lambda: LF.step(torch.ones(3), alpha=float("nan")), ValueError, r"alpha must be a positive finite"),
        (lambda: LF.step(torch.ones(3), alpha=float("inf")), ValueError, r"alpha must be a positive finite"),
        (lambda: LF.step(torch.ones(3), alpha=True), TypeError, r"step\(\): alpha must be a float"),
        (lambda: LF.step(torch.ones(3), alpha="2"), TypeError, r"step\(\): alpha must be a float"),
        (lambda: LF.step(torch.ones(3), alpha=torch.tensor(2.0)), TypeError, r"alpha must be a float"),
        (lambda: LF.step(np.ones(3)), TypeError, r"step\(\): input must be a Tensor"),
        (lambda: LF.neuron(torch.ones(2, 3), torch.ones(1, 3), surrogate="x"), ValueError, r"surrogate must be"),
        (lambda: linneuron.Step(surrogate="relu"), ValueError, r"Step\(\): surrogate must be one of"),
        (lambda: linneuron.Step(alpha=-2.0), ValueError, r"Step\(\): alpha must be a positive"),
        (lambda: linneuron.Neuron(3, 2, surrogate="x"), ValueError, r"Neuron\(\): surrogate must be one of"),
        (lambda: linneuron.Linear(4, 3)(torch.ones(2, 5)), ValueError, r"input has 5 features but weight expects 4"),
        (lambda: linneuron.Neuron(4, 3)(torch.ones(2, 5)), ValueError, r"input has 5 features but weight expects 4"),
        (lambda: linneuron.Linear(4, 3, dtype=torch.float64)(torch.ones(2, 4)), TypeError, r"same dtype"),
        (lambda: linneuron.Linear(4, 3)(torch.ones(2, 4, dtype=torch.int64)), TypeError, r"same dtype"),
        (lambda: linneuron.Linear(4, 3, dtype=torch.float16)(torch.ones(2, 4, dtype=torch.bfloat16)), TypeError,
         r"input torch.bfloat16, weight torch.float16"),
        (lambda: linneuron.Linear(4, 3, dtype=torch.bfloat16)(torch.ones(2, 4)), TypeError,
         r"input torch.float32, weight torch.bfloat16"),
        (lambda: linneuron.Neuron(4, 3, dtype=torch.float16)(torch.ones(2, 4, dtype=torch.float16).double()),
         TypeError, r"input torch.float64, weight torch.float16"),
        (lambda: linneuron.Linear.from_torch(torch.nn.Conv1d(1, 1, 1)), TypeError, r"expected a torch.nn.Linear"),
        (lambda: linneuron.Neuron(2, 1, bias=False).__setattr__("threshold", 1.0), ValueError, r"has no bias"),
    ],
)  # fmt: skip
def test_torch_api_argument_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---- devices ---------------------------------------------------------------------------------------------------


@needs_torch
@pytest.mark.parametrize("fn_name", sorted(TORCH_GEMM))
@pytest.mark.parametrize("meta_arg", ["input", "weight", "bias"])
def test_torch_mixed_devices_are_rejected(fn_name, meta_arg):
    args = dict(zip(("input", "weight", "bias"), _t_operands()))
    args[meta_arg] = args[meta_arg].to("meta")
    with pytest.raises(
        RuntimeError, match=rf"{fn_name}\(\): expected all tensors to be on the same device, got .*meta"
    ):
        TORCH_GEMM[fn_name](args["input"], args["weight"], args["bias"])


@needs_torch
def test_torch_meta_tensors_give_shapes_without_kernels():
    """The 'meta' device (no data) goes through the registered ops' fake kernels: right shapes and dtypes."""
    x, w, b = (t.to("meta") for t in _t_operands(m=6, n=3, k=4))
    for out in (LF.linear(x, w, b), LF.neuron(x, w, b), linneuron.Linear(4, 3, device="meta", dtype=x.dtype)(x)):
        assert out.device.type == "meta" and out.shape == (6, 3) and out.dtype == torch.float64
    assert LF.step(x).shape == (6, 4)


@needs_torch
def test_cuda_dispatch_without_the_cuda_module_names_the_reason(monkeypatch):
    """What a CUDA tensor meets on a build without the CUDA module.

    torch's CPU build cannot create CUDA tensors, so this drives the dispatch function with a stand-in that answers
    the three questions dispatch asks (is_cpu, is_cuda, get_device); the kernels are never reached. A real CUDA
    tensor is covered only on a GPU machine (tests marked cuda).
    """

    class CudaLike:
        is_cpu, is_cuda, device = False, True, "cuda:0"

        def get_device(self):
            return 0

    module, reason = _cuda_loader.status()
    if reason is None:
        pytest.skip("this build has usable CUDA kernels")
    with pytest.raises(RuntimeError, match=r"linear: got a CUDA tensor, but linneuron's CUDA kernels are unavail"):
        _kernels._backend(CudaLike(), "linear")
    # A device linneuron has no kernels for (neither cpu nor cuda) is named as such.
    with pytest.raises(RuntimeError, match=r"linneuron has kernels for cpu and cuda tensors, got a tensor on meta"):
        _kernels._backend(torch.ones(1, device="meta"), "step")


@needs_torch
def test_cuda_loader_reports_why_cuda_is_unavailable():
    module, reason = _cuda_loader.status()
    info = linneuron.info()
    assert info["cuda_available"] == (reason is None)
    if reason is not None:
        assert info["cuda_reason"] == reason and reason
        with pytest.raises(RuntimeError, match=r"neuron: got a CUDA tensor"):
            _cuda_loader.cuda_module("neuron")


# ---- memory layouts through torch --------------------------------------------------------------------------------


def _torch_layouts():
    def transposed(t):
        return t.t().contiguous().t() if t.ndim == 2 else t

    def sliced(t):
        big = torch.zeros(tuple(2 * s for s in t.shape), dtype=t.dtype)
        view = big[tuple(slice(None, None, 2) for _ in t.shape)]
        view.copy_(t)
        return view

    def offset(t):
        flat = torch.zeros(t.numel() + 3, dtype=t.dtype)
        view = flat[3:].view(t.shape)
        view.copy_(t)
        return view

    def from_misaligned_numpy(t):
        arr = t.numpy()
        raw = np.zeros(arr.nbytes + 1, dtype=np.uint8)
        view = raw[1:].view(arr.dtype).reshape(arr.shape)
        view[...] = arr
        return torch.from_numpy(view)

    return {"transposed": transposed, "sliced": sliced, "storage_offset": offset, "misaligned": from_misaligned_numpy}


TORCH_LAYOUTS = _torch_layouts()
# A tensor over misaligned memory (torch.from_numpy of a numpy view at an odd byte offset) would be UB in the kernels
# (UBSan: 'load of misaligned address'); _core refuses it and the torch layer (_kernels.py) retries on a copy.
TORCH_LAYOUT_PARAMS = sorted(TORCH_LAYOUTS)


@needs_torch
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("layout", TORCH_LAYOUT_PARAMS)
@pytest.mark.parametrize("arg", ["input", "weight", "bias"])
@pytest.mark.parametrize("fn_name", sorted(TORCH_GEMM))
def test_torch_odd_layouts_give_correct_results(fn_name, arg, layout, dtype_name):
    x, w, b = _t_operands(dtype_name, m=9, n=11, k=13)
    args = {"input": x, "weight": w, "bias": b}
    args[arg] = TORCH_LAYOUTS[layout](args[arg])
    assert torch.equal(args[arg], {"input": x, "weight": w, "bias": b}[arg])
    _t_check(fn_name, TORCH_GEMM[fn_name](args["input"], args["weight"], args["bias"]), x, w, b)


@needs_torch
@pytest.mark.parametrize("layout", TORCH_LAYOUT_PARAMS)
def test_torch_step_odd_layouts(layout):
    z = torch.randn(6, 7, dtype=torch.float64)
    z[0, :3] = torch.tensor([0.0, -0.0, float("nan")])
    out = LF.step(TORCH_LAYOUTS[layout](z))
    np.testing.assert_array_equal(out.numpy(), reference_step(z.numpy()))


@needs_torch
@pytest.mark.parametrize("fn_name", sorted(TORCH_GEMM))
def test_torch_zero_strides_overlap_and_non_collapsible_dims(fn_name):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 6, generator=g, dtype=torch.float64).expand(5, 6)  # row stride 0
    w = torch.randn(3, 1, generator=g, dtype=torch.float64).expand(3, 6)  # column stride 0
    b = torch.tensor(0.25, dtype=torch.float64).expand(3)
    _t_check(fn_name, TORCH_GEMM[fn_name](x, w, b), x, w, b)
    overlapping = torch.randn(40, generator=g, dtype=torch.float64).as_strided((5, 6), (2, 1))  # rows overlap
    _t_check(fn_name, TORCH_GEMM[fn_name](overlapping, w.contiguous(), None), overlapping, w, None)
    x3 = torch.randn(4, 3, 6, generator=g, dtype=torch.float64).transpose(0, 1)  # (3, 4, 6), dims do not merge
    out = TORCH_GEMM[fn_name](x3, w, b)
    assert out.shape == (3, 4, 3)
    _t_check(fn_name, out.reshape(12, 3), x3.reshape(12, 6), w, b)


@needs_torch
@pytest.mark.parametrize("layout", ["expanded", "transposed", "non_collapsible"])
def test_torch_gradients_through_odd_layouts(layout):
    """Backward through strided/stride-0 inputs gives torch's gradients (dX, dW, db)."""
    g = torch.Generator().manual_seed(4)
    if layout == "expanded":
        base = torch.randn(1, 6, generator=g, dtype=torch.float64)
        make = lambda t: t.expand(5, 6)  # noqa: E731
    elif layout == "transposed":
        base = torch.randn(6, 5, generator=g, dtype=torch.float64)
        make = lambda t: t.t()  # noqa: E731
    else:
        base = torch.randn(4, 3, 6, generator=g, dtype=torch.float64)
        make = lambda t: t.transpose(0, 1)  # noqa: E731
    w0 = torch.randn(3, 6, generator=g, dtype=torch.float64)
    b0 = torch.randn(3, generator=g, dtype=torch.float64)
    grads = []
    for fn in (LF.linear, torch_F.linear):
        xb, w, b = (t.clone().requires_grad_() for t in (base, w0, b0))
        out = fn(make(xb), w, b)
        (out * torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        grads.append((xb.grad, w.grad, b.grad))
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs)


# ---- unusual tensors found by this matrix (once bugs of python/linneuron/_kernels.py, now handled there) ----------


def _neg_bit(t):
    """An equal real tensor with the negative bit set (memory holds -t), made the public way: conj().imag."""
    out = torch.complex(torch.zeros_like(t), -t).conj().imag
    assert out.is_neg() and torch.equal(out, t)
    return out


@needs_torch
@pytest.mark.parametrize("fn_name", ["linear", "step", "ops.linear", "neuron"])
def test_torch_negative_bit_views(fn_name):
    """A real tensor with the negative bit (z.conj().imag, torch._neg_view) stores -x: the kernels must resolve it."""
    z = torch.randn(5, 4, dtype=torch.cdouble, generator=torch.Generator().manual_seed(5)).conj()
    x = z.imag  # a public way to get a real tensor with is_neg() True
    assert x.is_neg()
    ref = x.resolve_neg()
    if fn_name == "step":
        np.testing.assert_array_equal(LF.step(x).numpy(), reference_step(ref.numpy()))
        return
    w = torch.randn(3, 4, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    if fn_name == "neuron":
        want = torch.as_tensor(reference_step(torch_F.linear(ref, w, b).numpy()))
        torch.testing.assert_close(LF.neuron(x, _neg_bit(w), _neg_bit(b)), want)
        return
    fn = LF.linear if fn_name == "linear" else torch.ops.linneuron.linear
    torch.testing.assert_close(fn(x, w), torch_F.linear(ref, w))
    torch.testing.assert_close(fn(ref, _neg_bit(w), _neg_bit(b)), torch_F.linear(ref, w, b))


@needs_torch
def test_torch_negative_bit_in_backward():
    """Saved negative-bit operands and a negative-bit incoming gradient give torch's gradients (dX, dW, db), and the
    step's surrogate backward and bias_grad read them right too."""
    g = torch.Generator().manual_seed(8)
    x0, w0 = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    b0, gy = torch.randn(3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    grads = []
    for fn, make in ((LF.linear, _neg_bit), (torch_F.linear, lambda t: t)):
        leaves = [t.clone().requires_grad_() for t in (x0, w0, b0)]
        out = fn(*(make(t) for t in leaves))
        out.backward(make(gy))
        grads.append([t.grad for t in leaves])
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64)
    plain = _kernels.step_backward(gy, z, 3, 2.0)
    torch.testing.assert_close(_kernels.step_backward(_neg_bit(gy), _neg_bit(z), 3, 2.0), plain)
    torch.testing.assert_close(_kernels.bias_grad(_neg_bit(gy)), gy.sum(0))


@needs_torch
def test_torch_empty_input_with_non_collapsible_strides():
    """K = 0 with leading dims whose strides do not merge: contiguous() keeps an empty tensor's strides, so
    _rows_view takes an x that is never read as rows with stride 0 (as numpy.py does)."""
    x = torch.empty(0).as_strided((1, 2, 2, 0), (16, 4, 8, 4))
    b = torch.tensor([0.5, -1.0, 0.0])
    torch.testing.assert_close(LF.linear(x, torch.zeros(3, 0), b), b.expand(1, 2, 2, 3))
    torch.testing.assert_close(LF.linear(x, torch.zeros(3, 0)), torch.zeros(1, 2, 2, 3))
    gy = torch.empty(0).as_strided((2, 2, 0), (4, 8, 4))  # N = 0 for bias_grad: nothing to sum into
    assert _kernels.bias_grad(gy).shape == (0,)


def _non_strided(t, layout):
    return {"sparse_coo": t.to_sparse, "sparse_csr": t.to_sparse_csr, "mkldnn": t.to_mkldnn}[layout]()


@needs_torch
# to_sparse_csr() warns that CSR support is beta; the CSR tensor is only an input here, to be refused.
@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state:UserWarning")
@pytest.mark.parametrize(
    ("arg", "layout"),
    [(arg, layout) for arg in ("input", "weight", "bias") for layout in ("sparse_coo", "sparse_csr", "mkldnn")
     if (arg, layout) != ("bias", "sparse_csr")],  # a 1-D tensor has no CSR form
)  # fmt: skip
def test_torch_non_strided_layouts_get_a_named_error(arg, layout):
    """Sparse COO/CSR and mkldnn tensors have no strided memory: TypeError naming the op, argument and layout."""
    if layout == "mkldnn" and not torch.backends.mkldnn.is_available():
        pytest.skip("torch built without mkldnn")
    args = {"input": torch.randn(2, 4), "weight": torch.randn(3, 4), "bias": torch.randn(3)}
    args[arg] = _non_strided(args[arg], layout)
    with pytest.raises(TypeError, match=rf"linear\(\): {arg} has layout torch\._?{layout}"):
        LF.linear(args["input"], args["weight"], args["bias"])
    with pytest.raises(TypeError, match=rf"neuron\(\): {arg} has layout"):
        LF.neuron(args["input"], args["weight"], args["bias"])
    if arg == "input":
        with pytest.raises(TypeError, match=rf"step\(\): input has layout torch\._?{layout}"):
            LF.step(args["input"])


@needs_torch
def test_torch_non_strided_layouts_named_on_the_dispatcher_path():
    """Off the eager fast path (here under a TorchFunctionMode) the registered ops would fail in the dispatcher
    ("Could not run 'linneuron::linear' with arguments from the 'SparseCPU' backend"); functional names the argument."""
    from torch.overrides import TorchFunctionMode

    class PassThrough(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    with PassThrough():
        with pytest.raises(TypeError, match=r"linear\(\): weight has layout torch\.sparse_coo"):
            LF.linear(torch.randn(2, 4), torch.randn(3, 4).to_sparse())
        with pytest.raises(TypeError, match=r"neuron\(\): bias has layout torch\.sparse_coo"):
            LF.neuron(torch.randn(2, 4), torch.randn(3, 4), torch.randn(3).to_sparse())
        with pytest.raises(TypeError, match=r"step\(\): input has layout torch\.sparse_coo"):
            LF.step(torch.randn(3, 4).to_sparse())


@needs_torch
@pytest.mark.parametrize("arg", ["input", "weight", "bias"])
def test_torch_zero_tensor_operand(arg):
    """A ZeroTensor (torch._efficientzerotensor; some autograd formulas produce them) has data_ptr() 0: the kernels
    read it as the zeros it stands for (eager fast path and registered op)."""
    g = torch.Generator().manual_seed(9)
    args = {
        "input": torch.randn(5, 4, generator=g, dtype=torch.float64),
        "weight": torch.randn(3, 4, generator=g, dtype=torch.float64),
        "bias": torch.randn(3, generator=g, dtype=torch.float64),
    }
    args[arg] = torch._efficientzerotensor(args[arg].shape, dtype=torch.float64)
    want = torch_F.linear(*(torch.zeros_like(t) if t._is_zerotensor() else t for t in args.values()))
    torch.testing.assert_close(LF.linear(*args.values()), want)
    torch.testing.assert_close(torch.ops.linneuron.linear(*args.values()), want)
    if arg == "input":
        z = args["input"]
        np.testing.assert_array_equal(LF.step(z).numpy(), np.ones((5, 4)))
        torch.testing.assert_close(_kernels.bias_grad(z), torch.zeros(4, dtype=torch.float64))
        torch.testing.assert_close(_kernels.step_backward(z, torch.ones_like(z), 3, 2.0), torch.zeros_like(z.clone()))


@needs_torch
def test_torch_misaligned_operands_in_backward_and_step_backward():
    """Misaligned memory (from_numpy at an odd byte offset) is copied before the kernels read it, in backward too."""
    misaligned = TORCH_LAYOUTS["misaligned"]
    g = torch.Generator().manual_seed(10)
    x0, w0 = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    gy = torch.randn(5, 3, generator=g, dtype=torch.float64)
    grads = []
    for fn in (LF.linear, torch_F.linear):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        fn(x, w).backward(misaligned(gy))
        grads.append((x.grad, w.grad))
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        _kernels.step_backward(misaligned(gy), misaligned(z), 3, 2.0), _kernels.step_backward(gy, z, 3, 2.0)
    )
    torch.testing.assert_close(_kernels.bias_grad(misaligned(gy)), gy.sum(0))
