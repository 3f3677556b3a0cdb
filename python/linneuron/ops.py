"""The ``torch.ops.linneuron`` operators: schemas, CPU/CUDA kernels, fake kernels, autograd, autocast, vmap rules.

Ops (registered with ``torch.library.Library.define/impl``, the cheapest registration style per eager call;
see docs/torch.md for the measurements):

- ``linneuron::linear(Tensor input, Tensor weight, Tensor? bias=None) -> Tensor`` — F.linear. Its backward is
  expressed through the same ops (dX = linear(dY, Wᵀ), dW = linear(dYᵀ, Xᵀ), db = bias_grad(dY)), so it is
  differentiable twice.
- ``linneuron::neuron(Tensor input, Tensor weight, Tensor? bias=None) -> Tensor`` — H(linear(...)) with the step
  fused into the GEMM epilogue (the weighted sum never reaches memory). Its derivative is the exact one (zero):
  surrogate training goes through ``linear`` then ``step``, which keeps z for the backward (see functional.py).
- ``linneuron::step(Tensor input, int surrogate=3, float alpha=2.0) -> Tensor`` — exact H(z) forward; backward
  ``step_backward``, the surrogate derivative (codes in _surrogate.py).
- ``linneuron::step_backward(Tensor grad_output, Tensor input, int surrogate, float alpha) -> Tensor``.
- ``linneuron::bias_grad(Tensor grad_output) -> Tensor`` — sums over all but the last dim.

Most code should call linneuron.functional, which adds an eager fast path around these ops.
"""

from __future__ import annotations

import torch

from . import _compat, _kernels
from ._surrogate import SURROGATE_NAMES, second_derivative_factor

__all__ = ["bias_grad", "linear", "neuron", "step", "step_backward"]

_lib = _compat.fresh_library()  # kept by _compat as well: the registrations live as long as the process
_lib.define("linear(Tensor input, Tensor weight, Tensor? bias=None) -> Tensor")
_lib.define("neuron(Tensor input, Tensor weight, Tensor? bias=None) -> Tensor")
_lib.define("step(Tensor input, int surrogate=3, float alpha=2.0) -> Tensor")
_lib.define("step_backward(Tensor grad_output, Tensor input, int surrogate, float alpha) -> Tensor")
_lib.define("bias_grad(Tensor grad_output) -> Tensor")

linear = torch.ops.linneuron.linear.default
neuron = torch.ops.linneuron.neuron.default
step = torch.ops.linneuron.step.default
step_backward = torch.ops.linneuron.step_backward.default
bias_grad = torch.ops.linneuron.bias_grad.default


# ---- real kernels (the same Python function serves CPU and CUDA; _kernels dispatches on the device) ----------


def _linear_kernel(input, weight, bias=None):
    _kernels.check_linear(input, weight, bias, "linear")
    return _kernels.linear(input, weight, bias, False, "linear")


def _neuron_kernel(input, weight, bias=None):
    _kernels.check_linear(input, weight, bias, "neuron")
    return _kernels.linear(input, weight, bias, True, "neuron")


def _check_surrogate(surrogate, alpha, fn):
    """The ops take the kernel code directly (linneuron.functional maps names to codes and checks them)."""
    if surrogate not in SURROGATE_NAMES:
        raise ValueError(f"{fn}(): surrogate code must be one of {sorted(SURROGATE_NAMES)}, got {surrogate}")
    if not alpha > 0:
        raise ValueError(f"{fn}(): alpha must be positive, got {alpha}")


def _step_kernel(input, surrogate=3, alpha=2.0):
    _kernels.check_step(input)
    _check_surrogate(surrogate, alpha, "step")
    return _kernels.step(input)


def _step_backward_kernel(grad_output, input, surrogate, alpha):
    _kernels.check_step(input, "step_backward")
    _check_surrogate(surrogate, alpha, "step_backward")
    return _kernels.step_backward(grad_output, input, surrogate, alpha)


def _bias_grad_kernel(grad_output):
    _kernels.check_step(grad_output, "bias_grad")
    if grad_output.dim() == 0:
        raise ValueError("bias_grad(): grad_output must have at least 1 dimension")
    return _kernels.bias_grad(grad_output)


for _device in ("CPU", "CUDA"):
    _lib.impl("linear", _linear_kernel, _device)
    _lib.impl("neuron", _neuron_kernel, _device)
    _lib.impl("step", _step_kernel, _device)
    _lib.impl("step_backward", _step_backward_kernel, _device)
    _lib.impl("bias_grad", _bias_grad_kernel, _device)


# ---- fake kernels: shapes, strides and dtypes only (all outputs are fresh contiguous tensors) -----------------


