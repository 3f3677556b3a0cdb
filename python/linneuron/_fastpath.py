"""Wires the compiled eager fast path (src/cpp/fastpath.cpp, in _core) to torch: types, dtypes, mode probes.

The compiled module includes no torch headers; it reads tensors through torch's DLPack exchange table where torch
has one (``torch.Tensor.__dlpack_c_exchange_api__``), else through their C-level Python attributes, and allocates
with a cached ``Tensor.new``. Everything torch-specific it needs is handed over here once, each private torch helper
behind feature detection (torch >= 2.4): where one is missing, the fast path is left off (``ENABLED`` False) or the
probe it would serve is skipped only where another guard covers it. The dtype table is ``_kernels._CPU_CODES``, so a
dtype with a CPU kernel is one table entry (the compiled side falls back for codes it has no kernel for).
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.autograd.forward_ad as _forward_ad

from . import _core, _kernels

ENABLED = False


def c_apply(function_cls):
    """``function_cls.apply`` without the Python wrapper (its extra work serves functorch, which the fast path
    has ruled out), or the ordinary apply where torch lacks the C-level one."""
    base = getattr(torch._C, "_FunctionBase", None)
    raw = getattr(base, "__dict__", {}).get("apply") if base is not None else None
    if raw is None or not hasattr(raw, "__get__"):
        return function_cls.apply
    return raw.__get__(None, function_cls)


def _autocast_probe():
    """A cheap zero-argument callable telling whether autocast may be on for CPU tensors.

    ``torch._C._is_any_autocast_enabled`` (one C call, no argument parsing) where torch has it: true for autocast
    on any device, so under CUDA autocast CPU calls take the general path too (same result, a little slower).
    """
    any_enabled = getattr(torch._C, "_is_any_autocast_enabled", None)
    if any_enabled is not None:
        return any_enabled
    try:
        torch.is_autocast_enabled("cpu")
    except TypeError:  # a torch whose is_autocast_enabled takes no device
        return getattr(torch, "is_autocast_cpu_enabled", None)
    return functools.partial(torch.is_autocast_enabled, "cpu")


# The C-level properties and methods of torch.Tensor the compiled readers call directly (see fastpath.cpp).
_DESCRIPTOR_NAMES = ("is_cpu", "dtype", "requires_grad", "shape", "stride", "data_ptr", "is_neg")


def _descriptors():
    """name -> torch.Tensor's C property or method, and whether nn.Parameter resolves every name the same way."""
    found = {name: inspect.getattr_static(torch.Tensor, name, None) for name in _DESCRIPTOR_NAMES}
    same = all(inspect.getattr_static(torch.nn.Parameter, n, None) is d for n, d in found.items())
    return found, same


def save_is_to_save() -> bool:
    """Whether FunctionCtx.save_for_backward(*t) is just ``self.to_save = t`` (torch 2.4 to 2.13 at least), so that
    forward may assign ctx.to_save itself."""
    code = getattr(torch.autograd.function.FunctionCtx.save_for_backward, "__code__", None)
    return getattr(code, "co_names", None) == ("to_save",)


def _to_save_property(*function_classes):
    """torch._C._FunctionBase's to_save (a C property) if every class's ctx resolves ``to_save`` to it, else None
    (then the C forwards set it by name)."""
    prop = getattr(getattr(torch._C, "_FunctionBase", None), "__dict__", {}).get("to_save")
    if type(prop) is not type(torch.Tensor.requires_grad):  # getset_descriptor
        return None
    for cls in function_classes:
        ctx_cls = getattr(cls, "_backward_cls", None)
        if ctx_cls is None or inspect.getattr_static(ctx_cls, "to_save", None) is not prop:
            return None
    return prop


def _dlpack_api():
    """torch's DLPack C exchange table (a PyCapsule), or None where this torch has none."""
    capsule = getattr(torch.Tensor, "__dlpack_c_exchange_api__", None)
    return capsule if type(capsule).__name__ == "PyCapsule" else None


def init(linear_function, step_function, use_dlpack: bool = True) -> bool:
    """Hand the fast path its configuration; the two autograd.Functions record grad-mode calls. True if enabled.

    ``use_dlpack=False`` reads tensors by their attributes even where torch has the DLPack table (the path of
    older torch versions; tests run both).
    """
    global ENABLED
    functorch = getattr(torch._C, "_functorch", None)
    probes = {
        "dispatch_stack_len": getattr(torch._C, "_len_torch_dispatch_stack", None),
        "function_mode_on": getattr(torch._C, "_is_torch_function_mode_enabled", None),
        "forward_ad": _forward_ad if hasattr(_forward_ad, "_current_level") else None,
        # Under CPU autocast the dispatcher's AutocastCPU rule (ops.py) must cast first: such calls fall back.
        "autocast_enabled": _autocast_probe(),
    }
    descriptors, parameter_same = _descriptors()
    kinds = (type(torch.Tensor.stride), type(torch.Tensor.requires_grad))  # method_descriptor, getset_descriptor
    if not all(type(d) in kinds for d in descriptors.values()):
        probes["descriptors"] = None  # a torch whose Tensor attributes are not C-level: no fast path
    if any(v is None for v in probes.values()) or not hasattr(_core, "fastpath_init"):
        ENABLED = False  # a torch without these probes: every call takes the general path
        return ENABLED
    _core.fastpath_init(
        {
            "tensor_type": torch.Tensor,
            # Parameters are read like tensors where they resolve the same attributes (they do in torch 2.4-2.13).
            "parameter_type": torch.nn.Parameter if parameter_same else None,
            "descriptors": descriptors,
            # (dtype, kernel code, allocator): Tensor.new of an empty template is the cheapest allocation measured.
            "dtypes": [(dtype, code, torch.empty(0, dtype=dtype).new) for dtype, code in _kernels._CPU_CODES.items()],
            "dlpack_api": _dlpack_api() if use_dlpack else None,
            "grad_enabled": torch.is_grad_enabled,
            "functorch_peek": getattr(functorch, "peek_interpreter_stack", None),
            "compiler": torch.compiler if hasattr(torch.compiler, "_is_compiling_flag") else None,
            "linear_apply": c_apply(linear_function),
            "step_apply": c_apply(step_function),
            "to_save": _to_save_property(linear_function, step_function),
            **probes,
        }
    )
    ENABLED = True
    _INIT_ARGS[:] = [linear_function, step_function]
    return ENABLED


_INIT_ARGS: list = []


def reader() -> str | None:
    """How the fast path reads tensors: "dlpack", "attributes", or None when it is off."""
    return _core.fastpath_reader() if ENABLED else None


def reinit(use_dlpack: bool) -> bool:
    """init() again with the same autograd.Functions, choosing the tensor reader (for tests and benchmarks)."""
    return init(*_INIT_ARGS, use_dlpack=use_dlpack)
