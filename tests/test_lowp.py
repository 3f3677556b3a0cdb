"""bfloat16 and float16 on the CPU: GEMM, step, surrogate backward, bias gradient, autocast, opcheck.

References: float64 products rounded once to the dtype (with a bound for float32 accumulation and float16
subnormals), torch's own conversions (bit-exact where the product is exact in float32), nn.Linear in the same dtype.
Each test runs on every micro-kernel family this CPU supports (the conversion kernels follow the family).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import linneuron
import numpy as np
import pytest
import torch
from linneuron import _core, ops
from linneuron import functional as LF

LOWP = [torch.bfloat16, torch.float16]
IDS = ["bf16", "fp16"]
FAMILIES = list(_core.supported_isas())


@pytest.fixture(params=FAMILIES)
def family(request):
    before = _core.active_isa()
    assert _core.set_active_isa(request.param)
    yield request.param
    assert _core.set_active_isa(before)


def _eps(dtype):
    return torch.finfo(dtype).eps


def _bound(x, w, b, dtype):
    """|y - round(ref)| bound: half an ulp of the result's rounding plus float32 accumulation, plus a subnormal."""
    mag = x.double().abs() @ w.double().abs().T
    if b is not None:
        mag = mag + b.double().abs()
    k = max(1, w.shape[1])
    return _eps(dtype) * mag + 4 * k * 2.0**-24 * mag + torch.finfo(dtype).smallest_normal * 2.0**-10


def _check_linear(y, x, w, b, dtype):
    ref = x.double() @ w.double().T + (0 if b is None else b.double())
    assert y.dtype == dtype and y.shape == ref.shape
    err = (y.double() - ref).abs()
    bound = _bound(x, w, b, dtype)
    assert torch.all(err <= bound), f"max excess {(err - bound).max().item()}"


SHAPES = [(1, 4096, 512), (1, 7, 3), (3, 33, 17), (4, 64, 40), (5, 64, 40), (64, 64, 64), (130, 300, 70),
          (16, 256, 256), (1000, 2, 1), (257, 1, 9), (6, 0, 5),
          (300, 64, 1), (300, 200, 2), (300, 200, 3)]  # few outputs: dots (long k, one or two outputs) or row blocks


@pytest.mark.parametrize("dtype", LOWP, ids=IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{m}x{k}->{n}" for m, k, n in SHAPES])
def test_linear_against_float64_and_nn_linear(family, dtype, shape):
    m, k, n = shape
    g = torch.Generator().manual_seed(m * 1000 + k + n)
    x = torch.randn(m, k, generator=g).to(dtype)
    w = torch.randn(n, k, generator=g).to(dtype)
    b = torch.randn(n, generator=g).to(dtype)
    for bias in (b, None):
        y = LF.linear(x, w, bias)
        _check_linear(y, x, w, bias, dtype)
        torch_y = torch.nn.functional.linear(x, w, bias)
        # torch rounds the same float32 sums: at most one ulp of the result apart (or the accumulation bound).
        assert torch.all((y.double() - torch_y.double()).abs() <= 2 * _bound(x, w, bias, dtype))


@pytest.mark.parametrize("dtype", LOWP, ids=IDS)
def test_strided_batched_and_vector_inputs(family, dtype):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(40, 24, generator=g).to(dtype)
    b = torch.randn(80, generator=g).to(dtype)[::2]
    cases = [
        torch.randn(24, 9, generator=g).to(dtype).t(),  # column-major input
        torch.randn(9, 48, generator=g).to(dtype)[:, ::2],  # strided columns
        torch.randn(2, 3, 24, generator=g).to(dtype),  # leading dims
        torch.randn(24, generator=g).to(dtype),  # 1-D
        torch.randn(1, 24, generator=g).to(dtype).expand(7, 24),  # stride-0 rows
    ]
    for x in cases:
        for weight in (w, torch.randn(24, 40, generator=g).to(dtype).t()):  # row- and column-major weight
            y = LF.linear(x, weight, b)
            x2 = x.reshape(-1, 24)
            _check_linear(y.reshape(-1, 40), x2, weight, b, dtype)


@pytest.mark.parametrize("dtype", LOWP, ids=IDS)
def test_exact_products_round_once_like_torch(family, dtype):
    """K = 1: x*w is exact in float32, so the result must be torch's float32 -> dtype rounding, bit for bit, including
    float16 overflow to inf, subnormals and ties (round to nearest even). (A zero product sums to +0, as in any GEMM
    that starts its accumulators at +0, so zeros compare by value.)"""
    g = torch.Generator().manual_seed(2)
    scale = torch.tensor([1e-6, 1e-3, 1.0, 30.0, 300.0, 1e4]).repeat_interleave(400)
    x = (torch.randn(scale.numel(), 1, generator=g) * scale[:, None]).to(dtype)
    w = torch.randn(37, 1, generator=g).to(dtype)
    for m in (x, x[:3]):  # blocked path and the convert-on-load dot path
        y = LF.linear(m, w)
        expected = (m.float() * w.float().T).to(dtype)
        assert torch.equal(y, expected)
    # bias added in float32 before the single rounding
    b = torch.randn(37, generator=g).to(dtype)
    y = LF.linear(x, w, b)
    expected = ((x.float() * w.float().T) + b.float()).to(dtype)
    assert torch.equal(y, expected)


def _all_values(dtype):
    return torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)