@torch.library.register_fake("linneuron::linear", lib=_lib)
def _linear_fake(input, weight, bias=None):
    _kernels.check_linear(input, weight, bias, "linear")
    return input.new_empty((*input.shape[:-1], weight.shape[0]))


@torch.library.register_fake("linneuron::neuron", lib=_lib)
def _neuron_fake(input, weight, bias=None):
    _kernels.check_linear(input, weight, bias, "neuron")
    return input.new_empty((*input.shape[:-1], weight.shape[0]))


@torch.library.register_fake("linneuron::step", lib=_lib)
def _step_fake(input, surrogate=3, alpha=2.0):
    _kernels.check_step(input)
    _check_surrogate(surrogate, alpha, "step")
    return input.new_empty(input.shape)


@torch.library.register_fake("linneuron::step_backward", lib=_lib)
def _step_backward_fake(grad_output, input, surrogate, alpha):
    torch._check(grad_output.shape == input.shape, lambda: "step_backward(): grad_output and input shapes differ")
    return input.new_empty(input.shape)


@torch.library.register_fake("linneuron::bias_grad", lib=_lib)
def _bias_grad_fake(grad_output):
    return grad_output.new_empty((grad_output.shape[-1],))


# ---- autograd -----------------------------------------------------------------------------------------------
# The backward formulas call the public functional API, so in eager mode they take its fast path and under
# torch.compile/export (fake tensors) they call these ops; either way they record a graph for double backward.


def _as_rows(t):
    """(*, C) -> (rows, C) without copying where strides allow (works for empty tensors, unlike reshape(-1, C))."""
    return t.unsqueeze(0) if t.dim() == 1 else t.flatten(0, -2)


def linear_backward(needs, grad_output, input, weight, has_bias):
    """``(dX, dW, db)`` for Y = X Wᵀ + b, each computed only if ``needs[i]`` (else None).

    ``input`` is only read for dW and ``weight`` only for dX (either may be None when not needed).
    """
    from . import functional as F

    grad_input = grad_weight = grad_bias = None
    if needs[0]:
        grad_input = F.linear(grad_output, weight.t())  # dX = dY W
    if needs[1]:
        gy2 = _as_rows(grad_output)
        x2 = _as_rows(input)
        grad_weight = F.linear(gy2.t(), x2.t())  # dW = dYᵀ X
    if has_bias and needs[2]:
        grad_bias = F._bias_grad(grad_output)
    return grad_input, grad_weight, grad_bias


def _linear_setup(ctx, inputs, output):
    input, weight, bias = inputs
    # Keep only what the requested gradients need: X for dW, W for dX.
    ctx.save_for_backward(input if ctx.needs_input_grad[1] else None, weight if ctx.needs_input_grad[0] else None)
    ctx.has_bias = bias is not None


def _linear_autograd_backward(ctx, grad_output):
    input, weight = ctx.saved_tensors
    return linear_backward(ctx.needs_input_grad, grad_output, input, weight, ctx.has_bias)


torch.library.register_autograd("linneuron::linear", _linear_autograd_backward, setup_context=_linear_setup, lib=_lib)


def _neuron_setup(ctx, inputs, output):
    ctx.shapes = [None if t is None else t.shape for t in inputs]


def _neuron_backward(ctx, grad_output):
    # The exact derivative of H(xWᵀ + b) is zero almost everywhere (the surrogate path does not come here), so
    # the requested gradients are zeros: they exist (as they would for any differentiable op) but carry nothing.
    return tuple(
        grad_output.new_zeros(shape) if needed and shape is not None else None
        for needed, shape in zip(ctx.needs_input_grad, ctx.shapes)
    )


torch.library.register_autograd("linneuron::neuron", _neuron_backward, setup_context=_neuron_setup, lib=_lib)


def _step_setup(ctx, inputs, output):
    z, surrogate, alpha = inputs
    ctx.save_for_backward(z)
    ctx.surrogate, ctx.alpha = surrogate, alpha


def _step_autograd_backward(ctx, grad_output):
    from . import functional as F

    (z,) = ctx.saved_tensors
    return F._step_backward(grad_output, z, ctx.surrogate, ctx.alpha), None, None


torch.library.register_autograd("linneuron::step", _step_autograd_backward, setup_context=_step_setup, lib=_lib)


def step_backward_backward(needs, grad, grad_output, z, surrogate, alpha):
    """Derivatives of g = grad_output * s'(z): d/dgrad_output = grad * s'(z), d/dz = grad * grad_output * s''(z)."""
    from . import functional as F

    d_grad_output = F._step_backward(grad, z, surrogate, alpha) if needs[0] else None
    d_z = grad * grad_output * second_derivative_factor(surrogate, z, alpha) if needs[1] else None
    return d_grad_output, d_z


