"""torch-version compatibility: a failed import of the torch layer never poisons the next one."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
