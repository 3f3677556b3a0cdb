"""Stride arithmetic shared by the NumPy and torch front ends: viewing N-d operands as strided 2-D grids."""

from __future__ import annotations

from collections.abc import Sequence


def collapse_rows(shape: Sequence[int], strides: Sequence[int]) -> tuple[int, int] | None:
    """View dims ``shape`` (element ``strides``) as one row index: return ``(rows, row_stride)`` or None.

    The leading dims of an operand ``(*, K)`` form its rows. They collapse without a copy when each dim steps
    over whole blocks of the next (size-1 dims can be ignored). ``None`` means a copy is needed.

    >>> collapse_rows((2, 3), (12, 4))
    (6, 4)
    """
    rows = 1
    for size in shape:
        rows *= size
    dims = [(size, stride) for size, stride in zip(shape, strides) if size != 1]
    if rows == 0 or not dims:
        return rows, 0
    for (_, outer_stride), (inner_size, inner_stride) in zip(dims, dims[1:]):
        if outer_stride != inner_stride * inner_size:
            return None
    return rows, dims[-1][1]


def as_grid(shape: Sequence[int], strides: Sequence[int]) -> tuple[int, int, int, int] | None:
    """View an N-d operand, in C order, as ``(rows, cols, row_stride, col_stride)``, or None if it needs a copy.

    >>> as_grid((4, 5, 6), (30, 6, 1))
    (1, 120, 0, 1)
    """
    if len(shape) == 0:
        return 1, 1, 0, 1
    whole = collapse_rows(shape, strides)
    if whole is not None:
        return 1, whole[0], 0, whole[1]
    for split in range(len(shape) - 1, 0, -1):
        outer = collapse_rows(shape[:split], strides[:split])
        inner = collapse_rows(shape[split:], strides[split:])
        if outer is not None and inner is not None:
            return outer[0], inner[0], outer[1], inner[1]
    return None
