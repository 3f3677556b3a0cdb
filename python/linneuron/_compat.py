"""What differs between the torch versions linneuron claims (2.4 to the newest): feature probes, and the one
``torch.library.Library`` of the ``linneuron`` namespace, which a failed import must not leave half-registered."""

from __future__ import annotations

import torch

# torch.library.register_vmap arrived in torch 2.5; on 2.4, register_vmap below does what it does with 2.4's parts.
HAS_REGISTER_VMAP = hasattr(torch.library, "register_vmap")

_library: torch.library.Library | None = None


def fresh_library() -> torch.library.Library:
    """The ``linneuron`` DEF library, made anew: one left by an earlier, failed import of linneuron.ops is destroyed
    first, so the retry registers from scratch and fails (if it fails) with the original error again."""
    global _library
    if _library is not None:
        _library._destroy()
        _library = None
    _library = torch.library.Library("linneuron", "DEF")
    return _library


def register_vmap(qualname: str, rule, lib: torch.library.Library) -> None:
    """``torch.library.register_vmap(qualname, rule, lib=lib)``, also on torch 2.4, which lacks it.

    Without a rule, torch.func.vmap runs an op once per sample (its fallback, with a performance warning). torch 2.5
    implements register_vmap as a kernel for the FuncTorchBatched dispatch key that unwraps the batched tensors of
    the current vmap level, calls the rule one level down and wraps its result; torch 2.4 has every part of that
    (the same Library.impl with_keyset, interpreter stack, unwrap/add-batch-dim helpers), so the same kernel is
    built here from them. Only torch 2.4 takes this path, so the private helpers it uses cannot change under it.
    """
    if HAS_REGISTER_VMAP:
        torch.library.register_vmap(qualname, rule, lib=lib)
        return
    import torch.utils._pytree as pytree
    from torch._functorch.autograd_function import VmapInfo
    from torch._functorch.pyfunctorch import retrieve_current_functorch_interpreter
    from torch._functorch.vmap import unwrap_batched

    op = torch._library.utils.lookup_op(qualname)
    batched_key = torch._C.DispatchKeySet(torch._C.DispatchKey.FuncTorchBatched)

    def batched_kernel(keyset, *args, **kwargs):
        interpreter = retrieve_current_functorch_interpreter()
        level = interpreter.level()
        unwrapped, in_dims = unwrap_batched(args, level)
        with torch._C._ExcludeDispatchKeyGuard(batched_key):  # one level down
            if pytree.tree_all(lambda dim: dim is None, in_dims):  # nothing batched at this level
                return op(*args, **kwargs)
            info = VmapInfo(batch_size=interpreter.batch_size(), randomness=interpreter.randomness())
            output, out_dim = rule(info, in_dims, *unwrapped, **kwargs)
        # linneuron's ops return one fresh tensor (no aliasing of inputs to keep)
        return output if out_dim is None else torch._C._functorch._add_batch_dim(output, out_dim, level)

    lib.impl(qualname.split("::", 1)[1], batched_kernel, "FuncTorchBatched", with_keyset=True)
