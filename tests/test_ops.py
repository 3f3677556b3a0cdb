"""The registered torch.ops.linneuron ops: opcheck on every op, gradcheck/gradgradcheck in float64, fake tensors,
the fallback from the eager fast path to the ops, torch.compile(fullgraph=True) and torch.export, CUDA errors."""

from __future__ import annotations

import types

import linneuron.functional as LF
import pytest
import torch
import torch.nn.functional as TF
from linneuron import _kernels, ops
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

# torch 2.4's export warns at pre-dispatch tracing about every op outside aten/prim, torch.library.custom_op ones
# included. Later torch (2.9, 2.13 checked) warns only for ops with a CompositeImplicitAutograd kernel, which
# linneuron's have not, in other words ("we assume"): this filter matches 2.4's blanket notice only.
_TORCH24_EXPORT_NOTICE = "ignore:At pre-dispatch tracing, we will assume:UserWarning"


def _t(*shape, dtype=torch.float64, grad=True):
    return torch.randn(*shape, dtype=dtype, requires_grad=grad)


def _leaf(view):
    """A leaf tensor with ``view``'s strides (opcheck and gradcheck want leaves)."""
    return view.detach().requires_grad_()


def _linear_args(dtype):
    torch.manual_seed(0)
    w = _t(4, 3, dtype=dtype)
    b = _t(4, dtype=dtype)
    yield _t(5, 3, dtype=dtype), w, b
    yield _t(5, 3, dtype=dtype), w, None
    yield _t(3, dtype=dtype), w, b  # 1-D input
    yield _t(0, 3, dtype=dtype), w, b  # empty batch
    yield _t(2, 3, 3, dtype=dtype), w, b  # leading dims
    yield _leaf(_t(3, 5, dtype=dtype).t()), _leaf(_t(3, 4, dtype=dtype).t()), b  # transposed operands
    yield _leaf(_t(1, 3, dtype=dtype).expand(6, 3)), w, _leaf(_t(8, dtype=dtype)[::2])  # stride-0 rows, strided bias


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_linear_and_neuron(dtype):
    for args in _linear_args(dtype):
        torch.library.opcheck(ops.linear, args)
        torch.library.opcheck(ops.neuron, args)


def test_opcheck_step_step_backward_bias_grad():
    torch.manual_seed(0)
    for z in (_t(4, 5), _t(3), _t(0, 2), _leaf(_t(2, 3, 4).transpose(0, 2)), _leaf(_t(2, 1).expand(2, 6))):
        for code, alpha in ((0, 1.0), (1, 1.0), (2, 4.0), (3, 2.0)):
            torch.library.opcheck(ops.step, (z, code, alpha))
            torch.library.opcheck(ops.step_backward, (torch.randn_like(z).requires_grad_(), z, code, alpha))
        if z.dim():
            torch.library.opcheck(ops.bias_grad, (z,))
    torch.library.opcheck(ops.step, (_t(3, 3),))  # schema defaults


def test_gradcheck_and_gradgradcheck_linear():
    for input, weight, bias in _linear_args(torch.float64):
        if 0 in input.stride():
            continue  # gradcheck cannot perturb overlapping memory; stride-0 parity is in test_functional
        args = (input, weight) if bias is None else (input, weight, bias)
        assert torch.autograd.gradcheck(LF.linear, args)
        assert torch.autograd.gradgradcheck(LF.linear, args)
        assert torch.autograd.gradcheck(ops.linear, args)
        assert torch.autograd.gradgradcheck(ops.linear, args)


def test_gradcheck_bias_grad_and_step_backward_ops():
    torch.manual_seed(0)
    gy = _t(3, 2, 4)
    assert torch.autograd.gradcheck(ops.bias_grad, (gy,))
    assert torch.autograd.gradgradcheck(ops.bias_grad, (gy,))
    z = _t(3, 4)
    for code in (2, 3):  # the smooth surrogates
        assert torch.autograd.gradcheck(lambda g, z, c=code: ops.step_backward(g, z, c, 1.3), (_t(3, 4), z))
        assert torch.autograd.gradgradcheck(lambda g, z, c=code: ops.step_backward(g, z, c, 1.3), (_t(3, 4), z))