@pytest.mark.parametrize("dtype", LOWP, ids=IDS)
def test_step_on_every_bit_pattern(dtype):
    z = _all_values(dtype)
    y = LF.step(z)
    assert y.dtype == dtype
    nan = torch.isnan(z)
    assert torch.equal(torch.isnan(y), nan)
    assert torch.equal(y[~nan], (z[~nan] >= 0).to(dtype))  # -0 >= 0: H(-0) = 1
    assert LF.step(torch.tensor([-0.0, 0.0], dtype=dtype)).tolist() == [1.0, 1.0]
    # fused in the GEMM epilogue: the same step
    x = torch.randn(5, 8).to(dtype)
    w = torch.randn(6, 8).to(dtype)
    torch.testing.assert_close(LF.neuron(x, w, None, surrogate=None), (LF.linear(x, w) >= 0).to(dtype), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", LOWP, ids=IDS)
@pytest.mark.parametrize("surrogate", ["ste", "sigmoid", "atan", None])
def test_surrogate_backward_in_dtype(dtype, surrogate):
    z = _all_values(dtype)
    z = z[torch.isfinite(z)]
    g = torch.Generator().manual_seed(3)
    gy = torch.randn(z.shape, generator=g).to(dtype)
    code, alpha = linneuron._surrogate.resolve(surrogate, None, "step")
    out = LF._step_backward(gy, z, code, alpha)
    ref32 = LF._step_backward(gy.float(), z.float(), code, alpha)  # float32 kernel, then one rounding
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref32.to(dtype).float(), rtol=_eps(dtype), atol=0)
    nan = torch.tensor([float("nan")], dtype=dtype)
    if surrogate is not None:
        assert torch.isnan(LF._step_backward(torch.ones(1, dtype=dtype), nan, code, alpha)).all()


@pytest.mark.parametrize("dtype", LOWP, ids=IDS)
def test_gradients_against_nn_linear_same_dtype(family, dtype):
    torch.manual_seed(4)
    ref = torch.nn.Linear(48, 24).to(dtype)
    mine = linneuron.Linear(48, 24).to(dtype)
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(33, 48).to(dtype)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    gy = torch.randn(33, 24).to(dtype)
    ref(xa).backward(gy)
    mine(xb).backward(gy)
    for a, b in ((xa.grad, xb.grad), (ref.weight.grad, mine.weight.grad), (ref.bias.grad, mine.bias.grad)):
        assert a.dtype == b.dtype == dtype
        tol = 4 * _eps(dtype) * (a.double().abs() + 1e-2 * a.double().abs().max()) + 64 * 2.0**-24 * a.abs().max()
        assert torch.all((a.double() - b.double()).abs() <= tol)
    # against float64: db is a rounded float32 sum, dX and dW GEMMs
    db64 = gy.double().sum(0)
    assert torch.all((mine.bias.grad.double() - db64).abs() <= _eps(dtype) * db64.abs() + 33 * 2.0**-24 * 8)
    _check_linear(xb.grad, gy, mine.weight.t(), None, dtype)
    _check_linear(mine.weight.grad, gy.t(), x.t(), None, dtype)


