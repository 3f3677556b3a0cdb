"""NumPy front end of the CPU kernels: ``linear``, ``step`` and the fused ``neuron`` on float16/32/64 arrays.

No torch is needed here. Shapes follow ``torch.nn.Linear``: input ``(*, in_features)``, weight
``(out_features, in_features)``, bias ``(out_features,)``, result ``(*, out_features)``.

>>> import numpy as np, linneuron
>>> x = np.array([[1.0, 0, 0], [1, 0, 1], [1, 1, 0]])
>>> linneuron.numpy.linear(x, np.array([[-0.1, 0.2, 0.2]]))[:, 0]
array([-0.1,  0.1,  0.1])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _core
from ._layout import as_grid, collapse_rows

__all__ = ["linear", "neuron", "step"]

_DTYPE_CODES = {
    np.dtype(np.float32): _core.FLOAT32,
    np.dtype(np.float64): _core.FLOAT64,
    np.dtype(np.float16): _core.FLOAT16,  # float32 accumulation, rounded once to float16
}


def _float_array(value: Any, name: str, fn: str) -> np.ndarray:
    """``value`` as a native-byte-order, aligned float32/float64 ndarray (copying only when it must)."""
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError, RuntimeError) as err:  # RuntimeError: e.g. a tensor that requires grad
            raise TypeError(
                f"{fn}(): {name} must be a float16, float32 or float64 array, got {type(value).__name__} ({err})"
            ) from err
    dtype = arr.dtype
    if dtype.kind != "f" or dtype.itemsize not in (2, 4, 8):
        raise TypeError(f"{fn}(): {name} must be float16, float32 or float64, got {dtype} (shape {arr.shape})")
    if not dtype.isnative:
        arr = arr.astype(dtype.newbyteorder("="))
    if not arr.flags.aligned:  # views at odd byte offsets: the kernels need element-aligned data
        arr = arr.copy()
    return arr


def _ptr(arr: np.ndarray) -> int:
    return arr.__array_interface__["data"][0]


def _element_strides(arr: np.ndarray) -> tuple[int, ...]:
    return tuple(s // arr.itemsize for s in arr.strides)


def _check_operands(x: Any, weight: Any, bias: Any, fn: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    x = _float_array(x, "x", fn)
    weight = _float_array(weight, "weight", fn)
    if weight.ndim != 2:
        raise ValueError(f"{fn}(): weight must be 2-D (out_features, in_features), got shape {weight.shape}")
    if x.ndim == 0:
        raise ValueError(f"{fn}(): x must have at least 1 dimension (*, in_features), got a 0-d array")
    if x.dtype != weight.dtype:
        raise TypeError(f"{fn}(): x and weight must have the same dtype, got x {x.dtype} and weight {weight.dtype}")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{fn}(): x has {x.shape[-1]} features but weight expects {weight.shape[1]} "
            f"(x {x.shape}, weight {weight.shape})"
        )
    if bias is not None:
        bias = _float_array(bias, "bias", fn)
        if bias.ndim != 1 or bias.shape[0] != weight.shape[0]:
            raise ValueError(
                f"{fn}(): bias must have shape ({weight.shape[0]},) to match weight {weight.shape}, got {bias.shape}"
            )
        if bias.dtype != x.dtype:
            raise TypeError(f"{fn}(): bias must have dtype {x.dtype} like x, got {bias.dtype}")
    return x, weight, bias


def _gemm_forward(x: Any, weight: Any, bias: Any, step: bool, fn: str) -> np.ndarray:
    x, weight, bias = _check_operands(x, weight, bias, fn)
    n_out, k = weight.shape
    out = np.empty(x.shape[:-1] + (n_out,), dtype=x.dtype)
    if out.size == 0:
        return out
    rows = collapse_rows(x.shape[:-1], _element_strides(x)[:-1])
    if rows is None and k == 0:  # x is empty and never read; numpy keeps arbitrary strides on empty arrays
        rows = math.prod(x.shape[:-1]), 0
    if rows is None:  # leading dims that no single row stride describes
        x = np.ascontiguousarray(x)
        rows = collapse_rows(x.shape[:-1], _element_strides(x)[:-1])
    m, x_rs = rows
    x_cs = _element_strides(x)[-1]
    w_rs, w_cs = _element_strides(weight)
    _core.gemm(
        _DTYPE_CODES[x.dtype], m, n_out, k,
        _ptr(x), x_rs, x_cs,
        _ptr(weight), w_cs, w_rs,  # B = Wᵀ: B(k, n) = W(n, k)
        _ptr(out), n_out, 1,
        0 if bias is None else _ptr(bias), 0 if bias is None else _element_strides(bias)[0],
        False, step,
    )  # fmt: skip
    return out


def linear(x: Any, weight: Any, bias: Any = None) -> np.ndarray:
    """``x @ weight.T + bias``, as ``torch.nn.functional.linear``, computed by linneuron's CPU GEMM.

    >>> linear(np.ones((2, 3)), np.ones((4, 3)), np.zeros(4)).shape
    (2, 4)
    """
    return _gemm_forward(x, weight, bias, step=False, fn="linear")


def neuron(x: Any, weight: Any, bias: Any = None) -> np.ndarray:
    """The threshold neuron ``H(x @ weight.T + bias)``: fires 1.0 where the weighted sum is >= 0, else 0.0.

    The step is applied inside the GEMM, so the weighted sum is never written to memory.

    >>> neuron(np.array([[1.0, 1.0]]), np.array([[0.5, 0.5]]), np.array([-1.0]))
    array([[1.]])
    """
    return _gemm_forward(x, weight, bias, step=True, fn="neuron")


def step(z: Any) -> np.ndarray:
    """The unit step ``H(z)``: 1.0 where ``z >= 0`` (so also at -0.0), 0.0 where ``z < 0``, NaN stays NaN.

    >>> step(np.array([-1.0, 0.0, 2.0]))
    array([0., 1., 1.])
    """
    z = _float_array(z, "z", "step")
    out = np.empty(z.shape, dtype=z.dtype)
    if out.size == 0:
        return out
    grid = as_grid(z.shape, _element_strides(z))
    if grid is None:
        z = np.ascontiguousarray(z)
        grid = as_grid(z.shape, _element_strides(z))
    rows, cols, z_rs, z_cs = grid
    _core.step_forward(_DTYPE_CODES[z.dtype], rows, cols, _ptr(z), z_rs, z_cs, _ptr(out), cols, 1)
    return out
