"""Torch tensors to linneuron kernels: argument checks, layout (strides, no copies where possible), device dispatch.

Everything here runs on real tensors (CPU through ``linneuron._core``, CUDA through ``linneuron._cuda`` on the
tensor's device and current stream). The registered ops (ops.py) and the eager fast path (functional.py) both
call these functions; fake kernels use ``check_linear``/``check_step`` only.
"""

from __future__ import annotations

import torch

from . import _core
from ._cuda_loader import cuda_module
from ._layout import as_grid, collapse_rows

_CPU_CODES = {torch.float32: 0, torch.float64: 1}
_CUDA_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


def _fmt(shape) -> str:
    return str(tuple(shape))


def check_dtype(t: torch.Tensor, name: str, fn: str) -> None:
    """TypeError unless ``t``'s dtype has a kernel on its device (float32/64 everywhere, float16/bfloat16 on CUDA)."""
    dtype = t.dtype
    if dtype in _CPU_CODES:
        return
    if dtype in _CUDA_CODES:
        if t.device.type != "cpu":
            return
        raise TypeError(
            f"{fn}(): {name} has dtype {dtype}, which linneuron supports only on CUDA tensors; "
            f"on the CPU use float32 or float64 (got {name} of shape {_fmt(t.shape)} on cpu)"
        )
    raise TypeError(
        f"{fn}(): {name} must be a floating-point tensor (float32/float64, or float16/bfloat16 on CUDA), "
        f"got {dtype} (shape {_fmt(t.shape)})"
    )


def check_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, fn: str) -> None:
    """The checks F.linear makes, with messages naming the argument, its shape, dtype and device."""
    # One cheap test for the common, valid call (this runs on every call of a 3 -> 1 layer); explain otherwise.
    if (
        isinstance(x, torch.Tensor)
        and isinstance(weight, torch.Tensor)
        and weight.ndim == 2
        and x.ndim >= 1
        and x.shape[-1] == weight.shape[1]
        and weight.dtype == x.dtype
        and weight.device == x.device
        and (x.dtype in _CPU_CODES or (x.dtype in _CUDA_CODES and not x.is_cpu))
        and (
            bias is None
            or (
                isinstance(bias, torch.Tensor)
                and bias.ndim == 1
                and bias.shape[0] == weight.shape[0]
                and bias.dtype == x.dtype
                and bias.device == x.device
            )
        )
    ):
        return
    _explain_linear(x, weight, bias, fn)


def _explain_linear(x, weight, bias, fn: str) -> None:
    """Raise the error that describes why ``check_linear`` rejected its arguments."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}(): input must be a Tensor, got {type(x).__name__}")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{fn}(): weight must be a Tensor, got {type(weight).__name__}")
    if weight.dim() != 2:
        raise ValueError(f"{fn}(): weight must be 2-D (out_features, in_features), got shape {_fmt(weight.shape)}")
    if x.dim() == 0:
        raise ValueError(f"{fn}(): input must have at least 1 dimension (*, in_features), got a 0-d tensor")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{fn}(): input has {x.shape[-1]} features but weight expects {weight.shape[1]} "
            f"(input {_fmt(x.shape)}, weight {_fmt(weight.shape)})"
        )
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"{fn}(): bias must be a Tensor or None, got {type(bias).__name__}")
        if bias.dim() != 1 or bias.shape[0] != weight.shape[0]:
            raise ValueError(
                f"{fn}(): bias must have shape ({weight.shape[0]},) to match weight {_fmt(weight.shape)}, "
                f"got {_fmt(bias.shape)}"
            )
    if x.device != weight.device or (bias is not None and bias.device != x.device):
        where = f"input on {x.device}, weight on {weight.device}"
        if bias is not None:
            where += f", bias on {bias.device}"
        raise RuntimeError(f"{fn}(): expected all tensors to be on the same device, got {where}")
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
        got = f"input {x.dtype}, weight {weight.dtype}"
        if bias is not None:
            got += f", bias {bias.dtype}"
        raise TypeError(f"{fn}(): expected input, weight and bias to have the same dtype, got {got}")
    check_dtype(x, "input", fn)
    raise RuntimeError(f"{fn}(): unsupported arguments: input {x.dtype} {_fmt(x.shape)} on {x.device}")  # unreachable


def check_step(z: torch.Tensor, fn: str = "step") -> None:
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{fn}(): input must be a Tensor, got {type(z).__name__}")
    check_dtype(z, "input", fn)


def _raw_stream(index: int) -> int:
    """The current cudaStream_t of device ``index`` as an integer (the kernels launch on it)."""
    # torch's raw getter (used by inductor) skips building a torch.cuda.Stream object on every call.
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    return raw(index) if raw is not None else torch.cuda.current_stream(index).cuda_stream


def _backend(t: torch.Tensor, fn: str):
    """``(module, dtype code, trailing (device, stream) args)`` for the kernels of ``t``'s device."""
    if t.is_cpu:
        return _core, _CPU_CODES[t.dtype], ()
    if t.is_cuda:
        module = cuda_module(fn)
        index = t.get_device()
        return module, _CUDA_CODES[t.dtype], (index, _raw_stream(index))
    raise RuntimeError(f"{fn}(): linneuron has kernels for cpu and cuda tensors, got a tensor on {t.device}")


