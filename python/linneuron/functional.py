"""Functional torch API of linneuron: ``linear`` (as F.linear), ``step`` (surrogate gradients) and fused ``neuron``.

>>> import torch, linneuron.functional as LF
>>> x = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
>>> LF.neuron(x, torch.tensor([[-0.5, 0.3, 0.3]]))
tensor([[0.],
        [1.]])

How a call runs. First the compiled fast path (src/cpp/fastpath.cpp, set up in _fastpath.py): for plain CPU
tensors of a known dtype in plain eager mode, one C call checks the operands, reads them, allocates the result and
runs the kernel; in grad mode it hands the result to a thin autograd.Function (``_FastLinear``/``_FastStep``)
whose backward again goes straight to the kernels. Whatever it does not take (it returns None) runs the general
path, unchanged: its checks, its error messages, its handling of unusual memory. In plain eager mode (real
CPU/CUDA tensors, no torch.compile, export, fake tensors, dispatch or function modes, functorch transforms or CUDA
autocast) that path calls the kernels through ``_kernels`` (through a small ``torch.autograd.Function`` when a
gradient is needed), which saves the dispatcher's per-call cost. Everywhere else it calls the registered
``torch.ops.linneuron`` ops (ops.py), which carry fake kernels and autograd formulas, so
``torch.compile(fullgraph=True)`` and ``torch.export`` see one opaque op per call. Under torch.func transforms
(vmap, grad, jacrev, jacfwd, ...) and forward-mode AD, functorch-style autograd.Functions (with jvp and generated
vmap rules) wrap the same ops. All paths run the same kernels and the same derivative formulas.

The fused ``neuron`` applies the step inside the GEMM epilogue, so the weighted sum z is never stored. That is
used whenever no gradient is needed (inference) or the surrogate is None (the exact gradient is zero). Training
with a surrogate needs z in the backward pass (dH/dz ≈ s'(z)), so then ``neuron`` computes z = linear(...) and
``step(z)``, keeping z: the same result, one more (rows x out_features) tensor in memory.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as _forward_ad

from . import _core, _fastpath, _kernels, ops
from ._surrogate import DEFAULT_SURROGATE, resolve, second_derivative_factor

__all__ = ["linear", "neuron", "step"]

_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)
_dispatch_stack_len = torch._C._len_torch_dispatch_stack
_function_mode_on = torch._C._is_torch_function_mode_enabled
_functorch_level = torch._C._functorch.peek_interpreter_stack
_is_compiling = torch.compiler.is_compiling
# The guard that keeps torch.compile's tracer off the compiled fast path (it cannot trace a C call); the cheapest
# one this torch has. Other tracers (export, fake tensors, modes) are caught inside the fast path.
_dynamo_compiling = getattr(torch.compiler, "is_dynamo_compiling", None) or _is_compiling
_fast_linear = _core.fast_linear
_fast_step = _core.fast_step
_fast_linear_backward = _core.fast_linear_backward
_fast_step_backward = _core.fast_step_backward


def _direct(input: torch.Tensor, *others: torch.Tensor | None) -> bool:
    """True when plain eager kernels may serve this call (see the module docstring); else use torch.ops."""
    if _is_compiling() or _dispatch_stack_len() or _function_mode_on() or _functorch_level() is not None:
        return False
    if _forward_ad._current_level >= 0:  # inside torch.autograd.forward_ad.dual_level(): needs jvp formulas
        return False
    if type(input) not in _PLAIN_TYPES:
        return False
    for t in others:
        if t is not None and type(t) not in _PLAIN_TYPES:
            return False
    if input.is_cpu:  # autocast: the dispatcher's Autocast rule (ops.py) casts first
        return not torch.is_autocast_enabled("cpu")
    return input.is_cuda and not torch.is_autocast_enabled("cuda")


_RESOLVED: dict = {}  # (surrogate, alpha) -> resolve()'s answer, for valid str/None names and None/float slopes


def _resolve(surrogate, alpha, fn: str) -> tuple[int, float]:
    """surrogate.resolve, answered from a small cache for the argument types that cannot change its meaning."""
    cacheable = (alpha is None or type(alpha) is float) and (surrogate is None or type(surrogate) is str)
    if cacheable:
        hit = _RESOLVED.get((surrogate, alpha))
        if hit is not None:
            return hit
    result = resolve(surrogate, alpha, fn)  # raises for bad names and slopes (nothing is cached then)
    if cacheable and len(_RESOLVED) < 256:
        _RESOLVED[surrogate, alpha] = result
    return result


def _wants_grad(*tensors: torch.Tensor | None) -> bool:
    if not torch.is_grad_enabled():
        return False
    return any(t is not None and t.requires_grad for t in tensors)


class _LinearFunction(torch.autograd.Function):
    """Eager fast path of ops.linear with the same backward formula (ops.linear_backward)."""

    @staticmethod
    def forward(ctx, input, weight, bias):
        ctx.save_for_backward(input if ctx.needs_input_grad[1] else None, weight if ctx.needs_input_grad[0] else None)
        ctx.has_bias = bias is not None
        return _kernels.linear(input, weight, bias, False, "linear")

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        return _linear_backward_eager(ctx.needs_input_grad, grad_output, input, weight, ctx.has_bias)


def _linear_backward_eager(needs, grad_output, input, weight, has_bias):
    """The general eager backward of linear: differentiable formulas in grad mode, else the kernels directly."""
    if torch.is_grad_enabled() or type(grad_output) is not torch.Tensor:
        # create_graph=True (double backward) or an unusual gradient: the differentiable formulas.
        return ops.linear_backward(needs, grad_output, input, weight, has_bias)
    # The same products straight on the kernels (operands were checked in forward).
    grad_input = grad_weight = grad_bias = None
    if needs[0]:
        grad_input = _kernels.linear(grad_output, weight.t(), None, False, "linear_backward")
    if needs[1]:
        rows = ops._as_rows
        grad_weight = _kernels.linear(rows(grad_output).t(), rows(input).t(), None, False, "linear_backward")
    if has_bias and needs[2]:
        grad_bias = _kernels.bias_grad(grad_output)
    return grad_input, grad_weight, grad_bias


# FunctionCtx.save_for_backward(*t) is `self.to_save = t` (torch 2.4 to 2.13 at least); assigning ctx.to_save
# directly saves its Python call (~0.1 µs of a ~4 µs grad-mode call). apply() still saves them as SavedVariables, with
# the version-counter check against in-place changes. A torch that does something else gets the method call (and
# the Python forwards below).
_SAVE_BY_TO_SAVE = _fastpath.save_is_to_save()
_fast_take = _core.fast_take


def _take_recorded(ctx):
    """The result the fast path left for this apply, with the tensors backward needs saved on ctx."""
    saved, result = _fast_take()
    if _SAVE_BY_TO_SAVE:
        ctx.to_save = saved
    else:
        ctx.save_for_backward(*saved)
    return result


def _py_linear_forward(ctx, input, weight, bias):
    return _take_recorded(ctx)


def _py_step_forward(ctx, input, surrogate, alpha):
    ctx.surrogate, ctx.alpha = surrogate, alpha
    return _take_recorded(ctx)


# The forwards: _core's C functions (the same steps as the Python ones above, without a Python frame inside
# apply) where saving is assigning ctx.to_save; else the Python ones.
_C_FORWARDS = _SAVE_BY_TO_SAVE and hasattr(_core, "fast_linear_forward")


class _FastLinear(torch.autograd.Function):
    """Records a linear the compiled fast path already computed; backward's products go to the kernels in one C
    call.

    The C side hands forward the result and the tensors to save (X only if W requires grad, W only if X does)
    through a thread-local slot, not as apply() arguments, which autograd would treat as inputs (and the result as
    one of them). Old-style (forward takes ctx): one call per apply instead of forward + setup_context. The
    operands are saved through ctx.to_save (save_for_backward), not as plain ctx attributes, so that autograd's
    version counters still catch an in-place change of input or weight between forward and backward. Whether
    there is a bias needs no attribute: needs_input_grad[2] is False for a bias of None.
    """

    forward = staticmethod(_core.fast_linear_forward if _C_FORWARDS else _py_linear_forward)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grads = _fast_linear_backward(grad_output, input, weight, needs[0], needs[1], needs[2])
        if grads is None:
            grads = _linear_backward_eager(needs, grad_output, input, weight, needs[2])
        return grads


class _FastStep(torch.autograd.Function):
    """Records a step the compiled fast path already computed (see _FastLinear)."""

    forward = staticmethod(_core.fast_step_forward if _C_FORWARDS else _py_step_forward)

    @staticmethod
    def backward(ctx, grad_output):
        (z,) = ctx.saved_tensors
        return _step_backward(grad_output, z, ctx.surrogate, ctx.alpha), None, None


_fastpath.init(_FastLinear, _FastStep)


class _StepFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, surrogate, alpha):
        ctx.save_for_backward(input)
        ctx.surrogate, ctx.alpha = surrogate, alpha
        return _kernels.step(input)

    @staticmethod
    def backward(ctx, grad_output):
        (z,) = ctx.saved_tensors
        return _step_backward(grad_output, z, ctx.surrogate, ctx.alpha), None, None


class _StepBackwardFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad_output, input, surrogate, alpha):
        ctx.save_for_backward(grad_output, input)
        ctx.surrogate, ctx.alpha = surrogate, alpha
        return _kernels.step_backward(grad_output, input, surrogate, alpha)

    @staticmethod
    def backward(ctx, grad):
        grad_output, z = ctx.saved_tensors
        needs = ctx.needs_input_grad
        d_go, d_z = ops.step_backward_backward(needs, grad, grad_output, z, ctx.surrogate, ctx.alpha)
        return d_go, d_z, None, None


class _BiasGradFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad_output):
        ctx.shape = grad_output.shape
        return _kernels.bias_grad(grad_output)

    @staticmethod
    def backward(ctx, grad):
        return grad.expand(ctx.shape)


# ---- torch.func (vmap, grad, jacrev, ...): autograd.Functions in the functorch style, calling the registered ops
# (which carry vmap rules). torch's own register_autograd formulas are not functorch-compatible, so under a
# functorch transform every differentiable call goes through one of these instead.


class _FuncLinear(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, weight, bias):
        return ops.linear(input, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias = inputs
        ctx.save_for_backward(input, weight)
        ctx.save_for_forward(input, weight)
        ctx.has_bias = bias is not None
        ctx.out_shape = output.shape

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        return ops.linear_backward(ctx.needs_input_grad, grad_output, input, weight, ctx.has_bias)

    @staticmethod
    def jvp(ctx, input_t, weight_t, bias_t):
        input, weight = ctx.saved_tensors  # d(X Wᵀ + b) = dX Wᵀ + X dWᵀ + db
        terms = []
        if input_t is not None:
            terms.append(linear(input_t, weight))
        if weight_t is not None:
            terms.append(linear(input, weight_t))
        if bias_t is not None:
            terms.append(bias_t.expand(ctx.out_shape))
        return sum(terms[1:], terms[0])


class _FuncNeuron(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, weight, bias):
        return ops.neuron(input, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.shapes = [None if t is None else t.shape for t in inputs]
        ctx.out_shape = output.shape

    @staticmethod
    def backward(ctx, grad_output):  # exact derivative: zeros
        return tuple(grad_output.new_zeros(shape) if shape is not None else None for shape in ctx.shapes)

    @staticmethod
    def jvp(ctx, input_t, weight_t, bias_t):
        tangent = next(t for t in (input_t, weight_t, bias_t) if t is not None)
        return tangent.new_zeros(ctx.out_shape)


class _FuncStep(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, surrogate, alpha):
        return ops.step(input, surrogate, alpha)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])
        ctx.surrogate, ctx.alpha = inputs[1], inputs[2]

    @staticmethod
    def backward(ctx, grad_output):
        (z,) = ctx.saved_tensors
        return _step_backward(grad_output, z, ctx.surrogate, ctx.alpha), None, None

    @staticmethod
    def jvp(ctx, input_t, surrogate_t, alpha_t):
        (z,) = ctx.saved_tensors
        return _step_backward(input_t, z, ctx.surrogate, ctx.alpha)


class _FuncStepBackward(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(grad_output, input, surrogate, alpha):
        return ops.step_backward(grad_output, input, surrogate, alpha)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], inputs[1])
        ctx.save_for_forward(inputs[0], inputs[1])
        ctx.surrogate, ctx.alpha = inputs[2], inputs[3]

    @staticmethod
    def jvp(ctx, grad_output_t, input_t, surrogate_t, alpha_t):
        grad_output, z = ctx.saved_tensors  # d(g s'(z)) = dg s'(z) + g s''(z) dz
        terms = []
        if grad_output_t is not None:
            terms.append(_step_backward(grad_output_t, z, ctx.surrogate, ctx.alpha))
        if input_t is not None:
            terms.append(grad_output * second_derivative_factor(ctx.surrogate, z, ctx.alpha) * input_t)
        return sum(terms[1:], terms[0])

    @staticmethod
    def backward(ctx, grad):
        grad_output, z = ctx.saved_tensors
        needs = ctx.needs_input_grad
        d_go, d_z = ops.step_backward_backward(needs, grad, grad_output, z, ctx.surrogate, ctx.alpha)
        return d_go, d_z, None, None


class _FuncBiasGrad(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(grad_output):
        return ops.bias_grad(grad_output)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.shape = inputs[0].shape

    @staticmethod
    def backward(ctx, grad):
        return grad.expand(ctx.shape)

    @staticmethod
    def jvp(ctx, grad_output_t):
        return _bias_grad(grad_output_t)


def _in_functorch() -> bool:
    """True under a torch.func transform or forward-mode AD: use the _Func* autograd.Functions."""
    return not _is_compiling() and (_functorch_level() is not None or _forward_ad._current_level >= 0)


def linear(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``input @ weight.T + bias`` with linneuron's kernels: same signature, shapes and gradients as F.linear.

    input ``(*, in_features)``, weight ``(out_features, in_features)``, bias ``(out_features,)`` or None;
    result ``(*, out_features)``. Any strides (transposed, sliced, expanded) are read in place.

    >>> linear(torch.ones(2, 3), torch.ones(4, 3)).shape
    torch.Size([2, 4])
    """
    if not _dynamo_compiling():
        out = _fast_linear(input, weight, bias, False)
        if out is not None:
            return out
    return _linear_general(input, weight, bias)


