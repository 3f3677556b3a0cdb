"""Shared by the hardening tests: float64 references, K-scaled tolerances, hypothesis profiles, subprocess timeouts.

Hypothesis profiles (pick one with the HYPOTHESIS_PROFILE environment variable; "ci" is the default):
  ci        500 examples per property, no deadline, derandomized so CI runs are reproducible.
  thorough  10,000 examples per property, randomized: a longer hunt, e.g. nightly
            (HYPOTHESIS_PROFILE=thorough pytest tests/test_properties.py).
  dev       50 examples per property, for a quick local loop.
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, settings

# Registered under our own names: torch.testing._internal.common_utils (imported by other test modules) registers
# its own "dev" profile and loads a 10-example profile globally when imported. The property tests therefore apply
# PROPERTY_SETTINGS with a decorator, so that whatever profile is loaded globally they run ours.
settings.register_profile(
    "linneuron-ci",
    max_examples=500,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile(
    "linneuron-thorough",
    max_examples=10_000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile("linneuron-dev", max_examples=50, deadline=None, database=None)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE not in ("ci", "thorough", "dev"):
    raise ValueError(f"HYPOTHESIS_PROFILE must be ci, thorough or dev for linneuron's tests, got {PROFILE!r}")
PROPERTY_SETTINGS = settings.get_profile(f"linneuron-{PROFILE}")


def reference_linear(x, weight, bias=None) -> np.ndarray:
    """``x @ weight.T + bias`` in float64 NumPy, whatever the input dtype."""
    out = np.asarray(x, dtype=np.float64) @ np.asarray(weight, dtype=np.float64).T
    if bias is not None:
        out = out + np.asarray(bias, dtype=np.float64)
    return out


def reference_step(z) -> np.ndarray:
    """H(z) as NumPy defines it with H(0) = 1: 1 where z >= 0 (also -0.0), 0 where z < 0, NaN stays NaN."""
    z = np.asarray(z)
    return np.heaviside(z, np.ones((), dtype=z.dtype))


def linear_tolerance(x, weight, bias, dtype) -> np.ndarray:
    """Elementwise bound on the error of a K-term dot product in ``dtype``: eps * sqrt(K) * sum |x_k w_k| (x8)."""
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
        raise AssertionError(f"at {worst}: |{actual[worst]} - {expected[worst]}| > {tol[worst]}")


def assert_neuron_matches(actual: np.ndarray, x, weight, bias=None) -> None:
    """The fused neuron equals H(reference) except where the reference sum is within tolerance of 0."""
    expected_z = reference_linear(x, weight, bias)
    assert actual.shape == expected_z.shape, (actual.shape, expected_z.shape)
    tol = linear_tolerance(x, weight, bias, actual.dtype)
    decided = np.abs(expected_z) > tol
    np.testing.assert_array_equal(actual[decided], reference_step(expected_z)[decided])
    assert np.all((actual == 0) | (actual == 1)), "a finite neuron output must be 0 or 1"


# Seconds a subprocess (fork, DataLoader) may take before the test calls it a hang.
HANG_TIMEOUT_S = float(os.environ.get("LINNEURON_HANG_TIMEOUT_S", "60"))
