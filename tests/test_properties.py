"""Property-based tests (hypothesis) of the NumPy API: random shapes, strides, layouts, dtypes and values vs float64.

Profiles are defined in _hardening.py: "ci" (default, 500 examples per property), "thorough" (10,000), "dev" (50);
choose with HYPOTHESIS_PROFILE=thorough. They are applied per test, so a profile another module loads globally
(torch's test utilities load a 10-example one) does not shrink these runs.
"""

from __future__ import annotations

import sys

import linneuron
import numpy as np
import pytest
from _hardening import PROFILE, PROPERTY_SETTINGS, assert_linear_close, assert_neuron_matches, reference_step
from hypothesis import given, note, settings
from hypothesis import strategies as st
from linneuron import numpy as lnp

DTYPES = st.sampled_from([np.float32, np.float64])
VALUE_KINDS = ["normal", "uniform", "integers", "wide_exponents", "sparse"]


def _values(rng: np.random.Generator, kind: str, shape, dtype) -> np.ndarray:
    if kind == "normal":
        v = rng.standard_normal(shape)
    elif kind == "uniform":
        v = rng.uniform(-1, 1, shape)
    elif kind == "integers":  # exact arithmetic: small integers sum exactly in both dtypes
        v = rng.integers(-4, 5, shape).astype(np.float64)
    elif kind == "wide_exponents":  # magnitudes from 1e-12 to 1e12 (no overflow in float32 sums of <= 80 terms)
        v = rng.standard_normal(shape) * 10.0 ** rng.integers(-12, 13, shape)
    else:  # mostly zeros, signed
        v = np.where(rng.random(shape) < 0.8, 0.0, rng.standard_normal(shape))
        v = np.where(rng.random(shape) < 0.5, -v, v)
    return v.astype(dtype)


@st.composite
def layouts(draw, shape, dtype):
    """An array of ``shape`` and ``dtype`` in a random memory layout, with random values.

    Layouts: any permutation of axes in memory, steps of ±1..3 per axis, broadcast (stride-0) axes, an offset into
    a bigger buffer, a misaligned start, a non-native byte order, read-only.
    """
    ndim = len(shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(VALUE_KINDS))
    broadcast = [draw(st.booleans()) and draw(st.booleans()) for _ in shape]  # ~1 axis in 4
    steps = [draw(st.sampled_from([1, 1, 2, 3, -1, -2])) for _ in shape]
    order = draw(st.permutations(range(ndim))) if ndim > 1 else list(range(ndim))
    offset = draw(st.integers(0, 3))
    misalign = draw(st.booleans()) and draw(st.booleans())
    swap = draw(st.booleans()) and draw(st.booleans())
    read_only = draw(st.booleans())

    core_shape = [1 if b else s for s, b in zip(shape, broadcast)]
    stored_shape = [max(1, (s - 1) * abs(st_) + 1) for s, st_ in zip(core_shape, steps)]
    mem_shape = [stored_shape[i] for i in order]
    n_mem = int(np.prod(mem_shape)) if mem_shape else 1
    raw = np.zeros((n_mem + offset) * np.dtype(dtype).itemsize + (1 if misalign else 0), dtype=np.uint8)
    mem_dtype = np.dtype(dtype).newbyteorder(">" if sys.byteorder == "little" else "<") if swap else np.dtype(dtype)
    flat = raw[(1 if misalign else 0) :].view(mem_dtype)[offset : offset + n_mem]
    mem = flat.reshape(mem_shape)
    mem[...] = _values(rng, kind, mem_shape, dtype)
    arr = mem.transpose(np.argsort(order)) if ndim > 1 else mem
    if ndim:  # (indexing a 0-d array with () would give a scalar)
        arr = arr[tuple(slice(None, None, st_) for st_ in steps)]
        arr = arr[tuple(slice(0, s) for s in core_shape)]
    if any(broadcast):
        arr = np.broadcast_to(arr, shape)
    elif read_only:
        arr.flags.writeable = False
    assert arr.shape == tuple(shape), (arr.shape, shape)
    return arr


@st.composite
def gemm_problems(draw):
    dtype = draw(DTYPES)
    lead = draw(st.lists(st.integers(0, 9), min_size=0, max_size=3))
    if not lead or draw(st.booleans()):
        lead = [draw(st.integers(0, 40))]
    k = draw(st.integers(0, 80))
    n = draw(st.integers(0, 40))
    x = draw(layouts(tuple(lead) + (k,), dtype))
    w = draw(layouts((n, k), dtype))
    b = draw(st.none() | layouts((n,), dtype))
    note(f"x {x.shape} strides {x.strides} aligned={x.flags.aligned} byteorder={x.dtype.byteorder!r}")
    note(f"weight {w.shape} strides {w.strides}; bias {None if b is None else (b.shape, b.strides)}")
    return x, w, b


@PROPERTY_SETTINGS
@given(gemm_problems())
def test_linear_matches_float64_reference(problem):
    x, w, b = problem
    out = lnp.linear(x, w, b)
    assert out.dtype == x.dtype.newbyteorder("=") and out.flags.c_contiguous
    assert_linear_close(out, x, w, b)


@PROPERTY_SETTINGS
@given(gemm_problems())
def test_neuron_is_step_of_the_reference_sum(problem):
    x, w, b = problem
    out = lnp.neuron(x, w, b)
    assert out.dtype == x.dtype.newbyteorder("=")
    assert_neuron_matches(out, x, w, b)