def _linear_general(input, weight, bias):
    """linear() for everything the compiled fast path does not take."""
    _kernels.check_linear(input, weight, bias, "linear")
    if _direct(input, weight, bias):
        if _wants_grad(input, weight, bias):
            return _LinearFunction.apply(input, weight, bias)
        return _kernels.linear(input, weight, bias, False, "linear")
    # The direct kernels name a sparse/mkldnn operand when they fail on it; the dispatcher would not.
    _kernels.check_strided("linear", ("input", input), ("weight", weight), ("bias", bias))
    if _in_functorch():
        return _FuncLinear.apply(input, weight, bias)
    return ops.linear(input, weight, bias)


def _step_code(input: torch.Tensor, code: int, alpha: float) -> torch.Tensor:
    if not _dynamo_compiling():
        out = _fast_step(input, code, alpha)
        if out is not None:
            return out
    return _step_general(input, code, alpha)


def _step_general(input: torch.Tensor, code: int, alpha: float) -> torch.Tensor:
    _kernels.check_step(input)
    if _direct(input):
        if _wants_grad(input):
            return _StepFunction.apply(input, code, alpha)
        return _kernels.step(input)
    _kernels.check_strided("step", ("input", input))
    if _in_functorch():
        return _FuncStep.apply(input, code, alpha)
    return ops.step(input, code, alpha)


