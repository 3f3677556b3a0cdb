"""What differs between the torch versions linneuron claims (2.4 to the newest): feature probes, and the one
``torch.library.Library`` of the ``linneuron`` namespace, which a failed import must not leave half-registered."""

from __future__ import annotations

import torch

# torch.library.register_vmap arrived in torch 2.5. Without it the raw ops have no vmap rule (functional's
# autograd.Functions keep theirs: torch.func.vmap over linneuron.functional works on every torch).
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
