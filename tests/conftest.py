"""Shared pytest fixtures: seeded random generators and a thread-count guard."""

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