def step(input: torch.Tensor, surrogate: str | None = DEFAULT_SURROGATE, alpha: float | None = None) -> torch.Tensor:
    """The unit step H(input): 1 where input >= 0 (also at -0.0), 0 where input < 0, NaN stays NaN.

    The forward pass is exact. The backward pass multiplies the incoming gradient by the ``surrogate``
    derivative s'(z) with slope ``alpha``: None (exact: zero), "ste" (1 where |alpha z| <= 1),
    "sigmoid" (alpha σ(alpha z)(1 - σ(alpha z))) or "atan" ((alpha/2) / (1 + (π/2 alpha z)^2), the default).
    Default slopes: ste 1.0, sigmoid 4.0, atan 2.0. See linneuron._surrogate for the table.

    >>> step(torch.tensor([-1.0, -0.0, 2.0]))
    tensor([0., 1., 1.])
    """
    code, alpha = _resolve(surrogate, alpha, "step")
    return _step_code(input, code, alpha)


def neuron(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    surrogate: str | None = DEFAULT_SURROGATE,
    alpha: float | None = None,
) -> torch.Tensor:
    """The threshold neuron ``H(input @ weight.T + bias)``, gradients through the ``surrogate`` (see ``step``).

    Without a gradient to compute, the step runs inside the GEMM (z never stored); when training with a
    surrogate, z = linear(...) is kept for the backward pass and step(z) applied to it.

    >>> neuron(torch.tensor([[1.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.tensor([-1.0]))
    tensor([[1.]])
    """
    code, alpha = _resolve(surrogate, alpha, "neuron")
    if not _dynamo_compiling():
        out = _fast_linear(input, weight, bias, True)  # None in grad mode: z or the exact-zero formula is needed
        if out is not None:
            return out
        if code != 0:
            # Training with a surrogate: z = linear(...) recorded, then step(z), both on the fast path. (Where
            # the fused call fell back for any other reason, this linear falls back too, and so does neuron.)
            z = _fast_linear(input, weight, bias, False)
            if z is not None:
                return _step_code(z, code, alpha)
    return _neuron_general(input, weight, bias, code, alpha)


