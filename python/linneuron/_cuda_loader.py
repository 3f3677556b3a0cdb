"""Lazy, cached loading of the optional ``linneuron._cuda`` module, with the reason when it cannot be used."""

from __future__ import annotations

import importlib
from types import ModuleType

from . import _build_config

_state: tuple[ModuleType | None, str | None] | None = None


def _load() -> tuple[ModuleType | None, str | None]:
    if not _build_config.CUDA_BUILT:
        return None, f"linneuron was built without CUDA: {_build_config.CUDA_REASON}"
    try:
        module = importlib.import_module("linneuron._cuda")
    except ImportError as err:  # e.g. a wheel copied without the module
        return None, f"the CUDA module failed to load: {err}"
    reason = module.availability_error()  # "" when a usable device exists (no driver, no device, ...)
    return module, (reason or None)


def status() -> tuple[ModuleType | None, str | None]:
    """``(module, None)`` when CUDA kernels can run; ``(module_or_None, reason)`` otherwise. Cached."""
    global _state
    if _state is None:
        _state = _load()
    return _state


def cuda_module(op: str) -> ModuleType:
    """The loaded ``_cuda`` module, or RuntimeError naming ``op`` and why CUDA kernels are unavailable."""
    module, reason = status()
    if reason is not None or module is None:
        raise RuntimeError(f"{op}: got a CUDA tensor, but linneuron's CUDA kernels are unavailable: {reason}")
    return module