SPECIALS = [0.0, -0.0, np.nan, np.inf, -np.inf, 5e-324, -5e-324, 1e-40, -1e-40, 1.0, -1.0]


@st.composite
def step_inputs(draw):
    dtype = draw(DTYPES)
    shape = tuple(draw(st.lists(st.integers(0, 7), min_size=0, max_size=4)))
    z = draw(layouts(shape, dtype))
    if z.size and z.flags.writeable:
        flat_positions = draw(st.lists(st.integers(0, z.size - 1), max_size=6))
        for pos in flat_positions:
            with np.errstate(under="ignore", over="ignore"):
                z[np.unravel_index(pos, shape)] = dtype(draw(st.sampled_from(SPECIALS)))
    return z


@PROPERTY_SETTINGS
@given(step_inputs())
def test_step_matches_numpy_heaviside(z):
    out = lnp.step(z)
    assert out.shape == z.shape and out.dtype == z.dtype.newbyteorder("=")
    np.testing.assert_array_equal(out, reference_step(z))


@settings(PROPERTY_SETTINGS, max_examples=max(500, PROPERTY_SETTINGS.max_examples // 4))
@given(gemm_problems(), st.integers(1, 4))
def test_results_do_not_depend_on_thread_count(problem, threads):
    x, w, b = problem
    linneuron.set_num_threads(1)
    single = lnp.linear(x, w, b), lnp.neuron(x, w, b)
    linneuron.set_num_threads(threads)
    many = lnp.linear(x, w, b), lnp.neuron(x, w, b)
    linneuron.set_num_threads(None)
    np.testing.assert_array_equal(many[0], single[0])
    np.testing.assert_array_equal(many[1], single[1])


def _as_torch(arr: np.ndarray):
    """The same values as a torch tensor with the same element strides where torch can hold them (aligned, native,
    writable, non-negative strides; other layouts are copied). Empty arrays become contiguous: the torch layer's
    known bug with empty, non-collapsible inputs is recorded in test_bad_input.py and kept out of this property."""
    import torch

    if arr.size == 0:
        return torch.from_numpy(np.zeros(arr.shape, dtype=arr.dtype.newbyteorder("=")))
    if not (arr.flags.aligned and arr.dtype.isnative and arr.flags.writeable) or any(s < 0 for s in arr.strides):
        arr = np.array(arr, dtype=arr.dtype.newbyteorder("="))
    return torch.from_numpy(arr)


@PROPERTY_SETTINGS
@given(gemm_problems(), st.sampled_from(["linear", "neuron"]))
def test_functional_forward_and_gradients_match_float64(problem, op):
    """linneuron.functional on random strided tensors: the forward as the float64 reference, and for linear the
    gradients of input, weight and bias as dX = dY W, dW = dYᵀ X, db = sum dY in float64 (K-scaled tolerance)."""
    torch = pytest.importorskip("torch")
    import linneuron.functional as LF

    x, w, b = (None if a is None else _as_torch(a) for a in problem)
    if op == "neuron":
        assert_neuron_matches(LF.neuron(x, w, b).numpy(), *problem)
        return
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in (x, w, b)]
    out = LF.linear(*leaves)
    assert_linear_close(out.detach().numpy(), *problem)
    if out.numel() == 0:
        return
    native = problem[0].dtype.newbyteorder("=")
    grad_out = np.random.default_rng(out.numel()).standard_normal(out.shape).astype(native)
    ours = torch.autograd.grad(out, [t for t in leaves if t is not None], torch.from_numpy(grad_out))
    n, k = w.shape
    rows = out.numel() // n
    gy = grad_out.reshape(rows, n).astype(np.float64)
    x2 = np.asarray(problem[0], dtype=np.float64).reshape(rows, k)
    w64 = np.asarray(problem[1], dtype=np.float64)
    expected = [(gy @ w64).reshape(problem[0].shape), gy.T @ x2, gy.sum(0)]
    bounds = [(np.abs(gy) @ np.abs(w64)).reshape(problem[0].shape), np.abs(gy).T @ np.abs(x2), np.abs(gy).sum(0)]
    eps, tiny = np.finfo(native).eps, np.finfo(native).tiny
    longest = np.sqrt(max(1, rows, n, k))
    for got, want, bound in zip(ours, expected, bounds):
        assert got.shape == want.shape and got.dtype == out.dtype
        assert np.all(np.abs(got.double().numpy() - want) <= 8 * eps * longest * bound + tiny)


def test_profile_is_registered():
    """Our profile is in force for the property tests even if another module loaded a smaller one globally."""
    assert PROFILE in {"ci", "thorough", "dev"}
    assert settings.get_profile("linneuron-ci").max_examples >= 500
    assert settings.get_profile("linneuron-thorough").max_examples > settings.get_profile("linneuron-ci").max_examples
    assert PROPERTY_SETTINGS is settings.get_profile(f"linneuron-{PROFILE}")
    for test in (test_linear_matches_float64_reference, test_neuron_is_step_of_the_reference_sum,
                 test_step_matches_numpy_heaviside, test_results_do_not_depend_on_thread_count,
                 test_functional_forward_and_gradients_match_float64):  # fmt: skip
        applied = test._hypothesis_internal_use_settings  # what @settings attached (hypothesis internals)
        assert applied.max_examples >= PROPERTY_SETTINGS.max_examples or PROFILE == "dev"
        if PROFILE == "ci":
            assert applied.max_examples >= 500


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
