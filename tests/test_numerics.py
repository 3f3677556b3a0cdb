"""Numerics of the NumPy API: NaN/Inf as torch propagates them, ±0.0 at the step, subnormals, determinism.

Determinism, as measured here: for a given thread count the results are identical run to run, and they are also
identical across thread counts (1 to 8), because every output element is summed by one micro-kernel in a fixed
k order whatever the split of work. Results can differ between micro-kernel families (LINNEURON_ISA), which may
fuse multiply-adds differently.
"""

from __future__ import annotations

import linneuron
import numpy as np
import pytest
from _hardening import assert_linear_close, linear_tolerance, reference_linear, reference_step
from linneuron import numpy as lnp

torch = pytest.importorskip("torch")

DTYPES = [np.float32, np.float64]
INF, NAN = np.inf, np.nan


def _base(dtype, m=6, n=4, k=5, seed=0):
    rng = np.random.default_rng(seed)
    # Values in [0.5, 1.5): no zero products except those a case puts there on purpose.
    x = rng.uniform(0.5, 1.5, (m, k)).astype(dtype)
    w = rng.uniform(0.5, 1.5, (n, k)).astype(dtype) * np.where(rng.random((n, k)) < 0.5, -1, 1).astype(dtype)
    b = rng.uniform(-1, 1, n).astype(dtype)
    return x, w, b


def _case(name, dtype):
    """Inputs with one kind of special value placed on purpose; returns (x, weight, bias)."""
    x, w, b = _base(dtype)
    big = np.finfo(dtype).max / 2
    if name == "nan_in_x":
        x[1, 2] = NAN
    elif name == "nan_in_weight":
        w[2, 0] = NAN
    elif name == "nan_in_bias":
        b[3] = NAN
    elif name == "inf_in_x":
        x[0, 1] = INF
    elif name == "neg_inf_in_weight":
        w[1, 4] = -INF
    elif name == "inf_in_bias":
        b[0] = -INF
    elif name == "inf_times_zero":
        x[0, 1] = INF
        w[1, 1] = 0.0
    elif name == "inf_minus_inf":
        x[2, 0] = INF
        x[2, 1] = INF
        w[0, 0], w[0, 1] = 1.0, -1.0
    elif name == "inf_sum_plus_neg_inf_bias":
        x[3, 0] = INF
        w[2, 0] = 1.0
        b[2] = -INF
    elif name == "nan_times_zero_weight_row":
        x[4, :] = NAN
        w[0, :] = 0.0
    elif name == "inf_in_x_zero_weight_row":
        x[5, 2] = INF
        w[3, :] = 0.0
    elif name in ("overflow_to_inf", "overflow_negative"):
        # Row 3 times weight row 1: every term is at least max/2 with one sign, so the sum overflows in any order
        # (and with or without FMA). The other weight rows are scaled down so that no other partial sum can
        # overflow: there the result would depend on the summation order, which differs between kernels.
        x[3, :] = big
        w *= np.asarray(1 / 64, dtype)
        w[1, :] = (np.abs(w[1, :]) * 64 + 1) * (1 if name == "overflow_to_inf" else -1)
    else:
        raise AssertionError(name)
    return x, w, b


CASES = [
    "nan_in_x",
    "nan_in_weight",
    "nan_in_bias",
    "inf_in_x",
    "neg_inf_in_weight",
    "inf_in_bias",
    "inf_times_zero",
    "inf_minus_inf",
    "inf_sum_plus_neg_inf_bias",
    "nan_times_zero_weight_row",
    "inf_in_x_zero_weight_row",
    "overflow_to_inf",
    "overflow_negative",
]