def _neuron_general(input, weight, bias, code: int, alpha: float) -> torch.Tensor:
    """neuron() for everything the compiled fast path does not take."""
    _kernels.check_linear(input, weight, bias, "neuron")
    wants_grad = _wants_grad(input, weight, bias)
    if wants_grad and code != 0:
        return _step_code(linear(input, weight, bias), code, alpha)
    if not wants_grad and _direct(input, weight, bias):
        return _kernels.linear(input, weight, bias, True, "neuron")
    _kernels.check_strided("neuron", ("input", input), ("weight", weight), ("bias", bias))
    if _in_functorch():
        return _FuncNeuron.apply(input, weight, bias)
    return ops.neuron(input, weight, bias)


def _step_backward(grad_output: torch.Tensor, z: torch.Tensor, code: int, alpha: float) -> torch.Tensor:
    """grad_output * s'(z), differentiable (for double backward)."""
    if not _dynamo_compiling():
        out = _fast_step_backward(grad_output, z, code, alpha)  # None in grad mode (double backward)
        if out is not None:
            return out
    if _direct(z, grad_output):
        if _wants_grad(grad_output, z):
            return _StepBackwardFunction.apply(grad_output, z, code, alpha)
        return _kernels.step_backward(grad_output, z, code, alpha)
    if _in_functorch():
        return _FuncStepBackward.apply(grad_output, z, code, alpha)
    return ops.step_backward(grad_output, z, code, alpha)


def _bias_grad(grad_output: torch.Tensor) -> torch.Tensor:
    """Sum of grad_output over all but its last dim, differentiable."""
    if _direct(grad_output):
        if _wants_grad(grad_output):
            return _BiasGradFunction.apply(grad_output)
        return _kernels.bias_grad(grad_output)
    if _in_functorch():
        return _FuncBiasGrad.apply(grad_output)
    return ops.bias_grad(grad_output)