@pytest.mark.parametrize("dtype", LOWP, ids=IDS)
def test_gemm_accumulate_and_strided_bias_grad_in_core(family, dtype):
    code = {torch.bfloat16: _core.BFLOAT16, torch.float16: _core.FLOAT16}[dtype]
    g = torch.Generator().manual_seed(5)
    a = torch.randn(20, 30, generator=g).to(dtype)
    b = torch.randn(30, 10, generator=g).to(dtype)
    c = torch.randn(20, 10, generator=g).to(dtype)
    for rows in (20, 2):  # blocked path, and a short batch
        cc = c[:rows].clone()
        _core.gemm(code, rows, 10, 30, a.data_ptr(), 30, 1, b.data_ptr(), 10, 1, cc.data_ptr(), 10, 1, 0, 1, True,
                   False)  # fmt: skip
        ref = c[:rows].double() + a[:rows].double() @ b.double()
        bound = _bound(a[:rows], b.t(), c[:rows], dtype)
        assert torch.all((cc.double() - ref).abs() <= bound)
    dy = torch.randn(50, 12, generator=g).to(dtype).t()  # column stride != 1
    db = torch.ones(100, dtype=dtype)
    _core.bias_grad(code, 12, 50, dy.data_ptr(), 1, 12, db.data_ptr(), 2, True)
    ref = 1 + dy.double().sum(0)
    assert torch.all((db[::2].double() - ref).abs() <= _eps(dtype) * ref.abs() + 50 * 2.0**-20)
    assert torch.all(db[1::2] == 1)