def _assert_specials_match(actual: np.ndarray, expected: np.ndarray) -> None:
    """Same NaN positions, same ±Inf positions; finite entries are compared separately."""
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg="NaN positions differ")
    np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected), err_msg="+Inf positions differ")
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected), err_msg="-Inf positions differ")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_linear_specials_propagate_as_torch(case, dtype):
    x, w, b = _case(case, dtype)
    expected = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)).numpy()
    assert not np.isfinite(expected).all(), "the case must produce a special value"
    actual = lnp.linear(x, w, b)
    _assert_specials_match(actual, expected)
    finite = np.isfinite(expected)
    with np.errstate(all="ignore"):  # the float64 reference meets the same Inf and NaN on purpose
        ref = reference_linear(x, w, b)
        tol = linear_tolerance(x, w, b, dtype)
    assert np.all(np.abs(actual[finite] - ref[finite]) <= tol[finite])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_neuron_specials(case, dtype):
    """NaN sums stay NaN; +Inf fires (1), -Inf does not (0); the rest is H of torch's linear."""
    x, w, b = _case(case, dtype)
    z = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)).numpy()
    actual = lnp.neuron(x, w, b)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(z))
    decided = ~np.isnan(z)
    np.testing.assert_array_equal(actual[decided], (z[decided] >= 0).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_deep_in_a_large_problem(dtype):
    """A NaN in a late k block and a middle row block of a packed, multi-threaded GEMM poisons exactly its row."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((150, 700)).astype(dtype)
    w = rng.standard_normal((90, 700)).astype(dtype)
    x[77, 650] = NAN
    w[41, 3] = INF
    expected = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    actual = lnp.linear(x, w)
    _assert_specials_match(actual, expected)
    assert np.isnan(actual[77]).all()


def _step_values(dtype):
    info = np.finfo(dtype)
    sub = info.smallest_subnormal
    return np.array(
        [NAN, -NAN, INF, -INF, 0.0, -0.0, sub, -sub, info.tiny, -info.tiny, info.max, -info.max, 1.0, -1.0,
         np.nextafter(dtype(0), dtype(-1)), np.nextafter(dtype(0), dtype(1))],
        dtype=dtype,
    )  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
def test_step_special_values(dtype):
    z = _step_values(dtype)
    out = lnp.step(z)
    np.testing.assert_array_equal(out, reference_step(z))  # NaN == NaN here
    assert np.isnan(out[:2]).all()
    np.testing.assert_array_equal(out[4:6], [1.0, 1.0])  # H(+0.0) = H(-0.0) = 1
    np.testing.assert_array_equal(out[6:8], [1.0, 0.0])  # subnormals are not flushed to zero
    assert not np.signbit(out[~np.isnan(out)]).any(), "zeros from the step are +0.0"


@pytest.mark.parametrize("dtype", DTYPES)
def test_step_matches_torch_heaviside_except_nan(dtype):
    """torch.heaviside(z, 1) agrees everywhere but NaN, where torch gives 0 and linneuron (like numpy) keeps NaN."""
    z = _step_values(dtype)
    torch_h = torch.heaviside(torch.from_numpy(z), torch.ones((), dtype=torch.from_numpy(z).dtype)).numpy()
    out = lnp.step(z)
    not_nan = ~np.isnan(z)
    np.testing.assert_array_equal(out[not_nan], torch_h[not_nan])
    assert np.isnan(out[~not_nan]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_neuron_at_the_threshold(dtype):
    """Sums that are exactly ±0.0 fire; sums one subnormal below zero do not (no flush-to-zero in the GEMM)."""
    sub = np.finfo(dtype).smallest_subnormal
    x = np.array([[1.0, -1.0], [0.0, -0.0], [-0.0, -0.0], [sub, 0.0], [-sub, 0.0], [2 * sub, -sub]], dtype=dtype)
    w = np.array([[1.0, 1.0]], dtype=dtype)
    np.testing.assert_array_equal(lnp.neuron(x, w)[:, 0], [1.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    # Through the bias alone (K = 0): a bias of -0.0 fires, -subnormal does not.
    for bias, fires in [(-0.0, 1.0), (0.0, 1.0), (-sub, 0.0), (sub, 1.0)]:
        out = lnp.neuron(np.zeros((2, 0), dtype), np.zeros((1, 0), dtype), np.array([bias], dtype))
        np.testing.assert_array_equal(out, [[fires], [fires]])
    # And with a threshold: x·w - b lands exactly on 0.
    np.testing.assert_array_equal(lnp.neuron(np.array([[0.5, 0.25]], dtype), np.array([[2.0, 4.0]], dtype),
                                             np.array([-2.0], dtype)), [[1.0]])  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
def test_subnormal_results_are_exact(dtype):
    """Products and sums of subnormal multiples are exact in IEEE arithmetic; flush-to-zero would zero them."""
    unit = np.finfo(dtype).smallest_subnormal
    rng = np.random.default_rng(2)
    x = (rng.integers(-8, 9, (20, 30)) * unit).astype(dtype)  # subnormal (or zero) values
    w = rng.integers(-3, 4, (10, 30)).astype(dtype)
    out = lnp.linear(x, w)
    expected = ((x.astype(np.float64) / float(unit)) @ w.astype(np.float64).T) * float(unit)
    np.testing.assert_array_equal(out.astype(np.float64), expected)
    assert np.count_nonzero(out) > 0
    torch_out = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    np.testing.assert_array_equal(out, torch_out)


@pytest.mark.parametrize("dtype", DTYPES)
def test_subnormal_inputs_with_normal_weights(dtype):
    tiny = np.finfo(dtype).tiny
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((16, 64)) * tiny / 8).astype(dtype)  # mostly subnormal
    w = rng.standard_normal((8, 64)).astype(dtype)
    assert (np.abs(x[x != 0]) < tiny).mean() > 0.5
    assert_linear_close(lnp.linear(x, w), x, w)


# ---- determinism ---------------------------------------------------------------------------------------------

DETERMINISM_SHAPES = [(300, 40, 600), (1, 513, 1100), (700, 3, 130), (37, 41, 2100), (64, 64, 64)]


def _problem(shape, dtype, seed=4):
    m, n, k = shape
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((m, k)).astype(dtype),
        rng.standard_normal((n, k)).astype(dtype),
        rng.standard_normal(n).astype(dtype),
    )


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("dtype", DTYPES)
def test_deterministic_run_to_run(dtype, threads):
    linneuron.set_num_threads(threads)
    for shape in DETERMINISM_SHAPES:
        x, w, b = _problem(shape, dtype)
        first = (lnp.linear(x, w, b), lnp.neuron(x, w, b), lnp.step(x))
        for _ in range(3):
            again = (lnp.linear(x, w, b), lnp.neuron(x, w, b), lnp.step(x))
            for a, f in zip(again, first):
                np.testing.assert_array_equal(a, f)


@pytest.mark.parametrize("dtype", DTYPES)
def test_deterministic_across_thread_counts(dtype):
    for shape in DETERMINISM_SHAPES:
        x, w, b = _problem(shape, dtype)
        results = {}
        for threads in (1, 2, 3, 4, 8):
            linneuron.set_num_threads(threads)
            results[threads] = (lnp.linear(x, w, b), lnp.neuron(x, w, b))
        for threads, (lin, neu) in results.items():
            np.testing.assert_array_equal(lin, results[1][0], err_msg=f"{shape}: linear, {threads} threads vs 1")
            np.testing.assert_array_equal(neu, results[1][1], err_msg=f"{shape}: neuron, {threads} threads vs 1")
        assert_linear_close(results[1][0], x, w, b)


# ---- the same specials through the torch API ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_functional_specials_match_torch(case, dtype):
    import linneuron.functional as LF

    x, w, b = (torch.from_numpy(a) for a in _case(case, dtype))
    expected = torch.nn.functional.linear(x, w, b)
    _assert_specials_match(LF.linear(x, w, b).numpy(), expected.numpy())
    neuron = LF.neuron(x, w, b)
    np.testing.assert_array_equal(torch.isnan(neuron).numpy(), torch.isnan(expected).numpy())
    decided = ~torch.isnan(expected)
    assert torch.equal(neuron[decided], (expected[decided] >= 0).to(neuron.dtype))


@pytest.mark.parametrize("surrogate", [None, "ste", "sigmoid", "atan"])
def test_functional_step_specials_and_surrogate_gradients(surrogate):
    """Forward: exact H with NaN kept; backward: finite surrogate values at ±0, subnormals and ±Inf, NaN at NaN."""
    import linneuron.functional as LF

    z = torch.from_numpy(_step_values(np.float64)).requires_grad_()
    out = LF.step(z, surrogate=surrogate)
    np.testing.assert_array_equal(out.detach().numpy(), reference_step(z.detach().numpy()))
    out.backward(torch.ones_like(out))
    grad = z.grad.numpy()
    finite_z = np.isfinite(z.detach().numpy())
    assert np.isfinite(grad[finite_z]).all(), grad
    if surrogate is not None:
        assert grad[4] == grad[5] > 0, "the surrogate derivative is the same at +0.0 and -0.0, and positive"
    assert (grad[2:4] == 0).all(), "at ±Inf the surrogate derivative vanishes"
    if surrogate is None:
        assert (grad == 0).all(), "the exact derivative is 0 everywhere, NaN inputs included"
    else:
        assert np.isnan(grad[:2]).all(), "a NaN input gives a NaN gradient"
