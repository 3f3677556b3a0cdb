"""torch-version compatibility: a failed import of the torch layer never poisons the next one; torch and linneuron
share one OpenMP runtime whichever is imported first."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# A child process makes the first import of linneuron.ops fail half-way (after some registrations), then retries.
_CHILD = textwrap.dedent(
    """
    import torch, torch.library
    real = torch.library.register_autograd
    calls = []

    def failing(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise RuntimeError("injected failure #%d" % len(calls))
        return real(*args, **kwargs)

    torch.library.register_autograd = failing
    for attempt in (1, 2):
        calls.clear()
        try:
            import linneuron.ops
        except RuntimeError as e:
            print("attempt", attempt, "raised:", e)
        else:
            print("attempt", attempt, "imported")
    torch.library.register_autograd = real
    import linneuron.ops, linneuron.functional as LF
    x, w = torch.randn(4, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(torch.ops.linneuron.linear(x, w), x @ w.T)
    torch.ops.linneuron.linear(x, w).sum().backward()
    torch.testing.assert_close(w.grad, torch.ones(4, 2, dtype=torch.float64).T @ x)
    print("third import works")
    """
)


def test_failed_import_raises_the_original_error_again_then_recovers():
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines == [
        "attempt 1 raised: injected failure #3",
        "attempt 2 raised: injected failure #3",
        "third import works",
    ], out.stdout + out.stderr


_OPENMP_CHILD = textwrap.dedent(
    """
    import sys
    for name in sys.argv[1:]:
        __import__(name)
    import torch, linneuron
    mapped = {line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line.rsplit("/", 1)[-1]}
    torch.set_num_threads(1)
    print(len(mapped), linneuron.get_num_threads(), *sorted(mapped))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
@pytest.mark.parametrize("first", ["torch", "linneuron"])
def test_one_openmp_runtime_in_either_import_order(first):
    """torch 2.4's wheel ships libgomp as libgomp-a34b3233.so.1: imported after linneuron it used to load it beside
    the system's libgomp that _core had loaded, two thread pools with two thread counts (linneuron._openmp)."""
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, "-c", _OPENMP_CHILD, first], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    count, threads, *paths = out.stdout.split()
    assert int(count) == 1, f"{first} first: {paths}"
    assert int(threads) == 1  # torch.set_num_threads(1) reached linneuron's runtime: it is the same one