def _rows_view(t: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """``(t, rows, row_stride, col_stride)`` viewing ``t`` (*, K) as rows x K; copies only if no row stride exists."""
    if t.ndim == 2:  # the common case, any strides
        rs, cs = t.stride()
        return t, t.shape[0], rs, cs
    if t.ndim == 1:
        return t, 1, 0, t.stride(0)
    rows = collapse_rows(t.shape[:-1], t.stride()[:-1])
    if rows is None:  # e.g. a permuted batch dim that no single stride describes
        t = t.contiguous()
        rows = collapse_rows(t.shape[:-1], t.stride()[:-1])
    return t, rows[0], rows[1], t.stride(-1)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, step: bool, fn: str) -> torch.Tensor:
    """``[H](x @ weight.T + bias)`` for checked real tensors; any strides, result contiguous (*, out_features)."""
    # Written for the per-call cost of tiny layers (each line here was timed): varargs new_empty, no helpers.
    n_out, k = weight.shape
    out = x.new_empty(*x.shape[:-1], n_out)
    if x.is_cpu:
        module, code, extra = _core, _CPU_CODES[x.dtype], ()
    else:
        module, code, extra = _backend(x, fn)
    if x.ndim == 2:
        m = x.shape[0]
        x_rs, x_cs = x.stride()
    else:
        x, m, x_rs, x_cs = _rows_view(x)
    if m == 0 or n_out == 0:
        return out
    w_rs, w_cs = weight.stride()
    module.gemm(
        code, m, n_out, k,
        x.data_ptr(), x_rs, x_cs,
        weight.data_ptr(), w_cs, w_rs,  # B(k, n) = W(n, k)
        out.data_ptr(), n_out, 1,
        0 if bias is None else bias.data_ptr(), 0 if bias is None else bias.stride(0),
        False, step, *extra,
    )  # fmt: skip
    return out


def _grid(t: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    grid = as_grid(t.shape, t.stride())
    if grid is None:
        t = t.contiguous()
        grid = as_grid(t.shape, t.stride())
    return t, grid


def step(z: torch.Tensor, fn: str = "step") -> torch.Tensor:
    """``H(z)`` elementwise for a checked real tensor; any strides, result contiguous."""
    out = torch.empty(z.shape, dtype=z.dtype, device=z.device)
    if out.numel() == 0:
        return out
    module, code, extra = _backend(z, fn)
    z, (rows, cols, z_rs, z_cs) = _grid(z)
    module.step_forward(code, rows, cols, z.data_ptr(), z_rs, z_cs, out.data_ptr(), cols, 1, *extra)
    return out


def step_backward(grad_y: torch.Tensor, z: torch.Tensor, surrogate: int, alpha: float) -> torch.Tensor:
    """``grad_y * s'(z)`` for the surrogate code; shapes must match (checked), result contiguous."""
    fn = "step_backward"
    if grad_y.shape != z.shape:
        raise ValueError(f"{fn}(): grad_output {_fmt(grad_y.shape)} and input {_fmt(z.shape)} must have one shape")
    if grad_y.dtype != z.dtype or grad_y.device != z.device:
        raise TypeError(
            f"{fn}(): grad_output ({grad_y.dtype}, {grad_y.device}) and input ({z.dtype}, {z.device}) must match"
        )
    grad_z = torch.empty(z.shape, dtype=z.dtype, device=z.device)
    if grad_z.numel() == 0:
        return grad_z
    module, code, extra = _backend(z, fn)
    z, z_grid = _grid(z)
    grad_y, gy_grid = _grid(grad_y)
    if z_grid[:2] != gy_grid[:2]:  # the two operands split into rows x cols differently: use one layout
        z, z_grid = _grid(z.contiguous())
        grad_y, gy_grid = _grid(grad_y.contiguous())
    rows, cols = z_grid[:2]
    module.step_backward(
        code, rows, cols,
        z.data_ptr(), z_grid[2], z_grid[3],
        grad_y.data_ptr(), gy_grid[2], gy_grid[3],
        grad_z.data_ptr(), cols, 1,
        surrogate, alpha, *extra,
    )  # fmt: skip
    return grad_z


def bias_grad(grad_y: torch.Tensor) -> torch.Tensor:
    """Column sums of ``grad_y`` (*, N) -> (N,): the bias gradient; zeros for an empty batch."""
    n = grad_y.shape[-1]
    db = torch.empty((n,), dtype=grad_y.dtype, device=grad_y.device)
    if n == 0:
        return db
    module, code, extra = _backend(grad_y, "linear_backward")
    grad_y, m, rs, cs = _rows_view(grad_y)
    module.bias_grad(code, m, n, grad_y.data_ptr() if m else 0, rs, cs, db.data_ptr(), 1, False, *extra)
    return db