class _CountingMode(TorchDispatchMode):
    """Records the ops that reach the dispatcher (forces the registered-op path of linneuron.functional)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def test_vmap_over_the_raw_ops_uses_their_rules():
    """torch.func.vmap straight over torch.ops.linneuron: batched inputs, per-sample weights and biases, an omitted
    bias, nested vmap, against F.linear and the step's definition. Every torch has a rule for each op (on 2.4 through
    _compat.register_vmap); torch's per-sample fallback would warn, an error in this suite."""
    from torch.func import vmap

    torch.manual_seed(0)
    f64 = dict(dtype=torch.float64)
    x, w, b = torch.randn(5, 3, **f64), torch.randn(2, 3, **f64), torch.randn(2, **f64)
    xs, ws, bs = torch.randn(4, 5, 3, **f64), torch.randn(4, 2, 3, **f64), torch.randn(4, 2, **f64)
    torch.testing.assert_close(vmap(ops.linear, in_dims=(0, None, None))(xs, w, b), TF.linear(xs, w, b))
    torch.testing.assert_close(vmap(lambda x: ops.linear(x, w), in_dims=1)(xs), TF.linear(xs.movedim(1, 0), w))
    per_sample = vmap(ops.linear)(xs, ws, bs)
    torch.testing.assert_close(per_sample, torch.stack([TF.linear(*a) for a in zip(xs, ws, bs)]))
    shared_input = (None, 0, None)
    torch.testing.assert_close(vmap(ops.linear, shared_input)(x, ws, b), vmap(TF.linear, shared_input)(x, ws, b))
    fired = vmap(ops.neuron, in_dims=(0, 0, None))(xs, ws, b)
    assert torch.equal(fired, (vmap(TF.linear, (0, 0, None))(xs, ws, b) >= 0).double())
    nested = vmap(vmap(ops.linear, in_dims=(0, None, None)), in_dims=(0, None, None))(xs.view(2, 2, 5, 3), w, b)
    torch.testing.assert_close(nested, TF.linear(xs.view(2, 2, 5, 3), w, b))
    assert torch.equal(vmap(ops.step, in_dims=2)(xs), (xs >= 0).double().permute(2, 0, 1))
    g = torch.randn(5, 3, **f64)
    torch.testing.assert_close(
        vmap(ops.step_backward, in_dims=(None, 0, None, None))(g, xs, 2, 4.0),
        torch.stack([ops.step_backward(g, z, 2, 4.0) for z in xs]),
    )
    torch.testing.assert_close(vmap(ops.bias_grad, in_dims=1)(xs), xs.sum(0))  # per sample (4, 3) -> (3,)
    # Eager autograd through the batched ops (the rules call the ops one level down, which record the graph).
    ws.requires_grad_()
    b.requires_grad_()
    grads = []
    for fn in (ops.linear, TF.linear):
        vmap(fn, in_dims=(0, 0, None))(xs, ws, b).square().sum().backward()
        grads.append((ws.grad, b.grad))
        ws.grad = b.grad = None
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want)


def test_dispatch_mode_routes_through_registered_ops_with_same_results():
    torch.manual_seed(0)
    x, w, b = _t(5, 3), _t(2, 3), _t(2)
    eager = LF.linear(x, w, b)
    eager_grads = torch.autograd.grad(eager.sum(), (x, w, b))
    with _CountingMode() as mode:
        out = LF.linear(x, w, b)
        grads = torch.autograd.grad(out.sum(), (x, w, b))
        LF.neuron(x.detach(), w.detach(), b.detach())
        LF.step(x.detach())
    assert "linneuron.linear.default" in mode.seen
    assert "linneuron.bias_grad.default" in mode.seen
    assert "linneuron.neuron.default" in mode.seen and "linneuron.step.default" in mode.seen
    torch.testing.assert_close(out, eager)
    for got, want in zip(grads, eager_grads):
        torch.testing.assert_close(got, want)