def _step_backward_setup(ctx, inputs, output):
    grad_output, z, surrogate, alpha = inputs
    ctx.save_for_backward(grad_output, z)
    ctx.surrogate, ctx.alpha = surrogate, alpha


def _step_backward_autograd(ctx, grad):
    grad_output, z = ctx.saved_tensors
    d_go, d_z = step_backward_backward(ctx.needs_input_grad, grad, grad_output, z, ctx.surrogate, ctx.alpha)
    return d_go, d_z, None, None


torch.library.register_autograd(
    "linneuron::step_backward", _step_backward_autograd, setup_context=_step_backward_setup, lib=_lib
)


def _bias_grad_setup(ctx, inputs, output):
    ctx.shape = inputs[0].shape


def _bias_grad_backward(ctx, grad):
    return grad.expand(ctx.shape)


torch.library.register_autograd("linneuron::bias_grad", _bias_grad_backward, setup_context=_bias_grad_setup, lib=_lib)


# ---- autocast (CUDA): like F.linear, the GEMMs run in the autocast dtype; step is elementwise and left alone ----


def _autocast_cuda(op):
    def kernel(input, weight, bias=None):
        dtype = torch.get_autocast_dtype("cuda")
        cast = [t.to(dtype) if t is not None and t.is_cuda and t.is_floating_point() else t for t in (input, weight)]
        cast.append(bias.to(dtype) if bias is not None and bias.is_cuda and bias.is_floating_point() else bias)
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCUDA)):
            return op(*cast)

    return kernel


_lib.impl("linear", _autocast_cuda(linear), "AutocastCUDA")
_lib.impl("neuron", _autocast_cuda(neuron), "AutocastCUDA")


# ---- autocast (CPU): torch's CPU policy for linear: float32/16 operands cast to the autocast dtype (bfloat16 by
# default), float64 left alone (torch's autocast never casts float64) ---------------------------------------------


def _autocast_cpu(op):
    def kernel(input, weight, bias=None):
        dtype = torch.get_autocast_dtype("cpu")

        def cast(t):
            return (
                t.to(dtype) if t is not None and t.is_cpu and t.is_floating_point() and t.dtype != torch.float64 else t
            )

        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)):
            return op(cast(input), cast(weight), cast(bias))

    return kernel


_lib.impl("linear", _autocast_cpu(linear), "AutocastCPU")
_lib.impl("neuron", _autocast_cpu(neuron), "AutocastCPU")


# ---- vmap rules (torch.func): a batch of inputs against one weight is one more leading dim; else a loop --------


def _pick(t, batch_dim, i):
    return t if t is None or batch_dim is None else t.select(batch_dim, i)


def _gemm_vmap(op):
    def rule(info, in_dims, input, weight, bias=None):
        input_dim, weight_dim = in_dims[:2]
        bias_dim = in_dims[2] if len(in_dims) > 2 else None  # an omitted bias has no entry
        if weight_dim is None and bias_dim is None:
            return op(input.movedim(input_dim, 0), weight, bias), 0
        # Per-sample weights: one GEMM per sample (each is a different matrix).
        outs = [
            op(_pick(input, input_dim, i), _pick(weight, weight_dim, i), _pick(bias, bias_dim, i))
            for i in range(info.batch_size)
        ]
        return torch.stack(outs), 0

    return rule


def _step_vmap(info, in_dims, input, surrogate=3, alpha=2.0):
    return step(input, surrogate, alpha), in_dims[0]  # elementwise: the batch dim stays where it is


def _batch_first(t, batch_dim, batch_size):
    return t.movedim(batch_dim, 0) if batch_dim is not None else t.expand(batch_size, *t.shape)


def _step_backward_vmap(info, in_dims, grad_output, input, surrogate, alpha):
    grad_output = _batch_first(grad_output, in_dims[0], info.batch_size)
    input = _batch_first(input, in_dims[1], info.batch_size)
    return step_backward(grad_output, input, surrogate, alpha), 0


def _bias_grad_vmap(info, in_dims, grad_output):
    (batch_dim,) = in_dims
    return torch.stack([bias_grad(grad_output.select(batch_dim, i)) for i in range(info.batch_size)]), 0


_compat.register_vmap("linneuron::linear", _gemm_vmap(linear), _lib)  # torch 2.4 included (see _compat)
_compat.register_vmap("linneuron::neuron", _gemm_vmap(neuron), _lib)
_compat.register_vmap("linneuron::step", _step_vmap, _lib)
_compat.register_vmap("linneuron::step_backward", _step_backward_vmap, _lib)
_compat.register_vmap("linneuron::bias_grad", _bias_grad_vmap, _lib)
