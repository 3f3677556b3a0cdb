"""``linneuron.info()`` and the thread-count controls: what this build contains and how it runs."""

from __future__ import annotations

import operator
from typing import Any

from . import _build_config, _core, _cuda_loader


def get_num_threads() -> int:
    """Threads linneuron's CPU kernels use (OpenMP).

    Unless set with :func:`set_num_threads`, this follows OpenMP's current maximum, which is what
    ``torch.set_num_threads`` sets (torch and linneuron share one OpenMP runtime), so the two never oversubscribe.
    In the child of a ``fork()`` it is 1: GNU libgomp cannot start threads there.
    """
    return _core.get_num_threads()


def set_num_threads(n: int | None) -> None:
    """Set the threads linneuron's CPU kernels use; ``n`` must be a positive integer, or None to follow torch again.

    >>> set_num_threads(1); get_num_threads()
    1
    >>> set_num_threads(None)
    """
    if n is None:
        _core.set_num_threads(0)
        return
    if isinstance(n, bool):
        raise TypeError(f"set_num_threads(): n must be an int, got bool {n!r}")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"set_num_threads(): n must be an int, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"set_num_threads(): n must be >= 1, got {n}")
    if n > 2**31 - 1:
        raise ValueError(f"set_num_threads(): n must be < 2**31, got {n}")
    _core.set_num_threads(n)


def info() -> dict[str, Any]:
    """A dict describing this build and this machine, as ``linneuron info`` prints it.

    >>> sorted(info())[:3]
    ['compiled_isas', 'cuda_available', 'cuda_built']
    """
    cuda_module, cuda_reason = _cuda_loader.status()
    return {
        "version": _build_config.VERSION,
        "compiled_isas": list(_core.compiled_isas()),
        "supported_isas": list(_core.supported_isas()),
        "isa": _core.active_isa(),
        "lowp": dict(_core.lowp_paths()),  # bfloat16/float16: conversion kernels around the float32 GEMM
        "cpu_caches": dict(_core.cpu_caches()),
        "gemm_blocking": {k: dict(v) for k, v in _core.gemm_blocking().items()},
        "openmp": bool(_core.openmp_enabled()),
        "num_threads": _core.get_num_threads(),
        "workspace_bytes": _core.workspace_bytes(),
        "workspace_peak_bytes": _core.workspace_peak_bytes(),
        "cuda_built": bool(_build_config.CUDA_BUILT),
        "cuda_archs": _build_config.CUDA_ARCHS or None,
        "cuda_available": cuda_reason is None,
        "cuda_reason": cuda_reason,
        "cuda_devices": cuda_module.device_count() if cuda_reason is None and cuda_module is not None else 0,
        "sanitize": _build_config.SANITIZE or None,
    }
