"""Memory: 10,000 repeated calls (successful and failing) keep resident memory flat; reference counts are unchanged.

Bound: after a warm-up, 10,000 calls may grow the resident set by at most 2 MiB, i.e. less than ~210 bytes a call.
A leaked output array of the sizes used here (>= 1 KiB) or a leaked workspace would exceed it many times over.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time

import numpy as np
import pytest
from linneuron import _core
from linneuron import numpy as lnp

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")

CALLS = 10_000
RSS_BOUND_BYTES = 2 * 1024 * 1024


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _growth_over(calls: int, fn) -> int:
    for _ in range(1000):  # warm-up: workspaces, caches, allocator pools reach their steady state
        fn()
    gc.collect()
    before = _rss_bytes()
    for _ in range(calls):
        fn()
    gc.collect()
    return _rss_bytes() - before


def _operands(dtype=np.float32, m=32, n=16, k=24):
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((m, k)).astype(dtype),
        rng.standard_normal((n, k)).astype(dtype),
        rng.standard_normal(n).astype(dtype),
    )


@pytest.mark.parametrize(
    "name, call",
    [
        ("linear", lambda x, w, b: lnp.linear(x, w, b)),
        ("neuron", lambda x, w, b: lnp.neuron(x, w, b)),
        ("step", lambda x, w, b: lnp.step(x)),
        ("linear_strided", lambda x, w, b: lnp.linear(x[::2, ::-1], w[:, ::-1], b)),  # the copy-free paths
        ("linear_misaligned_copy", None),  # filled in below: a path that copies its input first
    ],
)
def test_repeated_calls_do_not_grow_rss(name, call):
    x, w, b = _operands()
    if call is None:
        raw = np.zeros(x.nbytes + 1, dtype=np.uint8)
        x = raw[1:].view(np.float32).reshape(x.shape)

        def call(x, w, b):
            return lnp.linear(x, w, b)

    growth = _growth_over(CALLS, lambda: call(x, w, b))
    assert growth <= RSS_BOUND_BYTES, f"{name}: RSS grew by {growth / 2**20:.2f} MiB over {CALLS} calls"


def test_repeated_errors_do_not_grow_rss():
    x, w, b = _operands()
    bad_cases = [
        (x.astype(np.int32), w, b),
        (x, w.astype(np.float64), b),
        (x, w, b[:-1]),
        (x[:, :-1], w, b),
        (np.float32(1.0), w, b),
    ]

    def fail_each():
        for args in bad_cases:
            try:
                lnp.linear(*args)
            except (TypeError, ValueError):
                pass
            else:
                raise AssertionError(f"no error for {[getattr(a, 'shape', a) for a in args]}")

    growth = _growth_over(CALLS // len(bad_cases), fail_each)
    assert growth <= RSS_BOUND_BYTES, f"RSS grew by {growth / 2**20:.2f} MiB over {CALLS} failing calls"


def test_short_lived_threads_release_their_workspace():
    """Each calling thread owns a packing workspace; it must be freed when the thread ends."""
    x, w, b = _operands(np.float64, m=200, n=200, k=300)
    lnp.linear(x, w, b)
    held = _core.workspace_bytes()

    def call():
        lnp.linear(x, w, b)

    for _ in range(3):  # warm-up: thread stacks and allocator arenas
        t = threading.Thread(target=call)
        t.start()
        t.join()
    gc.collect()
    rss_before = _rss_bytes()
    for _ in range(100):
        t = threading.Thread(target=call)
        t.start()
        t.join()
        # join() returns when the Python thread is done; the OS thread frees its thread_local workspace a moment
        # later, as it exits. Wait for that (a leak would never settle).
        deadline = time.monotonic() + 5
        while _core.workspace_bytes() != held and time.monotonic() < deadline:
            time.sleep(0.001)
        assert _core.workspace_bytes() == held, "a finished thread still holds workspace"
    gc.collect()
    growth = _rss_bytes() - rss_before
    assert growth <= RSS_BOUND_BYTES, f"100 threads left {growth / 2**20:.2f} MiB behind"


@pytest.mark.parametrize("fn_name", ["linear", "neuron"])
def test_reference_counts_unchanged(fn_name):
    fn = getattr(lnp, fn_name)
    x, w, b = _operands()
    views = (x[::2], w[:, ::-1], b[::-1])  # arrays that are themselves views hold a base reference
    args_sets = [(x, w, b), (x, w, None), views]
    for args in args_sets:
        before = [sys.getrefcount(a) for a in args if a is not None]
        bases = [sys.getrefcount(a.base) for a in args if a is not None and a.base is not None]
        for _ in range(100):
            out = fn(*args)
        after = [sys.getrefcount(a) for a in args if a is not None]
        bases_after = [sys.getrefcount(a.base) for a in args if a is not None and a.base is not None]
        assert before == after and bases == bases_after
        assert sys.getrefcount(out) == 2, "the result must be owned by the caller alone"
        assert out.base is None or out.flags.owndata


def test_reference_counts_unchanged_by_errors():
    x, w, b = _operands()
    wrong = w.astype(np.float64)
    before = [sys.getrefcount(a) for a in (x, wrong, b)]
    for _ in range(100):
        try:
            lnp.linear(x, wrong, b)
        except TypeError:
            pass
    after = [sys.getrefcount(a) for a in (x, wrong, b)]
    assert before == after


def test_step_reference_counts_and_result_ownership():
    z = np.random.default_rng(1).standard_normal((7, 9))
    before = sys.getrefcount(z)
    for _ in range(100):
        out = lnp.step(z)
    assert sys.getrefcount(z) == before
    assert sys.getrefcount(out) == 2
    assert out.flags.owndata


# ---- the torch API ---------------------------------------------------------------------------------------------


def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("mode", ["functional", "module_inference", "module_training"])
def test_torch_repeated_calls_do_not_grow_rss(mode):
    torch = _torch()
    import linneuron
    import linneuron.functional as LF

    torch.manual_seed(0)
    x = torch.randn(32, 24)
    w, b = torch.randn(16, 24), torch.randn(16)
    layer = linneuron.Neuron(24, 16)
    optimizer = torch.optim.SGD(layer.parameters(), lr=1e-3)
    if mode == "functional":

        def call():
            LF.linear(x, w, b)
            LF.neuron(x, w, b)
            LF.step(x)

    elif mode == "module_inference":

        def call():
            with torch.no_grad():
                layer(x)

    else:

        def call():
            optimizer.zero_grad()
            layer(x).sum().backward()
            optimizer.step()

    growth = _growth_over(CALLS, call)
    assert growth <= RSS_BOUND_BYTES, f"{mode}: RSS grew by {growth / 2**20:.2f} MiB over {CALLS} calls"


def test_torch_reference_counts_and_graph_release():
    """Inputs keep their refcounts; once the result is dropped, the autograd graph (and the saved inputs) go too."""
    torch = _torch()
    import weakref

    import linneuron.functional as LF

    x = torch.randn(8, 5, requires_grad=True)
    w = torch.randn(3, 5, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    before = [sys.getrefcount(t) for t in (x, w, b)]
    for _ in range(100):
        out = LF.neuron(x, w, b)
        out.sum().backward()
        LF.linear(x, w, b).sum().backward()
        with torch.no_grad():
            LF.neuron(x, w, b)
    del out
    gc.collect()
    assert [sys.getrefcount(t) for t in (x, w, b)] == before

    y = LF.linear(x.detach().clone().requires_grad_(), w, b)
    node = weakref.ref(y.grad_fn)
    del y
    gc.collect()
    assert node() is None, "the autograd node outlived its output"