@pytest.mark.parametrize("dtype", LOWP, ids=IDS)
def test_tall_products_go_through_float32_in_row_blocks(family, dtype):
    """A tall product is converted, multiplied and rounded in blocks of rows sized from L2 (at least 64): over
    several blocks, the last one partial, each block reads its own rows of A (row- or column-major) and adds into
    its own rows of C, and nothing outside C's columns is written."""
    code = {torch.bfloat16: _core.BFLOAT16, torch.float16: _core.FLOAT16}[dtype]
    k, n = 200, 56
    block = max(64, _core.cpu_caches()["l2"] // 2 // (4 * (k + n)) // 16 * 16)
    m = 2 * block + 37
    g = torch.Generator().manual_seed(11)
    x = torch.randn(m, k, generator=g).to(dtype)
    w = torch.randn(n, k, generator=g).to(dtype)
    bias = torch.randn(n, generator=g).to(dtype)
    c0 = torch.randn(m, n + 8, generator=g).to(dtype)
    for a in (x, x.t().contiguous().t()):  # row-major, column-major
        c = c0.clone()
        _core.gemm(code, m, n, k, a.data_ptr(), a.stride(0), a.stride(1), w.data_ptr(), 1, k, c.data_ptr(), n + 8, 1,
                   bias.data_ptr(), 1, True, False)  # fmt: skip
        ref = c0[:, :n].double() + x.double() @ w.double().T + bias.double()
        bound = _bound(x, w, c0[:, :n].double().abs() + bias.double().abs(), dtype)
        assert torch.all((c[:, :n].double() - ref).abs() <= bound)
        assert torch.equal(c[:, n:], c0[:, n:])
    _check_linear(LF.linear(x, w, bias), x, w, bias, dtype)


def _gemm_on_threads(code, m, n, k, a, b, c0, bias):
    """C = c0 + A B + bias, without and with the step, on 1, 2 and 3 threads, into copies of the padded c0 (C is its
    first n columns): [1 thread plain, 1 thread step, 2 threads plain, ...]. Checks that nothing outside C was written
    and that the thread counts give the same bits."""
    outs = []
    for threads in (1, 2, 3):
        linneuron.set_num_threads(threads)
        try:
            for step in (False, True):
                c = c0.clone()
                _core.gemm(code, m, n, k, a.data_ptr(), a.stride(0), a.stride(1), b.data_ptr(), b.stride(0),
                           b.stride(1), c.data_ptr(), c0.stride(0), 1, bias.data_ptr(), 1, True, step)  # fmt: skip
                outs.append(c)
        finally:
            linneuron.set_num_threads(None)
    for c in outs:
        assert torch.equal(c[:, n:], c0[:, n:]), "write outside C"
    for one, other in ((outs[0], outs[2]), (outs[0], outs[4]), (outs[1], outs[3]), (outs[1], outs[5])):
        assert torch.equal(one, other), "thread counts differ"
    return outs


AMX_SHAPES = [(64, 64, 64), (45, 177, 37), (33, 481, 17), (100, 1000, 50), (33, 64, 128), (40, 96, 80), (300, 258, 130),
              (16, 250, 70), (700, 200, 5), (2000, 7, 40), (999, 20, 100), (3000, 3, 90), (5, 300, 200), (3, 40, 700),
              (12, 33, 1000), (200, 64, 300)]  # fmt: skip


@pytest.mark.parametrize("shape", AMX_SHAPES, ids=[f"{m}x{k}->{n}" for m, k, n in AMX_SHAPES])
def test_bfloat16_on_amx_tiles(shape):
    """bfloat16 products from 16 rows (3 for a forward short batch, run transposed), 3 columns and 2^19 FLOPs run
    on AMX tiles where the CPU and OS allow it: partial row and column blocks and k chunks, odd k and k under one
    chunk, row- and column-major operands (W's whole-column gathers and the element packers), X and W read in place
    with NaN between their rows, a padded or column-major C with accumulate, bias and step, 1, 2 and 3 threads bit
    for bit, against float64 and nn.Linear."""
    if "avx512" not in FAMILIES or not _core.lowp_paths()["bfloat16"].startswith("amx"):
        pytest.skip("no AMX-BF16 here (or the OS does not grant the tile state)")
    before = _core.active_isa()
    assert _core.set_active_isa("avx512")
    try:
        m, k, n = shape
        dtype = torch.bfloat16
        g = torch.Generator().manual_seed(m + 7 * k + 31 * n)
        x = torch.randn(m, k, generator=g).to(dtype)
        w = torch.randn(n, k, generator=g).to(dtype)
        b = torch.randn(n, generator=g).to(dtype)
        def nan_spaced(t):  # the same values, rows further apart than their length with NaN between them
            wide = torch.full((t.shape[0], t.shape[1] + 9), float("nan"), dtype=dtype)
            wide[:, : t.shape[1]] = t
            return wide[:, : t.shape[1]]

        for xx in (x, x.t().contiguous().t(), nan_spaced(x)):
            for ww in (w, w.t().contiguous().t(), nan_spaced(w)):
                y = LF.linear(xx, ww, b)
                _check_linear(y, x, w, b, dtype)
                torch_y = torch.nn.functional.linear(x, w, b)
                assert torch.all((y.double() - torch_y.double()).abs() <= 2 * _bound(x, w, b, dtype))
        c0 = torch.randn(m, n + 5, generator=g).to(dtype)
        outs = _gemm_on_threads(_core.BFLOAT16, m, n, k, x, w.t(), c0, b)
        z = c0[:, :n].double() + x.double() @ w.double().T + b.double()
        bound = _bound(x, w, c0[:, :n].double().abs() + b.double().abs(), dtype)
        assert torch.all((outs[0][:, :n].double() - z).abs() <= bound)
        decided = z.abs() > 2 * bound
        assert torch.equal(outs[1][:, :n][decided], (z[decided] >= 0).to(dtype))
        c_cols = c0[:, :n].t().contiguous().t()  # a column-major C: the epilogue's strided stores
        _core.gemm(_core.BFLOAT16, m, n, k, x.data_ptr(), k, 1, w.data_ptr(), 1, k, c_cols.data_ptr(), 1, m,
                   b.data_ptr(), 1, True, False)  # fmt: skip
        assert torch.equal(c_cols, outs[0][:, :n])
    finally:
        assert _core.set_active_isa(before)


def _on_amx():
    if "avx512" not in FAMILIES or not _core.lowp_paths()["bfloat16"].startswith("amx"):
        pytest.skip("no AMX-BF16 here (or the OS does not grant the tile state)")


@pytest.mark.parametrize("m, n", [(64, 1024), (1024, 64)], ids=["transposed", "plain"])
def test_bfloat16_amx_epilogue_rounds_every_bit_pattern(m, n):
    """The AMX path's vector epilogue rounds as f32_to_bf16 does: C + 0 keeps every bfloat16 value (subnormals too,
    which VCVTNEPS2BF16 would flush) and returns each NaN quiet with its sign and payload; 65536 outputs, every
    16-bit pattern once, through the plain and the transposed (short batch) stores."""
    _on_amx()
    before = _core.active_isa()
    assert _core.set_active_isa("avx512")
    try:
        k = 32
        bits = np.arange(1 << 16, dtype=np.uint16)
        bits[0x8000] = 0  # -0 + (+0) is +0: not an identity
        c = torch.from_numpy(bits.view(np.int16).reshape(m, n).copy()).view(torch.bfloat16)
        x = torch.zeros(m, k, dtype=torch.bfloat16)
        w = torch.zeros(n, k, dtype=torch.bfloat16)
        _core.gemm(_core.BFLOAT16, m, n, k, x.data_ptr(), k, 1, w.data_ptr(), 1, k, c.data_ptr(), n, 1, 0, 1, True,
                   False)  # fmt: skip
        got = c.view(torch.int16).numpy().view(np.uint16).ravel()
        nan = (bits & 0x7FFF) > 0x7F80
        assert np.array_equal(got[~nan], bits[~nan])
        assert np.array_equal(got[nan], bits[nan] | 0x40)
    finally:
        assert _core.set_active_isa(before)


def test_bfloat16_amx_propagates_nan_and_inf():
    """NaN and infinity in X reach the same outputs on AMX tiles as on the float32 path, through bias and step."""
    _on_amx()
    before = _core.active_isa()
    try:
        m, k, n = 48, 70, 40
        g = torch.Generator().manual_seed(5)
        x = torch.randn(m, k, generator=g).bfloat16()
        w = torch.randn(n, k, generator=g).bfloat16()
        b = torch.randn(n, generator=g).bfloat16()
        x[3, 5] = float("nan")
        x[10, 0] = float("inf")
        x[20, 69] = -float("inf")
        results = {}
        for family in ("avx512", "portable"):
            assert _core.set_active_isa(family)
            results[family] = (LF.linear(x, w, b), LF.neuron(x, w, b, surrogate=None))
        for ours, ref in zip(results["avx512"], results["portable"]):
            assert torch.equal(ours.isnan(), ref.isnan())
            assert torch.equal(ours.isinf(), ref.isinf())
            assert torch.equal(ours[ours.isinf()], ref[ref.isinf()])
            assert ours.isnan().sum() >= n
            assert torch.all((ours.view(torch.int16)[ours.isnan()] & 0x40) != 0), "NaN not quiet"
        assert results["avx512"][0].isinf().sum() >= 2 * n  # rows 10 and 20 (the step makes them 0 or 1)
    finally:
        assert _core.set_active_isa(before)


@pytest.mark.parametrize("dtype", LOWP, ids=IDS)
def test_swap_linear_on_a_low_precision_model(dtype):
    torch.manual_seed(6)
    model = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).to(dtype)
    x = torch.randn(8, 20).to(dtype)
    expected = model(x)
    linneuron.swap_linear(model)
    assert isinstance(model[0], linneuron.Linear)
    got = model(x)
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected, rtol=4 * _eps(dtype), atol=4 * _eps(dtype))


