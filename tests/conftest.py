"""Shared pytest fixtures: seeded random generators, a thread-count guard and a floating-point-mode guard."""

from __future__ import annotations

import linneuron
import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261127)


@pytest.fixture(autouse=True)
def _restore_thread_count():
    """Tests may pin linneuron's thread count; return to following torch's so test order never matters."""
    yield
    linneuron.set_num_threads(None)


def flushes_subnormals() -> tuple[bool, bool]:
    """(flush-to-zero, denormals-are-zero) of this thread's floating-point mode, seen through NumPy arithmetic."""
    tiny = np.array([np.finfo(np.float32).tiny], dtype=np.float32)
    ftz = bool((tiny * np.float32(0.5)).view(np.uint32)[0] == 0)  # a subnormal result, read as bits
    daz = bool(np.array([np.finfo(np.float32).smallest_subnormal], dtype=np.float32)[0] == 0)  # a subnormal input
    return ftz, daz


@pytest.fixture(autouse=True)
def _floating_point_mode_unchanged(request):
    """A test that leaves subnormals flushed would make every later numerics test (and its NumPy reference) wrong;
    name it instead. (torch 2.4's inductor did this: see test_nn.test_compiled_model_matches_eager.)"""
    before = flushes_subnormals()
    yield
    after = flushes_subnormals()
    assert after == before, (
        f"{request.node.nodeid} changed (flush-to-zero, denormals-are-zero) from {before} to {after}"
    )
