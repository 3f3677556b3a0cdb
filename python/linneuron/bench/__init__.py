"""``linneuron bench`` and the other timing programs: the CPU bench (main, cases), the GPU bench (cuda), the
per-call overhead probe (overhead). Importing this package loads no torch; ``linneuron.bench.X`` for a name of
``linneuron.bench.main`` (``run``, ``time_pair``, ``machine_info``, ...) is that name."""

from __future__ import annotations

from typing import Any

from . import main as _main
from .main import HELP, add_arguments, run

__doc__ = _main.__doc__  # the command's help text (linneuron.cli shows it as `linneuron bench --help`)
__all__ = ["HELP", "add_arguments", "run"]


def __getattr__(name: str) -> Any:
    # Every other name of the bench command's module, as when it was the single module linneuron.bench.
    try:
        return getattr(_main, name)
    except AttributeError:
        raise AttributeError(f"module 'linneuron.bench' has no attribute {name!r}") from None