def test_fake_tensors_and_meta_device():
    with FakeTensorMode():
        x, w, b = torch.empty(2, 7, 3), torch.empty(4, 3), torch.empty(4)
        assert LF.linear(x, w, b).shape == (2, 7, 4)
        assert LF.neuron(x, w, b).shape == (2, 7, 4)
        assert LF.step(x).shape == (2, 7, 3)
    meta = torch.empty(5, 3, device="meta")
    out = LF.linear(meta, torch.empty(2, 3, device="meta"))
    assert out.device.type == "meta" and out.shape == (5, 2)


def test_compile_fullgraph_matches_eager():
    torch.manual_seed(0)
    x, w1, b1, w2 = (
        _t(6, 3, dtype=torch.float32),
        _t(5, 3, dtype=torch.float32),
        _t(5, dtype=torch.float32),
        _t(2, 5, dtype=torch.float32),
    )

    def f(x, w1, b1, w2):
        h = LF.linear(x, w1, b1)
        return LF.linear(torch.tanh(h), w2) + LF.neuron(x, w1, b1, surrogate="sigmoid")[:, :2]

    want = f(x, w1, b1, w2)
    want_grads = torch.autograd.grad(want.sum(), (x, w1, b1, w2))
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    got = compiled(x, w1, b1, w2)
    got_grads = torch.autograd.grad(got.sum(), (x, w1, b1, w2))
    torch.testing.assert_close(got, want)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w)
    with torch.no_grad():  # inference takes the fused neuron
        torch.testing.assert_close(compiled(x, w1, b1, w2), want.detach())


@pytest.mark.filterwarnings(_TORCH24_EXPORT_NOTICE)
def test_export_contains_linneuron_ops():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(4, 3))
            self.b = torch.nn.Parameter(torch.randn(4))

        def forward(self, x):
            return LF.neuron(LF.linear(x, self.w, self.b), torch.ones(1, 4), surrogate="atan")

    model = Model()
    x = torch.randn(8, 3)
    with torch.no_grad():
        program = torch.export.export(model, (x,))
    code = program.graph_module.code
    assert "torch.ops.linneuron.linear.default" in code and "torch.ops.linneuron.neuron.default" in code
    torch.testing.assert_close(program.module()(x), model(x).detach())
    x2 = torch.randn(8, 3)
    torch.testing.assert_close(program.module()(x2), model(x2).detach())


def test_cuda_tensor_without_cuda_module_says_why():
    # torch here may be a CPU build, so a stand-in with the attributes _kernels reads plays the CUDA tensor.
    from linneuron import _cuda_loader

    module, reason = _cuda_loader.status()
    if reason is None:
        pytest.skip("linneuron's CUDA kernels are available here")
    fake_cuda = types.SimpleNamespace(is_cpu=False, is_cuda=True, dtype=torch.float32, device=torch.device("cuda", 0))
    with pytest.raises(RuntimeError, match=r"linear: got a CUDA tensor, but linneuron's CUDA kernels are unavailable"):
        _kernels._backend(fake_cuda, "linear")


def test_eager_fast_path_and_ops_give_identical_bits():
    torch.manual_seed(0)
    x, w, b = torch.randn(33, 17), torch.randn(9, 17), torch.randn(9)
    assert torch.equal(LF.linear(x, w, b), ops.linear(x, w, b))
    assert torch.equal(LF.neuron(x, w, b), ops.neuron(x, w, b))
    torch.testing.assert_close(ops.linear(x, w, b), TF.linear(x, w, b), rtol=1e-5, atol=1e-5)


