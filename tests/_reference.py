"""Float64 NumPy references and K-scaled tolerances shared by the test modules."""

from __future__ import annotations

import numpy as np


def reference_linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """x @ weight.T + bias in float64, whatever the input dtype."""
    out = np.asarray(x, dtype=np.float64) @ np.asarray(weight, dtype=np.float64).T
    if bias is not None:
        out = out + np.asarray(bias, dtype=np.float64)
    return out


def linear_tolerance(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, dtype: np.dtype) -> np.ndarray:
    """Elementwise error bound for a K-term dot product in ``dtype``: a few ulps times sqrt(K) times magnitudes.

    A blocked or FMA-based sum of K products has a typical error of about eps * sqrt(K) * sum|x_k w_k|.
    """
    eps = np.finfo(dtype).eps
    k = max(1, np.shape(weight)[-1])
    magnitude = np.abs(np.asarray(x, dtype=np.float64)) @ np.abs(np.asarray(weight, dtype=np.float64)).T
    if bias is not None:
        magnitude = magnitude + np.abs(np.asarray(bias, dtype=np.float64))
    return 8 * eps * np.sqrt(k) * magnitude + np.finfo(dtype).tiny


def assert_linear_close(actual: np.ndarray, x, weight, bias=None) -> None:
    """``actual`` has the reference's shape and lies within ``linear_tolerance`` of it everywhere."""
    expected = reference_linear(x, weight, bias)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    tol = linear_tolerance(x, weight, bias, actual.dtype)
    err = np.abs(actual.astype(np.float64) - expected)
    if err.size and not np.all(err <= tol):
        worst = np.unravel_index(np.argmax(err - tol), err.shape)
        raise AssertionError(f"max excess at {worst}: |{actual[worst]} - {expected[worst]}| > {tol[worst]}")
