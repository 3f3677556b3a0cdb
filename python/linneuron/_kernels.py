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

# dtype -> kernel code, per device (the codes are _core's and _cuda's DType enums).
_CPU_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
_CUDA_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


def _fmt(shape) -> str:
    return str(tuple(shape))


def check_dtype(t: torch.Tensor, name: str, fn: str) -> None:
    """TypeError unless ``t``'s dtype has a kernel on its device (float32/64, float16, bfloat16)."""
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
        f"{fn}(): {name} must be a floating-point tensor (float32, float64, float16 or bfloat16), "
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
        and ((x.is_cpu and weight.is_cpu) or weight.device == x.device)  # is_cpu: no torch.device objects built
        and (x.dtype in _CPU_CODES or (x.dtype in _CUDA_CODES and not x.is_cpu))
        and (
            bias is None
            or (
                isinstance(bias, torch.Tensor)
                and bias.ndim == 1
                and bias.shape[0] == weight.shape[0]
                and bias.dtype == x.dtype
                and ((bias.is_cpu and x.is_cpu) or bias.device == x.device)
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
        if _autocast_casts(x, weight, bias):
            return  # the autocast rule (ops.py) gives the kernel one dtype, as autocast does for F.linear
        got = f"input {x.dtype}, weight {weight.dtype}"
        if bias is not None:
            got += f", bias {bias.dtype}"
        raise TypeError(f"{fn}(): expected input, weight and bias to have the same dtype, got {got}")
    check_dtype(x, "input", fn)
    check_strided(fn, ("input", x), ("weight", weight), ("bias", bias))
    raise RuntimeError(f"{fn}(): unsupported arguments: input {x.dtype} {_fmt(x.shape)} on {x.device}")  # unreachable


# Device type -> dtypes autocast casts to its own dtype (torch's cast policy leaves float64 alone).
_AUTOCAST_CASTS = {"cpu": (torch.float32, torch.float16, torch.bfloat16)}


def _autocast_casts(*tensors: torch.Tensor | None) -> bool:
    """True when autocast is on for these tensors' device and will cast every one of them to a single dtype."""
    device = tensors[0].device.type
    if device not in _AUTOCAST_CASTS or not torch.is_autocast_enabled(device):
        return False
    return all(t is None or t.dtype in _AUTOCAST_CASTS[device] for t in tensors)


def check_strided(fn: str, *named: tuple[str, torch.Tensor | None]) -> None:
    """TypeError naming the first operand whose layout is not strided (sparse, mkldnn): the kernels need strides."""
    for name, t in named:
        if t is not None and t.layout != torch.strided:
            raise TypeError(
                f"{fn}(): {name} has layout {t.layout}; linneuron reads dense strided tensors only "
                f"(pass {name}.to_dense(), shape {_fmt(t.shape)})"
            )


def _readable(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t``, or an equal tensor whose memory the kernels can read as is.

    Three kinds of real tensors hold their values somewhere other than at data_ptr() with their strides: a view with
    the negative bit (``z.conj().imag``, ``torch._neg_view``) stores -t; a ZeroTensor (``torch._efficientzerotensor``,
    made by some autograd formulas) has no memory (data_ptr() 0); and memory that is not aligned to the element size
    (``torch.from_numpy`` of a numpy view at an odd byte offset) is undefined behaviour for the kernels, which _core
    refuses. (The conjugate bit needs no case: torch sets it on complex tensors only.)
    """
    if t is None:
        return None
    if t._is_zerotensor():
        return torch.zeros((), dtype=t.dtype, device=t.device).expand(t.shape)  # stride 0: one element read
    if t.is_neg():
        t = t.resolve_neg()
    if t.data_ptr() % t.element_size():
        t = t.clone(memory_format=torch.contiguous_format)  # fresh memory is aligned
    return t


def _retry_operands(error: Exception, fn: str, *named: tuple[str, torch.Tensor | None]) -> list[torch.Tensor | None]:
    """After a kernel call failed with ``error``: readable copies of the operands, or re-raise if none needed one.

    The hot path does not test for ZeroTensors, misaligned memory or non-strided layouts (each test costs per call
    what a whole tiny layer costs in arithmetic); these fail inside data_ptr()/stride() or in _core's checks
    (null operand, misaligned address), and land here: raise a named error or retry once on readable copies.
    """
    check_strided(fn, *named)
    tensors = [t for _, t in named]
    readable = [_readable(t) for t in tensors]
    if all(new is old for new, old in zip(readable, tensors)):
        raise error
    return readable


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
        if t.numel() == 0:  # K = 0: never read, and contiguous() would keep an empty tensor's strides
            return t, t.shape[:-1].numel(), 0, t.stride(-1)
        t = t.contiguous()
        rows = collapse_rows(t.shape[:-1], t.stride()[:-1])
    return t, rows[0], rows[1], t.stride(-1)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, step: bool, fn: str) -> torch.Tensor:
    """``[H](x @ weight.T + bias)`` for checked real tensors; any strides, result contiguous (*, out_features)."""
    # Written for the per-call cost of tiny layers (each line here was timed): varargs new_empty, no helpers.
    # The negative bit is the one unusual memory state that fails silently, so it is the one tested up front;
    # the others raise inside the try (zero cost when nothing is raised) and are handled by _retry_operands.
    if x.is_neg() or weight.is_neg() or (bias is not None and bias.is_neg()):
        x, weight, bias = (_readable(t) for t in (x, weight, bias))
    try:
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
    except (RuntimeError, ValueError) as error:
        x, weight, bias = _retry_operands(error, fn, ("input", x), ("weight", weight), ("bias", bias))
        return linear(x, weight, bias, step, fn)


def _grid(t: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    grid = as_grid(t.shape, t.stride())
    if grid is None:
        t = t.contiguous()
        grid = as_grid(t.shape, t.stride())
    return t, grid


def step(z: torch.Tensor, fn: str = "step") -> torch.Tensor:
    """``H(z)`` elementwise for a checked real tensor; any strides, result contiguous."""
    if z.is_neg():
        z = _readable(z)
    out = torch.empty(z.shape, dtype=z.dtype, device=z.device)
    if out.numel() == 0:
        return out
    try:
        module, code, extra = _backend(z, fn)
        z, (rows, cols, z_rs, z_cs) = _grid(z)
        module.step_forward(code, rows, cols, z.data_ptr(), z_rs, z_cs, out.data_ptr(), cols, 1, *extra)
        return out
    except (RuntimeError, ValueError) as error:
        (z,) = _retry_operands(error, fn, ("input", z))
        return step(z, fn)


def step_backward(grad_y: torch.Tensor, z: torch.Tensor, surrogate: int, alpha: float) -> torch.Tensor:
    """``grad_y * s'(z)`` for the surrogate code; shapes must match (checked), result contiguous."""
    fn = "step_backward"
    if grad_y.shape != z.shape:
        raise ValueError(f"{fn}(): grad_output {_fmt(grad_y.shape)} and input {_fmt(z.shape)} must have one shape")
    if grad_y.dtype != z.dtype or grad_y.device != z.device:
        raise TypeError(
            f"{fn}(): grad_output ({grad_y.dtype}, {grad_y.device}) and input ({z.dtype}, {z.device}) must match"
        )
    if grad_y.is_neg() or z.is_neg():
        grad_y, z = _readable(grad_y), _readable(z)
    grad_z = torch.empty(z.shape, dtype=z.dtype, device=z.device)
    if grad_z.numel() == 0:
        return grad_z
    try:
        module, code, extra = _backend(z, fn)
        z_in, z_grid = _grid(z)
        gy_in, gy_grid = _grid(grad_y)
        if z_grid[:2] != gy_grid[:2]:  # the two operands split into rows x cols differently: use one layout
            z_in, z_grid = _grid(z_in.contiguous())
            gy_in, gy_grid = _grid(gy_in.contiguous())
        rows, cols = z_grid[:2]
        module.step_backward(
            code, rows, cols,
            z_in.data_ptr(), z_grid[2], z_grid[3],
            gy_in.data_ptr(), gy_grid[2], gy_grid[3],
            grad_z.data_ptr(), cols, 1,
            surrogate, alpha, *extra,
        )  # fmt: skip
        return grad_z
    except (RuntimeError, ValueError) as error:
        grad_y, z = _retry_operands(error, fn, ("grad_output", grad_y), ("input", z))
        return step_backward(grad_y, z, surrogate, alpha)


def bias_grad(grad_y: torch.Tensor) -> torch.Tensor:
    """Column sums of ``grad_y`` (*, N) -> (N,): the bias gradient; zeros for an empty batch."""
    fn = "bias_grad"
    if grad_y.is_neg():
        grad_y = _readable(grad_y)
    n = grad_y.shape[-1]
    db = torch.empty((n,), dtype=grad_y.dtype, device=grad_y.device)
    if n == 0:
        return db
    try:
        module, code, extra = _backend(grad_y, "linear_backward")
        dy, m, rs, cs = _rows_view(grad_y)
        module.bias_grad(code, m, n, dy.data_ptr() if m else 0, rs, cs, db.data_ptr(), 1, False, *extra)
        return db
    except (RuntimeError, ValueError) as error:
        (grad_y,) = _retry_operands(error, fn, ("grad_output", grad_y))
        return bias_grad(grad_y)
