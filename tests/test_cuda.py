"""linneuron on CUDA tensors against references no one here wrote: float64 torch (cuBLAS), NumPy, gradcheck, opcheck.

Covers parity with nn.Linear (float32 with TF32 off, float16/bfloat16 with per-dtype bounds), every operand layout the
kernels distinguish, the fused neuron, step and its surrogate backward, bias gradients, gradcheck in float64, opcheck,
a non-default stream, torch.compile(fullgraph=True), CUDA graph capture, autocast, odd sizes, M = 1, empty batches
and offsets past 2**31. Skipped cleanly unless torch sees a GPU and linneuron's CUDA kernels can run.

LINNEURON_CUDA_TESTS_ON_CPU=1 runs the device-independent tests on the CPU kernels instead (float32/float64 only):
a check of the tests' own references and bounds on machines without a GPU; it proves nothing about the CUDA kernels.
"""

from __future__ import annotations

import math
import os

import linneuron
import linneuron.functional as LF
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from linneuron import _cuda_loader, ops

ON_CPU = os.environ.get("LINNEURON_CUDA_TESTS_ON_CPU") == "1"


def _skip_reason() -> str | None:
    if ON_CPU:
        return None
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    return _cuda_loader.status()[1]


_REASON = _skip_reason()
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(_REASON is not None, reason=f"CUDA kernels unavailable: {_REASON}")]
gpu_only = pytest.mark.skipif(ON_CPU, reason="needs a real GPU (LINNEURON_CUDA_TESTS_ON_CPU=1)")