@pytest.mark.parametrize("dtype", LOWP, ids=IDS)
def test_cpu_autocast_matches_nn_linear(dtype):
    torch.manual_seed(7)
    ref = torch.nn.Linear(64, 32)
    mine = linneuron.Linear(64, 32)
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(9, 64)
    with torch.autocast("cpu", dtype=dtype):
        a, b = ref(x), mine(x)
        mixed_a, mixed_b = ref(x.to(dtype)), mine(x.to(dtype))  # autocast accepts mixed float dtypes, as F.linear
        fused = LF.neuron(x, mine.weight, mine.bias, surrogate=None)
        f64 = mine.double()(x.double())  # autocast leaves float64 alone, as torch does
    mine.float()
    assert a.dtype == b.dtype == mixed_a.dtype == mixed_b.dtype == fused.dtype == dtype
    assert f64.dtype == torch.float64
    torch.testing.assert_close(b, a, rtol=2 * _eps(dtype), atol=2 * _eps(dtype))
    torch.testing.assert_close(mixed_b, mixed_a, rtol=2 * _eps(dtype), atol=2 * _eps(dtype))
    # gradients reach the float32 parameters in float32
    xr = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=dtype):
        mine(xr).float().square().sum().backward()
    assert xr.grad.dtype == torch.float32 and mine.weight.grad.dtype == torch.float32
    assert torch.isfinite(xr.grad).all() and mine.weight.grad.abs().sum() > 0
    # compiled under autocast: the same dtype
    with torch.autocast("cpu", dtype=dtype):
        assert ops.linear(x, mine.weight, mine.bias).dtype == dtype