# ---- CUDA (run where a GPU and linneuron's _cuda module exist; skipped otherwise) -----------------------------


def _cuda_kernels_ready() -> bool:
    from linneuron import _cuda_loader

    return torch.cuda.is_available() and _cuda_loader.status()[1] is None


needs_cuda = pytest.mark.skipif(not _cuda_kernels_ready(), reason="needs a CUDA GPU and linneuron's _cuda module")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_cuda_tensor_without_cuda_kernels_says_why():
    from linneuron import _cuda_loader

    if _cuda_loader.status()[1] is None:
        pytest.skip("linneuron's CUDA kernels are available here")
    x = torch.randn(2, 3, device="cuda")
    with pytest.raises(RuntimeError, match="CUDA kernels are unavailable"):
        LF.linear(x, torch.randn(1, 3, device="cuda"))


_CUDA_TOL = {
    torch.float32: {"rtol": 2e-5, "atol": 2e-5},
    torch.float64: {"rtol": 1e-12, "atol": 1e-12},
    torch.float16: {"rtol": 2e-3, "atol": 2e-3},
    torch.bfloat16: {"rtol": 1.6e-2, "atol": 1.6e-2},
}


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", list(_CUDA_TOL))
@pytest.mark.parametrize("shape", [(16,), (0, 16), (37, 16), (2, 5, 16)])
def test_cuda_linear_and_gradients_match_float64_reference(dtype, shape):
    torch.manual_seed(0)
    dims = list(range(len(shape)))[::-1]
    x = _leaf(torch.randn(shape[::-1], device="cuda", dtype=dtype).permute(dims))  # column-major storage
    w = torch.randn(8, 16, device="cuda", dtype=dtype, requires_grad=True)
    b = torch.randn(8, device="cuda", dtype=dtype, requires_grad=True)
    out = LF.linear(x, w, b)
    gy = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, w, b), gy)
    ref = [t.detach().double().requires_grad_() for t in (x, w, b)]
    ref_out = TF.linear(*ref)
    ref_grads = torch.autograd.grad(ref_out, ref, gy.double())
    torch.testing.assert_close(out, ref_out.to(dtype), **_CUDA_TOL[dtype])
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want.to(dtype), **_CUDA_TOL[dtype])
    with torch.no_grad():
        z = ref_out.detach()
        keep = z.abs() > 0.05  # away from the rounding edge of 16-bit sums
        assert torch.equal(LF.neuron(x, w, b)[keep], (z >= 0).to(dtype)[keep])
        assert torch.equal(LF.step(out), (out >= 0).to(dtype))


@pytest.mark.cuda
@needs_cuda
def test_cuda_side_stream_compile_opcheck_and_autocast():
    torch.manual_seed(0)
    x, w, b = (torch.randn(*s, device="cuda") for s in ((64, 32), (16, 32), (16,)))
    want = TF.linear(x, w, b)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = LF.linear(x, w, b)
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)
    compiled = torch.compile(lambda x, w, b: LF.neuron(x, w, b) + LF.linear(x, w, b), fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, w, b), (want >= 0).float() + want, rtol=2e-5, atol=2e-5)
    torch.library.opcheck(ops.linear, (x.double().requires_grad_(), w.double().requires_grad_(), b.double()))
    with torch.autocast("cuda", dtype=torch.float16):
        auto = LF.linear(x, w, b)
        auto_ref = TF.linear(x, w, b)
    assert auto.dtype == auto_ref.dtype == torch.float16
    torch.testing.assert_close(auto, auto_ref, rtol=2e-3, atol=2e-3)


def test_ops_reject_unknown_surrogate_codes_and_slopes():
    z = torch.randn(3)
    with pytest.raises(ValueError, match="surrogate code must be one of"):
        ops.step(z, 7, 1.0)
    with pytest.raises(ValueError, match="alpha must be positive"):
        ops.step_backward(z, z, 3, 0.0)
