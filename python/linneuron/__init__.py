"""linneuron: hand-written CPU (C++/OpenMP) and CUDA kernels for the neuron, y = H(w·x + b), and nn.Linear.

>>> import numpy as np, linneuron
>>> linneuron.numpy.step(np.array([-0.5, 0.0, 0.5]))
array([0., 1., 1.])

The NumPy front end (``linneuron.numpy``) needs no torch. The torch layer (``linneuron.functional``,
``linneuron.Linear``, ``linneuron.Neuron``, ``linneuron.Step``) is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import _openmp

_openmp.load_torch_runtime()  # before anything loads _core: torch and linneuron then share one OpenMP runtime

from . import numpy  # noqa: E402
from ._build_config import VERSION as __version__  # noqa: E402
from ._info import get_num_threads, info, set_num_threads  # noqa: E402

__all__ = ["__version__", "get_num_threads", "info", "numpy", "set_num_threads"]

# Names served by the torch layer, loaded lazily so that `import linneuron` stays light and torch-free.
_LAZY_MODULES = {"functional", "ops", "nn"}
_LAZY_NN = {"Linear", "Neuron", "Step", "swap_linear"}


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY_NN:
        return getattr(importlib.import_module(".nn", __name__), name)
    raise AttributeError(f"module 'linneuron' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY_MODULES | _LAZY_NN)
