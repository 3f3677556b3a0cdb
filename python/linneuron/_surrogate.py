"""Surrogate gradients of the unit step: names, kernel codes (enum Surrogate in src/cpp/neuron_math.h), slopes.

The forward pass of ``step``/``neuron`` is always the exact step H(z). Its true derivative is zero almost
everywhere, so training uses a smooth stand-in dH/dz ≈ s'(z) in the backward pass. ``alpha`` sets the slope:
larger alpha hugs the step more tightly (taller, narrower bump around z = 0).

=========  ======================================================  =================  ==============
name       s'(z)                                                   peak s'(0)         default alpha
=========  ======================================================  =================  ==============
None       0 (the exact derivative; the delta at 0 is dropped)      0                  --
"ste"      1 where |alpha z| <= 1, else 0 (straight-through)        1                  1.0
"sigmoid"  alpha σ(alpha z) (1 - σ(alpha z)), σ the logistic         alpha / 4          4.0
"atan"     (alpha/2) / (1 + (π/2 · alpha z)^2)                     alpha / 2          2.0
=========  ======================================================  =================  ==============

Each smooth surrogate integrates to 1 over z (like the delta it replaces); with the defaults sigmoid and atan
both peak at 1. The default surrogate is "atan" (as in SpikingJelly): heavy tails keep a gradient flowing for
inputs far from the threshold, where the sigmoid's vanishes exponentially.
"""

from __future__ import annotations

import math

__all__ = ["DEFAULT_ALPHA", "DEFAULT_SURROGATE", "SURROGATE_CODES", "resolve", "second_derivative_factor"]

# Values must equal enum class Surrogate in src/cpp/neuron_math.h (part of the _core / _cuda ABI).
SURROGATE_CODES: dict[str | None, int] = {None: 0, "none": 0, "ste": 1, "sigmoid": 2, "atan": 3}
SURROGATE_NAMES = {0: None, 1: "ste", 2: "sigmoid", 3: "atan"}
DEFAULT_ALPHA = {0: 0.0, 1: 1.0, 2: 4.0, 3: 2.0}
DEFAULT_SURROGATE = "atan"


def resolve(surrogate: str | None, alpha: float | None, fn: str = "step") -> tuple[int, float]:
    """``(kernel code, alpha)`` for a surrogate name and optional slope; ValueError for unknown names or slopes.

    >>> resolve("sigmoid", None)
    (2, 4.0)
    """
    key = surrogate.lower() if isinstance(surrogate, str) else surrogate
    try:
        code = SURROGATE_CODES[key]
    except (KeyError, TypeError):
        raise ValueError(
            f"{fn}(): surrogate must be one of None, 'ste', 'sigmoid', 'atan', got {surrogate!r}"
        ) from None
    if alpha is None:
        return code, DEFAULT_ALPHA[code]
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"{fn}(): alpha must be a float, got {type(alpha).__name__}")
    alpha = float(alpha)
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"{fn}(): alpha must be a positive finite number, got {alpha}")
    return code, alpha


def second_derivative_factor(code: int, z, alpha: float):
    """s''(z) for the surrogate ``code``, in torch ops on tensor ``z`` (for double backward through ``step``).

    The straight-through and exact surrogates are piecewise constant, so their second derivative is 0.
    """
    import torch

    if code == 2:
        s = torch.sigmoid(alpha * z)
        return alpha * alpha * s * (1 - s) * (1 - 2 * s)
    if code == 3:
        u = (math.pi / 2) * alpha * z
        return -(math.pi / 2) * alpha * alpha * u / (1 + u * u) ** 2
    return torch.zeros_like(z)
