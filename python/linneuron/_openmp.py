"""One OpenMP runtime for torch and linneuron: torch's own copy of libgomp is loaded before ``_core`` (no torch import).

``_core`` needs ``libgomp.so.1``. The dynamic loader gives it any library already loaded under that SONAME, so when
torch is imported first, the two share torch's runtime: one thread pool, and ``torch.set_num_threads`` is what
linneuron follows. Imported the other way round, ``_core`` would get the system's libgomp; torch wheels whose copy
is named after its hash (torch 2.4's ``torch/lib/libgomp-a34b3233.so.1``, still with SONAME ``libgomp.so.1``) then
load a second runtime beside it, with its own threads and its own thread count. Loading torch's copy first gives
the first order's result in both.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys

_loaded: ctypes.CDLL | None = None  # kept: the library must stay loaded for _core to bind to it


def torch_libgomp() -> str | None:
    """The path of the libgomp shipped inside the installed torch package, found without importing torch."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):  # ValueError: a torch module without a spec (already imported oddly)
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    lib_dir = os.path.join(next(iter(spec.submodule_search_locations)), "lib")
    try:
        names = [n for n in os.listdir(lib_dir) if n.startswith("libgomp") and ".so" in n]
    except OSError:
        return None
    return os.path.join(lib_dir, names[0]) if len(names) == 1 else None  # several: which one torch uses is unclear


def load_torch_runtime() -> None:
    """Load torch's libgomp (if torch ships one and is not imported yet) so that ``_core`` binds to it."""
    global _loaded
    if _loaded is not None or "torch" in sys.modules:  # torch's runtime is loaded already: _core gets it anyway
        return
    path = torch_libgomp()
    if path is None:
        return
    try:
        _loaded = ctypes.CDLL(path)
    except OSError:  # unusable (another architecture, a broken install): _core then loads the system's libgomp
        _loaded = None