DEV = "cpu" if ON_CPU else "cuda"
DTYPES = [torch.float32, torch.float64] if ON_CPU else [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Unit roundoff of each storage type; 16-bit types accumulate in float32, float64 in float64.
EPS = {torch.float32: 2.0**-24, torch.float64: 2.0**-53, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def _acc_eps(dtype: torch.dtype) -> float:
    return EPS[torch.float64] if dtype == torch.float64 else EPS[torch.float32]


@pytest.fixture(autouse=True)
def _no_tf32():
    """References in float32 must be true float32 (TF32 would make torch, not us, the inaccurate one)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _randn(*shape, dtype=torch.float32, seed=None):
    if seed is not None:
        torch.manual_seed(seed)
    return torch.randn(*shape, dtype=torch.float64, device=DEV).to(dtype)


def _check_matmul(out, a, b, bias=None, *, what=""):
    """Assert out ≈ a @ b (+ bias) in float64, within a rounding bound for out's dtype and the inner size.

    The bound: 2 ulps of the result for the final rounding, plus 4 * sqrt(K) * eps_acc * sum|a||b| for the
    accumulation. An indexing or synchronisation bug misses by O(|result|), far outside it.
    """
    dtype = out.dtype
    ad, bd = a.double(), b.double()
    ref = ad @ bd
    mag = ad.abs() @ bd.abs()
    if bias is not None:
        ref = ref + bias.double()
        mag = mag + bias.double().abs()
    k = a.shape[-1]
    bound = 2 * EPS[dtype] * ref.abs() + 4 * math.sqrt(max(k, 1)) * _acc_eps(dtype) * mag + 1e-30
    assert out.shape == ref.shape, (what, out.shape, ref.shape)
    err = (out.double() - ref).abs()
    bad = ~(err <= bound)  # catches NaN too
    if bad.any():
        idx = tuple(i[0].item() for i in bad.nonzero(as_tuple=True))
        pytest.fail(
            f"{what} {dtype} K={k}: {int(bad.sum())} of {out.numel()} elements off; first at {idx}: "
            f"got {out[idx].item()}, want {ref[idx].item()} (bound {bound[idx].item():.3g})"
        )
    return ref, bound


def _check_linear(out, x, w, b, what=""):
    x2 = x.reshape(-1, x.shape[-1]) if x.dim() != 2 else x
    out2 = out.reshape(-1, out.shape[-1]) if out.dim() != 2 else out
    return _check_matmul(out2, x2, w.t(), b, what=what)


# (M, K, N): skinny (M <= 8), small tiles, tile edges, large float32 tiles (>= 132 tiles of 128 x 128), split-K,
# K = 0.
SHAPES = [
    (1, 1, 1),
    (1, 300, 7),
    (3, 1001, 5),
    (8, 64, 40),
    (9, 33, 17),
    (64, 256, 128),
    (127, 129, 131),
    (300, 40, 520),
    (2048, 96, 2176),
    (40, 3001, 70),  # few tiles, long K: split along K (float32/float64)
    (5, 0, 3),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear_and_neuron_match_float64(dtype, shape):
    m, k, n = shape
    x, w, b = _randn(m, k, dtype=dtype, seed=m + k + n), _randn(n, k, dtype=dtype), _randn(n, dtype=dtype)
    for bias in (b, None):
        out = LF.linear(x, w, bias)
        ref, bound = _check_linear(out, x, w, bias, what=f"linear {shape}")
        # The fused neuron equals H(z) wherever z is clear of 0 by more than the rounding bound.
        fired = LF.neuron(x, w, bias)
        assert fired.dtype == dtype and fired.shape == (m, n)
        clear = ref.abs() > bound
        assert torch.equal(fired.double()[clear], (ref[clear] >= 0).double())
        assert bool(((fired == 0) | (fired == 1)).all())
    if dtype == torch.float32 and k > 0:
        # torch's own float32 GEMM (TF32 off) lands within the same distance of the float64 result.
        _check_linear(TF.linear(x, w, b), x, w, b, what="torch reference")


def _view(kind: str, rows: int, cols: int, dtype, seed: int) -> torch.Tensor:
    """A (rows, cols) operand laid out as `kind`; each layout takes a different loading path in the kernels."""
    torch.manual_seed(seed)
    if kind == "contiguous":
        return _randn(rows, cols, dtype=dtype)
    if kind == "transposed":  # the other dimension contiguous
        return _randn(cols, rows, dtype=dtype).t()
    if kind == "misaligned":  # contiguous, but one element off every vector boundary
        return _randn(rows * cols + 1, dtype=dtype)[1:].view(rows, cols)
    if kind == "strided":  # neither dimension contiguous
        return _randn(rows, 2 * cols, dtype=dtype)[:, ::2]
    if kind == "broadcast":  # stride-0 rows
        return _randn(1, cols, dtype=dtype).expand(rows, cols)
    raise ValueError(kind)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("x_kind", ["contiguous", "transposed", "misaligned", "strided", "broadcast"])
@pytest.mark.parametrize("w_kind", ["contiguous", "transposed", "misaligned", "strided"])
def test_operand_layouts(dtype, x_kind, w_kind):
    # Sizes off the vector width (element loads), on it (16-byte loads in every layout), and skinny.
    for m, k, n in ((130, 70, 200), (136, 72, 264), (5, 77, 33)):
        x = _view(x_kind, m, k, dtype, seed=1)
        w = _view(w_kind, n, k, dtype, seed=2)
        b = _randn(2 * n, dtype=dtype)[::2]  # a strided bias too
        _check_linear(LF.linear(x, w, b), x, w, b, what=f"x {x_kind}, w {w_kind}, ({m}, {k}, {n})")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_batched_inputs(dtype):
    w, b = _randn(24, 40, dtype=dtype, seed=3), _randn(24, dtype=dtype)
    for x in (_randn(3, 50, 40, dtype=dtype), _randn(50, 3, 40, dtype=dtype).transpose(0, 1), _randn(40, dtype=dtype)):
        out = LF.linear(x, w, b)
        assert out.shape == (*x.shape[:-1], 24)
        _check_linear(out, x, w, b, what=f"input {tuple(x.shape)}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m,k,n", [(1, 96, 70), (7, 96, 70), (200, 96, 72), (3000, 40, 6), (1536, 1536, 1536)])
def test_backward_matches_float64(dtype, m, k, n):
    # (200, 96, 72): sizes on the vector width, so dX (B N-contiguous) and dW (A M-contiguous) take 16-byte loads.
    # (3000, 40, 6): dW = dYᵀ X has one tile and K = 3000, the split-K case of weight gradients.
    # (1536, 1536, 1536): enough tiles for the 128 x 128 float32 kernel in all three products.
    x = _randn(m, k, dtype=dtype, seed=m).requires_grad_()
    layer = linneuron.Linear(k, n, device=DEV, dtype=dtype)
    grad_out = _randn(m, n, dtype=dtype)
    out = layer(x)
    out.backward(grad_out)
    w = layer.weight.detach()
    _check_matmul(x.grad, grad_out, w, what="dX")
    _check_matmul(layer.weight.grad, grad_out.t(), x.detach(), what="dW")
    _check_matmul(layer.bias.grad.unsqueeze(0), torch.ones(1, m, dtype=dtype, device=DEV), grad_out, what="db")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_empty_batch(dtype):
    x = torch.empty(0, 12, dtype=dtype, device=DEV, requires_grad=True)
    layer = linneuron.Linear(12, 5, device=DEV, dtype=dtype)
    out = layer(x)
    assert out.shape == (0, 5)
    out.sum().backward()
    # dW and db of an empty batch are zeros, not uninitialised memory.
    assert torch.equal(layer.weight.grad, torch.zeros_like(layer.weight))
    assert torch.equal(layer.bias.grad, torch.zeros_like(layer.bias))
    assert x.grad.shape == (0, 12)
    assert LF.neuron(x.detach(), layer.weight.detach()).shape == (0, 5)


SPECIALS = [-math.inf, -3.0, -1e-3, -0.0, 0.0, 1e-3, 2.5, math.inf, math.nan]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_step_matches_heaviside(dtype):
    torch.manual_seed(4)
    specials = torch.tensor(SPECIALS, dtype=dtype, device=DEV)
    base = torch.cat([specials, _randn(4099, dtype=dtype)])
    one = torch.ones((), dtype=dtype, device=DEV)
    for z in (base, base[1:], base[:1], base[: 8 * 40].view(8, 40).t(), base[:1200].view(30, 40)[:, ::3]):
        out = LF.step(z)
        assert out.shape == z.shape and out.dtype == dtype
        # linneuron keeps NaN (torch.heaviside maps it to 0); elsewhere they agree, H(-0.0) = 1 included.
        want = torch.where(z.isnan(), z, torch.heaviside(z, one))
        torch.testing.assert_close(out, want, rtol=0, atol=0, equal_nan=True)


def _surrogate_reference(code: int, z: torch.Tensor, alpha: float) -> torch.Tensor:
    z = z.double()
    if code == 0:
        return torch.zeros_like(z)
    if code == 1:
        return ((alpha * z).abs() <= 1).double()
    if code == 2:
        s = torch.sigmoid(alpha * z)
        return alpha * s * (1 - s)
    return (alpha / 2) / (1 + (math.pi / 2 * alpha * z) ** 2)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("code,alpha", [(0, 1.0), (1, 1.0), (2, 4.0), (3, 2.0)])
def test_step_backward_matches_formula(dtype, code, alpha):
    torch.manual_seed(5)
    z_all = _randn(6001, dtype=dtype) * 2
    gy_all = _randn(6001, dtype=dtype)
    for z, gy in (
        (z_all, gy_all),
        (z_all[1:], gy_all[1:]),
        (z_all[:6000].view(60, 100).t(), gy_all[:6000].view(100, 60)),
    ):
        got = ops.step_backward(gy, z, code, alpha)
        want = gy.double() * _surrogate_reference(code, z, alpha)
        # Relative to the result, plus a term on the peak scale alpha |gy|: s(1 - s) cancels where s is near 1.
        bound = 8 * EPS[dtype] * (want.abs() + alpha * gy.double().abs()) + 1e-300
        assert bool(((got.double() - want).abs() <= bound).all()), (code, dtype)
    # The autograd path of LF.step reaches the same kernel.
    names = {0: None, 1: "ste", 2: "sigmoid", 3: "atan"}
    z = z_all[:500].clone().requires_grad_()
    LF.step(z, names[code], alpha).backward(gy_all[:500])
    want = gy_all[:500].double() * _surrogate_reference(code, z.detach(), alpha)
    bound = 8 * EPS[dtype] * (want.abs() + alpha * gy_all[:500].double().abs()) + 1e-300
    assert bool(((z.grad.double() - want).abs() <= bound).all())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bias_grad_matches_float64(dtype):
    torch.manual_seed(6)
    cases = [
        _randn(0, 5, dtype=dtype),
        _randn(1, 3, dtype=dtype),
        _randn(100003, 3, dtype=dtype),
        _randn(7, 1000, dtype=dtype),
        _randn(3, 40, 50, dtype=dtype),
        _randn(300, 70, dtype=dtype).t(),
    ]
    for gy in cases:
        got = ops.bias_grad(gy)
        rows = gy.reshape(-1, gy.shape[-1])
        assert got.shape == (gy.shape[-1],)
        _check_matmul(got.unsqueeze(0), torch.ones(1, rows.shape[0], dtype=dtype, device=DEV), rows, what="bias_grad")


def _module_call(op: str, *args):
    """Calls a kernel of the module for DEV directly (the accumulate flag and strided outputs are not reachable
    through the torch API)."""
    if ON_CPU:
        return getattr(linneuron._core, op)(*args)
    module = _cuda_loader.cuda_module(op)
    return getattr(module, op)(*args, torch.cuda.current_device(), torch.cuda.current_stream().cuda_stream)


CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m,k,n", [(4, 50, 9), (70, 33, 150), (300, 20, 260)])
def test_gemm_accumulate_step_and_strided_output(dtype, m, k, n):
    torch.manual_seed(7)
    a, bmat, bias = _randn(m, k, dtype=dtype), _randn(n, k, dtype=dtype), _randn(n, dtype=dtype)
    c0 = _randn(n, m, dtype=dtype).t()  # C written through a transposed view: c_rs = 1, c_cs = m
    for step in (False, True):
        c = c0.clone(memory_format=torch.preserve_format)
        assert c.stride() == (1, m)
        _module_call("gemm", CODES[dtype], m, n, k, a.data_ptr(), k, 1, bmat.data_ptr(), 1, k,
                     c.data_ptr(), 1, m, bias.data_ptr(), 1, True, step)  # fmt: skip
        if not ON_CPU:
            torch.cuda.synchronize()
        ref = c0.double() + a.double() @ bmat.double().t() + bias.double()
        if step:
            bound = (
                4 * math.sqrt(k) * _acc_eps(dtype) * (a.double().abs() @ bmat.double().abs().t() + 3)
                + 2 * EPS[dtype] * ref.abs()
            )
            clear = ref.abs() > bound
            assert torch.equal(c.double()[clear], (ref[clear] >= 0).double())
        else:
            # out = C0 + A Bᵀ + bias: check as one product with C0 and bias folded into the reference.
            err = (c.double() - ref).abs()
            bound = 2 * EPS[dtype] * ref.abs() + 4 * math.sqrt(k) * _acc_eps(dtype) * (
                a.double().abs() @ bmat.double().abs().t() + c0.double().abs() + bias.double().abs()
            )
            assert bool((err <= bound).all())
    # bias_grad accumulates into a strided db.
    gy = _randn(m, n, dtype=dtype)
    db = _randn(2 * n, dtype=dtype)
    before = db.clone()
    _module_call("bias_grad", CODES[dtype], m, n, gy.data_ptr(), n, 1, db.data_ptr(), 2, True)
    if not ON_CPU:
        torch.cuda.synchronize()
    want = before[::2].double() + gy.double().sum(0)
    bound = 2 * EPS[dtype] * want.abs() + 4 * math.sqrt(m) * _acc_eps(dtype) * (
        gy.double().abs().sum(0) + before[::2].double().abs()
    )
    assert bool(((db[::2].double() - want).abs() <= bound).all())
    assert torch.equal(db[1::2], before[1::2])  # untouched between the strided elements


def test_gradcheck_float64():
    torch.manual_seed(8)
    for m, k, n in ((3, 4, 5), (20, 9, 11)):
        x = torch.randn(m, k, dtype=torch.float64, device=DEV, requires_grad=True)
        w = torch.randn(n, k, dtype=torch.float64, device=DEV, requires_grad=True)
        b = torch.randn(n, dtype=torch.float64, device=DEV, requires_grad=True)
        assert torch.autograd.gradcheck(LF.linear, (x, w, b))
        assert torch.autograd.gradgradcheck(LF.linear, (x, w, b))
        assert torch.autograd.gradcheck(ops.linear, (x, w, b))
    g = torch.randn(4, 6, dtype=torch.float64, device=DEV, requires_grad=True)
    z = torch.randn(4, 6, dtype=torch.float64, device=DEV, requires_grad=True)
    for code in (2, 3):
        assert torch.autograd.gradcheck(lambda g, z, c=code: ops.step_backward(g, z, c, 1.3), (g, z))
    assert torch.autograd.gradcheck(
        ops.bias_grad, (torch.randn(5, 3, 4, dtype=torch.float64, device=DEV, requires_grad=True),)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16] if not ON_CPU else [torch.float32], ids=str)
def test_opcheck(dtype):
    torch.manual_seed(9)
    x = _randn(6, 5, dtype=dtype).requires_grad_()
    w = _randn(4, 5, dtype=dtype).requires_grad_()
    b = _randn(4, dtype=dtype).requires_grad_()
    for args in ((x, w, b), (x, w, None), (_randn(0, 5, dtype=dtype), w, b)):
        torch.library.opcheck(ops.linear, args)
        torch.library.opcheck(ops.neuron, args)
    z = _randn(3, 7, dtype=dtype).requires_grad_()
    torch.library.opcheck(ops.step, (z, 3, 2.0))
    torch.library.opcheck(ops.step_backward, (torch.randn_like(z).requires_grad_(), z, 2, 4.0))
    torch.library.opcheck(ops.bias_grad, (z,))


@gpu_only
def test_runs_on_the_current_stream():
    # The side stream first sleeps, then fills x: a kernel launched on any other stream would read x too early.
    torch.manual_seed(10)
    x_src = _randn(512, 256)
    w, b = _randn(384, 256), _randn(384)
    x = torch.zeros_like(x_src)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)
        x.copy_(x_src)
        out = LF.linear(x, w, b)
        fired = LF.step(out)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    ref, _ = _check_linear(out, x_src, w, b, what="side stream")
    assert torch.equal(fired, (out >= 0).to(out.dtype))


@gpu_only
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device_and_current_device_unchanged():
    torch.cuda.set_device(0)
    x, w = _randn(70, 30).to("cuda:1"), _randn(20, 30).to("cuda:1")
    out = LF.linear(x, w)
    assert out.device == torch.device("cuda:1") and torch.cuda.current_device() == 0
    _check_linear(out, x, w, None, what="cuda:1")


# Inductor itself (torch 2.13) calls the deprecated torch.jit.script_method while compiling; not our code.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_fullgraph():
    torch.manual_seed(11)
    model = torch.nn.Sequential(
        linneuron.Linear(16, 32, device=DEV), linneuron.Step(), linneuron.Neuron(32, 4, device=DEV)
    )
    x = _randn(10, 16)
    eager = model(x)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x), eager, rtol=0, atol=0)
    # Training through the compiled graph: the surrogate gradient reaches the first layer.
    xg = x.clone().requires_grad_()
    loss = (compiled(xg) * _randn(10, 4)).sum()
    loss.backward()
    assert xg.grad is not None and model[0].weight.grad is not None
    assert bool(torch.isfinite(model[0].weight.grad).all())


@gpu_only
def test_cuda_graph_capture_and_replay():
    torch.manual_seed(12)
    w, b = _randn(64, 48), _randn(64)
    static_x = _randn(33, 48)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as torch recommends
        LF.neuron(static_x, w, b)
        LF.linear(static_x, w, b)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_z = LF.linear(static_x, w, b)
        static_y = LF.step(static_z)
        static_n = LF.neuron(static_x, w, b)
    for seed in (13, 14):
        static_x.copy_(_randn(33, 48, seed=seed))
        graph.replay()
        torch.cuda.synchronize()
        ref, bound = _check_linear(static_z, static_x, w, b, what="graph replay")
        assert torch.equal(static_y, (static_z >= 0).float())
        clear = ref.abs() > bound
        assert torch.equal(static_n.double()[clear], (ref[clear] >= 0).double())


@gpu_only
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_autocast(dtype):
    torch.manual_seed(15)
    layer = linneuron.Linear(40, 24, device="cuda")
    x = _randn(17, 40)
    with torch.autocast("cuda", dtype=dtype):
        out = layer(x)
        ref = TF.linear(x, layer.weight, layer.bias)
        fired = LF.neuron(x, layer.weight, layer.bias)
    assert out.dtype == ref.dtype == fired.dtype == dtype
    _check_linear(out, x.to(dtype), layer.weight.detach().to(dtype), layer.bias.detach().to(dtype), what="autocast")
    assert bool(((fired == 0) | (fired == 1)).all())


@gpu_only
def test_kernels_agree_with_cpu_kernels_and_numpy():
    # A reference outside torch: NumPy float64 on the host, and linneuron's own CPU kernels.
    rng = np.random.default_rng(16)
    x, w, b = rng.standard_normal((133, 257)), rng.standard_normal((65, 257)), rng.standard_normal(65)
    want = x @ w.T + b
    got = LF.linear(*(torch.from_numpy(t).cuda() for t in (x, w, b))).cpu().numpy()
    cpu = LF.linear(*(torch.from_numpy(t) for t in (x, w, b))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, cpu, rtol=1e-12, atol=1e-12)
    z = rng.standard_normal((50, 60)).astype(np.float32)
    z[0, :3] = [-0.0, 0.0, np.nan]
    np.testing.assert_array_equal(LF.step(torch.from_numpy(z).cuda()).cpu().numpy(), linneuron.numpy.step(z))


@gpu_only
@pytest.mark.slow
def test_offsets_beyond_int32():
    # X has more than 2**31 elements, so row offsets m * K overflow 32-bit indexing in the last rows.
    k, n = 4096, 16
    m = 2**31 // k + 64
    if torch.cuda.mem_get_info()[0] < 3 * m * k * 2:
        pytest.skip("not enough free GPU memory")
    x = torch.empty(m, k, dtype=torch.float16, device="cuda")
    x[:-64].fill_(0.5)
    x[-64:] = _randn(64, k, dtype=torch.float16, seed=17)
    w, b = _randn(n, k, dtype=torch.float16), _randn(n, dtype=torch.float16)
    out = LF.linear(x, w, b)
    _check_linear(out[-64:], x[-64:], w, b, what="rows past 2**31 elements")
    flat = x.view(-1)
    fired = LF.step(flat[-(2**31 + 5) :] - 0.25)  # > 2**31 elements
    assert bool((fired[: -64 * k] == 1).all())
    torch.testing.assert_close(fired[-64 * k :], (flat[-64 * k :] >= 0.25).half(), rtol=0, atol=0)
