"""linneuron.functional against torch: F.linear parity (outputs, all gradients) on torch's OpInfo samples, layouts,
the exact step, surrogate derivatives against their formulas in torch ops, the fused neuron, and error messages."""

from __future__ import annotations

import math

import linneuron.functional as LF
import pytest
import torch
import torch.nn.functional as TF

DTYPES = [torch.float32, torch.float64]


def _linear_samples(dtype, requires_grad):
    """torch's own sample inputs for nn.functional.linear (1-D input, empty batch, many leading dims, no bias),
    each also in its non-contiguous form."""
    from torch.testing._internal.common_methods_invocations import op_db

    (info,) = [op for op in op_db if op.name == "nn.functional.linear"]
    for sample in info.sample_inputs("cpu", dtype, requires_grad=requires_grad):
        yield sample
        yield sample.noncontiguous()


def _tolerance(dtype, k):
    # float32 error grows with the length of the dot products: scale with sqrt(K) (compare to a float64 result).
    if dtype == torch.float64:
        return {"rtol": 1e-12, "atol": 1e-12}
    return {"rtol": 1.3e-6 * math.sqrt(max(k, 1)), "atol": 1e-5 * math.sqrt(max(k, 1))}


def _grads(fn, input, weight, bias, grad_output):
    out = fn(input, weight, bias)
    leaves = [t for t in (input, weight, bias) if t is not None]
    return out, torch.autograd.grad(out, leaves, grad_output, allow_unused=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_matches_F_linear_on_opinfo_samples(dtype):
    count = 0
    for sample in _linear_samples(dtype, requires_grad=True):
        input, weight = sample.input, sample.args[0]
        bias = sample.args[1] if len(sample.args) > 1 else None
        grad_output = torch.randn((*input.shape[:-1], weight.shape[0]), dtype=dtype)
        out, grads = _grads(LF.linear, input, weight, bias, grad_output)
        ref64 = [t.detach().double().requires_grad_() if t is not None else None for t in (input, weight, bias)]
        ref_out, ref_grads = _grads(TF.linear, *ref64, grad_output.double())
        tol = _tolerance(dtype, max(input.shape[-1], input.numel() // max(input.shape[-1], 1)))
        assert out.shape == ref_out.shape and out.dtype == dtype
        torch.testing.assert_close(out, ref_out.to(dtype), **tol)
        for got, want in zip(grads, ref_grads):
            assert got.shape == want.shape and got.dtype == dtype
            torch.testing.assert_close(got, want.to(dtype), **tol)
        count += 1
    assert count >= 36


LAYOUTS = {
    "contiguous": lambda t: t,
    "transposed": lambda t: t.t().contiguous().t(),  # column-major storage of a row-major shape
    "sliced": lambda t: torch.cat([t, t], dim=-1)[..., ::2],  # element stride 2
    "expanded": lambda t: t[:1].expand_as(t),  # stride 0 over rows
}


@pytest.mark.parametrize("x_layout", list(LAYOUTS))
@pytest.mark.parametrize("w_layout", list(LAYOUTS))
def test_linear_strided_operands(x_layout, w_layout):
    torch.manual_seed(0)
    x = LAYOUTS[x_layout](torch.randn(7, 5, dtype=torch.float64)).requires_grad_()
    w = LAYOUTS[w_layout](torch.randn(3, 5, dtype=torch.float64)).requires_grad_()
    b = torch.randn(6, dtype=torch.float64)[::2].requires_grad_()  # bias with stride 2
    gy = torch.randn(7, 3, dtype=torch.float64)
    out, grads = _grads(LF.linear, x, w, b, gy)
    ref_out, ref_grads = _grads(TF.linear, x, w, b, gy)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_linear_leading_dims_that_need_a_copy_and_expanded_grad():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, dtype=torch.float64).permute(1, 0, 2).requires_grad_()  # rows not one stride
    w = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    out = LF.linear(x, w)
    torch.testing.assert_close(out, TF.linear(x, w), rtol=1e-12, atol=1e-12)
    out.sum().backward()  # the incoming gradient is an expanded (all strides 0) tensor
    gx, gw = x.grad, w.grad
    x.grad = w.grad = None
    TF.linear(x, w).sum().backward()
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gw, w.grad)


def test_linear_broadcast_input_stride_zero_everywhere():
    x = torch.tensor(2.0, dtype=torch.float64).expand(6, 4)
    w = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    torch.testing.assert_close(LF.linear(x, w), TF.linear(x, w))


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_gives_zero_weight_and_bias_grads(dtype):
    x = torch.randn(0, 3, dtype=dtype, requires_grad=True)
    w = torch.randn(2, 3, dtype=dtype, requires_grad=True)
    b = torch.randn(2, dtype=dtype, requires_grad=True)
    out = LF.linear(x, w, b)
    assert out.shape == (0, 2)
    out.sum().backward()
    assert torch.equal(w.grad, torch.zeros(2, 3, dtype=dtype)) and torch.equal(b.grad, torch.zeros(2, dtype=dtype))
    assert x.grad.shape == (0, 3)


def test_zero_in_features_gives_bias():
    x, w, b = torch.randn(4, 0), torch.randn(3, 0), torch.randn(3)
    torch.testing.assert_close(LF.linear(x, w, b), b.expand(4, 3))
    assert torch.equal(LF.linear(x, w), torch.zeros(4, 3))


@pytest.mark.parametrize(
    "needs", [(True, False, False), (False, True, False), (False, False, True), (False, True, True)]
)
def test_only_requested_gradients_are_computed(needs):
    tensors = [torch.randn(5, 3), torch.randn(2, 3), torch.randn(2)]
    for t, need in zip(tensors, needs):
        t.requires_grad_(need)
    LF.linear(*tensors).sum().backward()
    for t, need in zip(tensors, needs):
        assert (t.grad is not None) == need


# ---- step ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_step_is_exact_heaviside(dtype):
    z = torch.tensor([-math.inf, -2.0, -1e-30, -0.0, 0.0, 1e-30, 3.0, math.inf, math.nan], dtype=dtype)
    # torch.heaviside(z, 1) sets H(±0) = 1 as linneuron does, but maps NaN to 0; linneuron keeps NaN.
    want = torch.where(z.isnan(), z, torch.heaviside(z, torch.tensor(1.0, dtype=dtype)))
    for surrogate in (None, "ste", "sigmoid", "atan"):
        torch.testing.assert_close(LF.step(z, surrogate), want, equal_nan=True, rtol=0, atol=0)


def test_step_shapes_and_layouts():
    torch.manual_seed(0)
    base = torch.randn(4, 6, 5)
    for z in (base, base.permute(2, 0, 1), base[:, ::2], base[:1].expand(3, 6, 5), torch.tensor(-0.5), base[:0]):
        out = LF.step(z)
        assert out.shape == z.shape
        assert torch.equal(out, (z >= 0).to(z.dtype))


def _surrogate_reference(name, z, alpha):
    """s'(z) written directly from the documented formulas, in float64 torch ops."""
    if name is None:
        return torch.zeros_like(z)
    if name == "ste":
        return ((alpha * z).abs() <= 1).to(z.dtype)
    if name == "sigmoid":
        s = torch.sigmoid(alpha * z)
        return alpha * s * (1 - s)
    return (alpha / 2) / (1 + (math.pi / 2 * alpha * z) ** 2)


@pytest.mark.parametrize("surrogate", [None, "ste", "sigmoid", "atan"])
@pytest.mark.parametrize("alpha", [None, 0.5, 3.0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_step_backward_is_the_surrogate_derivative(surrogate, alpha, dtype):
    defaults = {None: 0.0, "ste": 1.0, "sigmoid": 4.0, "atan": 2.0}
    a = defaults[surrogate] if alpha is None else alpha
    torch.manual_seed(0)
    z = (torch.randn(6, 7, dtype=torch.float64) * 2).to(dtype).requires_grad_()
    gy = torch.randn(6, 7, dtype=dtype)
    (gz,) = torch.autograd.grad(LF.step(z, surrogate, alpha), z, gy)
    want = gy.double() * _surrogate_reference(surrogate, z.detach().double(), a)
    tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(gz, want.to(dtype), **tol)


def test_step_backward_mixed_layouts():
    torch.manual_seed(0)
    z = torch.randn(5, 6, dtype=torch.float64)
    gy = torch.randn(6, 5, dtype=torch.float64)
    want = LF._step_backward(gy.t().contiguous(), z, 3, 2.0)
    assert torch.equal(LF._step_backward(gy.t(), z, 3, 2.0), want)  # transposed grad, contiguous z
    assert torch.equal(LF._step_backward(gy.t().contiguous(), z.t().contiguous().t(), 3, 2.0), want)
    ones = torch.ones(1, 1, dtype=torch.float64).expand(5, 6)  # stride 0, as from out.sum().backward()
    torch.testing.assert_close(LF._step_backward(ones, z, 3, 2.0), _surrogate_reference("atan", z, 2.0))


def test_default_surrogate_is_atan_with_alpha_2():
    z = torch.tensor([0.0, 0.3, -1.2], dtype=torch.float64, requires_grad=True)
    (g_default,) = torch.autograd.grad(LF.step(z).sum(), z)
    (g_atan,) = torch.autograd.grad(LF.step(z, "atan", 2.0).sum(), z)
    assert torch.equal(g_default, g_atan)
    assert g_default[0].item() == pytest.approx(1.0)  # alpha / 2 at z = 0


def test_surrogate_second_derivative_gradcheck():
    torch.manual_seed(0)
    z = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    for code in (0, 1, 2, 3):

        def backward_fn(gy, z, code=code):
            return LF._step_backward(gy, z, code, 1.7)

        assert torch.autograd.gradcheck(backward_fn, (gy, z))
        assert torch.autograd.gradgradcheck(backward_fn, (gy, z))


def test_bad_surrogate_and_alpha():
    z = torch.zeros(3)
    with pytest.raises(ValueError, match="surrogate must be one of"):
        LF.step(z, "relu")
    with pytest.raises(ValueError, match="alpha must be a positive"):
        LF.step(z, "atan", -1.0)
    with pytest.raises(TypeError, match="alpha must be a float"):
        LF.step(z, "atan", "2")


# ---- neuron -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_neuron_is_step_of_linear(dtype):
    torch.manual_seed(0)
    x, w, b = torch.randn(9, 4, dtype=dtype), torch.randn(3, 4, dtype=dtype), torch.randn(3, dtype=dtype)
    z = TF.linear(x.double(), w.double(), b.double())
    keep = (z.abs() > 1e-5).all(dim=1)  # rows whose sums are not on a float32 rounding edge
    want = (z >= 0).to(dtype)
    assert torch.equal(LF.neuron(x, w, b)[keep], want[keep])
    assert keep.sum() >= 5


def test_neuron_fires_at_exact_zero_sum():
    x = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    w = torch.tensor([[1.0, 1.0]])
    assert LF.neuron(x, w, torch.tensor([-2.0])).flatten().tolist() == [1.0, 0.0]


def test_neuron_training_path_matches_linear_then_step():
    torch.manual_seed(0)
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(6, 2, dtype=torch.float64)
    for surrogate in ("ste", "sigmoid", "atan"):
        out, grads = _grads(lambda *a, s=surrogate: LF.neuron(*a, surrogate=s, alpha=1.5), x, w, b, gy)
        ref_out, ref_grads = _grads(lambda *a, s=surrogate: LF.step(TF.linear(*a), s, 1.5), x, w, b, gy)
        torch.testing.assert_close(out, ref_out)
        for got, want in zip(grads, ref_grads):
            torch.testing.assert_close(got, want)


def test_neuron_exact_surrogate_gives_zero_gradients():
    x = torch.randn(3, 2, requires_grad=True)
    w = torch.randn(1, 2, requires_grad=True)
    LF.neuron(x, w, surrogate=None).sum().backward()
    assert torch.equal(x.grad, torch.zeros(3, 2)) and torch.equal(w.grad, torch.zeros(1, 2))


# ---- errors -------------------------------------------------------------------------------------------------


def test_errors_name_arguments_shapes_and_dtypes():
    x, w = torch.randn(8, 3), torch.randn(2, 4)
    expected = r"input has 3 features but weight expects 4 \(input \(8, 3\), weight \(2, 4\)\)"
    with pytest.raises(ValueError, match=expected):
        LF.linear(x, w)
    with pytest.raises(ValueError, match="weight must be 2-D"):
        LF.linear(x, torch.randn(3))
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\)"):
        LF.linear(x, torch.randn(2, 3), torch.randn(3))
    with pytest.raises(ValueError, match="at least 1 dimension"):
        LF.linear(torch.tensor(1.0), torch.randn(2, 1))
    with pytest.raises(TypeError, match="same dtype, got input torch.float32, weight torch.float64"):
        LF.linear(x, torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="bias torch.float64"):
        LF.neuron(x, torch.randn(2, 3), torch.randn(2, dtype=torch.float64))
    with pytest.raises(TypeError, match="weight must be a Tensor"):
        LF.linear(x, [[1.0, 2.0, 3.0]])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_mixed_with_float32_on_cpu_is_a_type_error(dtype):
    x, w = torch.randn(4, 3, dtype=dtype), torch.randn(2, 3)
    for call in (lambda: LF.linear(x, w), lambda: LF.neuron(x, w), lambda: LF.linear(w, w, torch.ones(2, dtype=dtype))):
        with pytest.raises(TypeError, match=r"same dtype, got input torch.\w+, weight torch.\w+"):
            call()


def test_integer_and_complex_inputs_are_type_errors():
    with pytest.raises(TypeError, match="floating-point"):
        LF.linear(torch.ones(2, 3, dtype=torch.int64), torch.ones(1, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="floating-point"):
        LF.step(torch.ones(2, dtype=torch.complex64))


def test_mixed_devices_raise_like_nn_linear():
    x = torch.randn(4, 3)
    w = torch.randn(2, 3, device="meta")
    with pytest.raises(RuntimeError, match="same device, got input on cpu, weight on meta"):
        LF.linear(x, w)


# ---- torch.func transforms ----------------------------------------------------------------------------------


def _func_data():
    torch.manual_seed(0)
    return (
        torch.randn(5, 3, dtype=torch.float64),
        torch.randn(2, 3, dtype=torch.float64),
        torch.randn(2, dtype=torch.float64),
    )


def test_vmap_over_inputs_and_per_sample_weights():
    from torch.func import vmap

    x, w, b = _func_data()
    xs = torch.randn(4, 5, 3, dtype=torch.float64)
    ws = torch.randn(4, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(vmap(lambda x: LF.linear(x, w, b))(xs), TF.linear(xs, w, b))
    torch.testing.assert_close(
        vmap(lambda x: LF.linear(x, w), in_dims=1)(xs), vmap(lambda x: TF.linear(x, w), in_dims=1)(xs)
    )
    torch.testing.assert_close(vmap(lambda w: LF.linear(x, w, b))(ws), vmap(lambda w: TF.linear(x, w, b))(ws))
    assert torch.equal(vmap(lambda x: LF.neuron(x, w, b))(xs), (TF.linear(xs, w, b) >= 0).double())
    assert torch.equal(vmap(LF.step, in_dims=2)(xs), (xs >= 0).double().permute(2, 0, 1))


def test_func_grad_jacrev_and_per_sample_gradients_match_F_linear():
    from torch.func import grad, jacrev, vmap

    x, w, b = _func_data()
    jac = jacrev(LF.linear, argnums=(0, 1, 2))(x, w, b)
    jac_ref = jacrev(TF.linear, argnums=(0, 1, 2))(x, w, b)
    for got, want in zip(jac, jac_ref):
        torch.testing.assert_close(got, want)

    def per_sample(fn):
        return vmap(grad(lambda w, b, xi: fn(xi, w, b).square().sum(), argnums=(0, 1)), in_dims=(None, None, 0))(
            w, b, x
        )

    for got, want in zip(per_sample(LF.linear), per_sample(TF.linear)):
        torch.testing.assert_close(got, want)
    z = torch.randn(4, 6, dtype=torch.float64)
    s = torch.sigmoid(4.0 * z)
    torch.testing.assert_close(grad(lambda z: LF.step(z, "sigmoid").sum())(z), 4.0 * s * (1 - s))
    assert torch.equal(grad(lambda w: LF.neuron(x, w, b, surrogate=None).sum())(w), torch.zeros_like(w))


# torch's forward-mode decompositions script themselves with the deprecated torch.jit.script (not our code).
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_forward_mode_jacfwd_and_hessian():
    from torch.func import hessian, jacfwd, jacrev

    x, w, b = _func_data()
    for got, want in zip(jacfwd(LF.linear, argnums=(0, 1, 2))(x, w, b), jacfwd(TF.linear, argnums=(0, 1, 2))(x, w, b)):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(
        hessian(lambda w: LF.linear(x, w, b).square().sum())(w), hessian(lambda w: TF.linear(x, w, b).square().sum())(w)
    )
    import torch.autograd.forward_ad as fwAD

    tangent = torch.randn_like(w)
    with fwAD.dual_level():  # eager forward-mode AD, outside torch.func
        dual = fwAD.make_dual(w, tangent)
        got, want = (fwAD.unpack_dual(fn(x, dual, b)).tangent for fn in (LF.linear, TF.linear))
    torch.testing.assert_close(got, want)
    z, g = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    for code in (1, 2, 3):

        def backward_fn(g, z, code=code):
            return LF._step_backward(g, z, code, 1.3)

        for got, want in zip(jacfwd(backward_fn, argnums=(0, 1))(g, z), jacrev(backward_fn, argnums=(0, 1))(g, z)):
            torch.testing.assert_close(got, want)
