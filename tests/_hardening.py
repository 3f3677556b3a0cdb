"""Shared by the hardening tests: hypothesis profiles, the step and neuron references, subprocess timeouts.

Hypothesis profiles (pick one with the HYPOTHESIS_PROFILE environment variable; "ci" is the default):
  ci        500 examples per property, no deadline, derandomized so CI runs are reproducible.
  thorough  10,000 examples per property, randomized: a longer hunt, e.g. nightly
            (HYPOTHESIS_PROFILE=thorough pytest tests/test_properties.py).
  dev       50 examples per property, for a quick local loop.
"""

from __future__ import annotations

import os

import numpy as np
from _reference import assert_linear_close, linear_tolerance, reference_linear  # noqa: F401 (re-exported)
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


def reference_step(z) -> np.ndarray:
    """H(z) as NumPy defines it with H(0) = 1: 1 where z >= 0 (also -0.0), 0 where z < 0, NaN stays NaN."""
    z = np.asarray(z)
    return np.heaviside(z, np.ones((), dtype=z.dtype))


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