def test_numpy_float16():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((7, 19)).astype(np.float16)
    w = rng.standard_normal((5, 19)).astype(np.float16)
    b = rng.standard_normal(5).astype(np.float16)
    y = linneuron.numpy.linear(x, w, b)
    assert y.dtype == np.float16
    _check_linear(torch.from_numpy(y), torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), torch.float16)
    z = np.array([-1.0, -0.0, 0.0, np.nan, 2.0], np.float16)
    s = linneuron.numpy.step(z)
    assert s.dtype == np.float16 and s[:3].tolist() == [0.0, 1.0, 1.0] and math.isnan(s[3]) and s[4] == 1
    n = linneuron.numpy.neuron(x, w, b)
    assert n.dtype == np.float16 and set(np.unique(n).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("dtype", LOWP, ids=IDS)
def test_opcheck_low_precision(dtype):
    torch.manual_seed(9)

    def leaf(*shape):
        return torch.randn(*shape).to(dtype).requires_grad_()

    for args in ((leaf(5, 3), leaf(4, 3), leaf(4)), (leaf(3), leaf(4, 3), None), (leaf(2, 3, 3), leaf(4, 3), leaf(4))):
        torch.library.opcheck(ops.linear, args)
        torch.library.opcheck(ops.neuron, args)
    z = leaf(4, 5)
    for code, alpha in ((1, 1.0), (3, 2.0)):
        torch.library.opcheck(ops.step, (z, code, alpha))
        torch.library.opcheck(ops.step_backward, (leaf(4, 5), z, code, alpha))
    torch.library.opcheck(ops.bias_grad, (leaf(6, 4),))


def test_info_names_the_low_precision_paths():
    paths = linneuron.info()["lowp"]
    assert set(paths) == {"bfloat16", "float16"}
    assert all(isinstance(p, str) and p for p in paths.values())


@pytest.mark.parametrize("dtype", LOWP, ids=IDS)
def test_results_identical_across_thread_counts(dtype):
    g = torch.Generator().manual_seed(10)
    x = torch.randn(300, 500, generator=g).to(dtype)
    w = torch.randn(200, 500, generator=g).to(dtype)
    b = torch.randn(200, generator=g).to(dtype)
    dy = torch.randn(3000, 200, generator=g).to(dtype)
    results = []
    for n in (1, 2):
        linneuron.set_num_threads(n)
        try:
            results.append((LF.linear(x, w, b), LF.linear(x[:3], w, b), LF.linear(x, w[:5]), LF._bias_grad(dy)))
        finally:
            linneuron.set_num_threads(None)
    for one, two in zip(*results):
        assert torch.equal(one, two)


@pytest.mark.parametrize("dtype", LOWP, ids=IDS)
@pytest.mark.parametrize("m, n", [(5000, 7), (700, 300), (3, 5)])
def test_bias_grad_low_precision_threads(dtype, m, n):
    """Column sums of a 16-bit dY (few columns over many rows, many columns, tiny; a column-strided dY; accumulate
    into db): float32 sums against float64, and the same bits on 1, 2 and 3 threads."""
    code = _core.BFLOAT16 if dtype == torch.bfloat16 else _core.FLOAT16
    g = torch.Generator().manual_seed(m + n)
    dy = torch.randn(m, 2 * n, generator=g).to(dtype)
    db0 = torch.randn(n, generator=g).to(dtype)
    outs = []
    for threads in (1, 2, 3):
        linneuron.set_num_threads(threads)
        try:
            for view in (dy[:, :n], dy[:, ::2]):
                db = db0.clone()
                _core.bias_grad(code, m, n, view.data_ptr(), view.stride(0), view.stride(1), db.data_ptr(), 1, True)
                ref = db0.double() + view.double().sum(0)
                bound = 4 * _eps(dtype) * (db0.double().abs() + view.double().abs().sum(0)) + 1e-30
                assert torch.all((db.double() - ref).abs() <= bound)
                outs.append(db)
        finally:
            linneuron.set_num_threads(None)
    assert torch.equal(outs[0], outs[2]) and torch.equal(outs[0], outs[4])
    assert torch.equal(outs[1], outs[3]) and torch.equal(outs[1], outs[5])


THIN = [(5000, 129, 1), (3000, 40, 2), (2500, 1, 300), (4100, 2, 50), (2, 300, 200), (1, 77, 500), (3000, 1, 70),
        (800, 3, 300), (40, 1, 1)]  # fmt: skip


def _products(x, w, dy):
    """(name, m, n, k, A, B) of a layer's three products, A and B as the views the backward hands the kernels."""
    (m, k), n = x.shape, w.shape[0]
    return [("forward", m, n, k, x, w.t()), ("dX", m, k, n, dy, w), ("dW", n, k, m, dy.t(), x)]


@pytest.mark.parametrize("dtype", LOWP, ids=IDS)
@pytest.mark.parametrize("shape", THIN, ids=[f"{m}x{k}->{n}" for m, k, n in THIN])
def test_thin_layers_products(family, dtype, shape):
    """The products of layers with one or two inputs, outputs or rows, and k = 1: dW and short-batch dX as rows of M
    accumulated in fixed chunks, dX of few inputs as dot products against a strided W, outer products; row-major
    and column-major C with accumulate, bias and step, against float64, the same bits on 1, 2 and 3 threads; a NaN
    through the step."""
    m, k, n = shape
    code = _core.BFLOAT16 if dtype == torch.bfloat16 else _core.FLOAT16
    g = torch.Generator().manual_seed(m + 3 * k + 7 * n)
    x = torch.randn(m, k, generator=g).to(dtype)
    w = torch.randn(n, k, generator=g).to(dtype)
    dy = torch.randn(m, n, generator=g).to(dtype)
    for name, pm, pn, pk, a, b in _products(x, w, dy):
        bias = torch.randn(pn, generator=g).to(dtype)
        c0 = torch.randn(pm, pn + 3, generator=g).to(dtype)
        z = c0[:, :pn].double() + a.double() @ b.double() + bias.double()
        mag = c0[:, :pn].double().abs() + a.double().abs() @ b.double().abs() + bias.double().abs()
        bound = _eps(dtype) * mag + 4 * max(pk, 1) * 2.0**-24 * mag + torch.finfo(dtype).smallest_normal
        outs = _gemm_on_threads(code, pm, pn, pk, a, b, c0, bias)
        assert torch.all((outs[0][:, :pn].double() - z).abs() <= bound), name
        decided = z.abs() > 2 * bound
        assert torch.equal(outs[1][:, :pn][decided], (z[decided] >= 0).to(dtype)), name
        c_cols = c0[:, :pn].t().contiguous().t()
        _core.gemm(code, pm, pn, pk, a.data_ptr(), a.stride(0), a.stride(1), b.data_ptr(), b.stride(0), b.stride(1),
                   c_cols.data_ptr(), 1, pm, bias.data_ptr(), 1, True, False)  # fmt: skip
        assert torch.all((c_cols.double() - z).abs() <= bound), f"{name}: column-major C"
        poisoned = a.clone()  # a NaN in A's first row reaches all of C's first row, through the step too
        poisoned[0, 0] = float("nan")
        c = c0.clone()
        _core.gemm(code, pm, pn, pk, poisoned.data_ptr(), poisoned.stride(0), poisoned.stride(1), b.data_ptr(),
                   b.stride(0), b.stride(1), c.data_ptr(), pn + 3, 1, bias.data_ptr(), 1, True, True)  # fmt: skip
        assert torch.all(c[0, :pn].isnan()) and not torch.any(c[1:, :pn].isnan()), f"{name}: NaN"


_SLAB_CHILD = """
import hashlib, torch, linneuron
from linneuron import _core
assert _core.set_active_isa("avx512")
g = torch.Generator().manual_seed(3)
xs = torch.randn(40, 5000, generator=g).bfloat16()  # a short batch through a long k: runs transposed, W in place
w = torch.randn(100, 5000, generator=g).bfloat16()
x = torch.randn(5000, 100, generator=g).bfloat16()  # a long batch: dW = dYᵀ X reduces over it
dy = torch.randn(5000, 40, generator=g).bfloat16()
digest = hashlib.sha256()
for a, b in ((xs, w.t()), (dy.t(), x)):
    (m, k), n = a.shape, b.shape[1]
    outs = []
    for threads in (1, 2):
        linneuron.set_num_threads(threads)
        c = torch.empty(m, n, dtype=torch.bfloat16)
        _core.gemm(_core.BFLOAT16, m, n, k, a.data_ptr(), a.stride(0), a.stride(1), b.data_ptr(), b.stride(0),
                   b.stride(1), c.data_ptr(), n, 1, 0, 1, False, False)
        outs.append(c)
    assert torch.equal(outs[0], outs[1]), "thread counts differ"
    z = a.double() @ b.double()
    bound = 2.0**-8 * (a.double().abs() @ b.double().abs()) + 4 * k * 2.0**-24 * (a.double().abs() @ b.double().abs())
    assert torch.all((outs[0].double() - z).abs() <= bound)
    digest.update(outs[0].view(torch.int16).numpy().tobytes())
print(digest.hexdigest())
"""


def test_bfloat16_amx_long_reductions_in_slabs():
    """A long k on AMX tiles goes in slabs of k with float32 partial sums between them (the transposed forward of a
    short batch through a long W read in place, with a partial last chunk; dW's column-major dYᵀ over a long batch):
    against float64, and the same bits whatever the slab size (L2 declared 128 KiB in a child against this
    machine's) and the thread count."""
    _on_amx()
    digests = []
    for env in ({}, {"LINNEURON_CACHES": "49152,131072,0"}):
        proc = subprocess.run([sys.executable, "-c", _SLAB_CHILD], env={**os.environ, **env}, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        digests.append(proc.stdout.split()[-1])
    assert digests[0] == digests[1], "slab sizes gave different bits"
