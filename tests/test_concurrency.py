"""Threads and processes: concurrent Python threads, fork after OpenMP work, DataLoader workers, thread counts."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading

import linneuron
import numpy as np
import pytest
from _hardening import HANG_TIMEOUT_S, assert_linear_close, reference_step
from linneuron import _core
from linneuron import numpy as lnp

# Python >= 3.12 warns when a process with threads forks; the OpenMP pool makes ours such a process, and forking it
# safely is exactly what these tests check.
FORK_WARNING = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")

needs_fork = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="no fork start method on this platform"
)


def _shapes():
    # Large enough that the GEMM starts several OpenMP threads (> 64 KFLOP per thread), small enough to be quick.
    return [(64, 96, 80), (3, 200, 129), (130, 17, 64), (1, 300, 40), (256, 64, 64)]


def _problems(dtype):
    rng = np.random.default_rng(11)
    return [
        (
            rng.standard_normal((m, k)).astype(dtype),
            rng.standard_normal((n, k)).astype(dtype),
            rng.standard_normal(n).astype(dtype),
        )
        for m, n, k in _shapes()
    ]


def _run_together(n_threads: int, rounds: int, check) -> None:
    """Start ``n_threads`` threads at one barrier; each runs ``check(tid, round)`` (a list of failure strings) for
    ``rounds`` rounds. Fails if a thread hangs, raises or reports a failure."""
    barrier = threading.Barrier(n_threads)
    failures: list[str] = []

    def worker(tid: int) -> None:
        try:
            barrier.wait(timeout=HANG_TIMEOUT_S)
            for r in range(rounds):
                failures.extend(check(tid, r))
        except Exception as err:  # reported below: an exception in a thread would otherwise vanish
            failures.append(f"thread {tid}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG_TIMEOUT_S)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    assert not failures, failures[:5]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_many_python_threads_at_once_give_the_serial_results(dtype):
    """16 threads x 10 rounds of linear, neuron and step on shared inputs, started together by a barrier.

    The GIL is released inside the kernels, so these really run at once. Each result must equal, bit for bit, the
    one computed serially before (the kernels are deterministic for a thread count), and be close to float64.
    """
    linneuron.set_num_threads(2)
    problems = _problems(dtype)
    serial = [(lnp.linear(x, w, b), lnp.neuron(x, w, b), lnp.step(x)) for x, w, b in problems]
    for (x, w, b), (lin, _, _) in zip(problems, serial):
        assert_linear_close(lin, x, w, b)

    def check(tid: int, r: int) -> list[str]:
        i = (tid + r) % len(problems)
        x, w, b = problems[i]
        lin, neu, stp = serial[i]
        failures = []
        if not np.array_equal(lnp.linear(x, w, b), lin):
            failures.append(f"thread {tid} round {r}: linear differs on problem {i}")
        if not np.array_equal(lnp.neuron(x, w, b), neu):
            failures.append(f"thread {tid} round {r}: neuron differs on problem {i}")
        if not np.array_equal(lnp.step(x), stp):
            failures.append(f"thread {tid} round {r}: step differs on problem {i}")
        return failures

    _run_together(n_threads=16, rounds=10, check=check)


def test_threads_switching_thread_count_while_others_compute():
    """set_num_threads from one thread while others run kernels: every result stays correct."""
    x, w, b = _problems(np.float64)[0]
    expected = lnp.linear(x, w, b)
    stop = threading.Event()
    failures: list[str] = []

    def compute() -> None:
        while not stop.is_set():
            if not np.array_equal(lnp.linear(x, w, b), expected):
                failures.append("linear changed while the thread count changed")
                return

    workers = [threading.Thread(target=compute) for _ in range(4)]
    for t in workers:
        t.start()
    try:
        for n in [1, 2, 3, 1, 2, 4, 1] * 5:
            linneuron.set_num_threads(n)
    finally:
        stop.set()
        for t in workers:
            t.join(HANG_TIMEOUT_S)
    assert not any(t.is_alive() for t in workers)
    assert not failures, failures


# ---- fork --------------------------------------------------------------------------------------------------


def _child_computes(queue, x, w, b) -> None:
    # Runs in the forked child: the parent's OpenMP pool is gone, so only a one-thread region can run here.
    queue.put(
        {
            "in_forked_child": _core.in_forked_child(),
            "num_threads": linneuron.get_num_threads(),
            "linear": lnp.linear(x, w, b),
            "step": lnp.step(x),
        }
    )


def _run_forked(target, *args):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(queue, *args))
    proc.start()
    try:
        result = queue.get(timeout=HANG_TIMEOUT_S)
    except Exception:
        result = None
    proc.join(HANG_TIMEOUT_S)
    hung = proc.is_alive()
    if hung:
        proc.kill()
        proc.join()
    return result, hung, proc.exitcode


@needs_fork
@FORK_WARNING
def test_fork_after_openmp_work_does_not_hang():
    """The parent runs multi-threaded kernels (starting libgomp's pool), then forks; the child computes.

    Without the pthread_atfork handler in runtime.cpp the child waits forever for pool threads fork() did not copy
    (seen with this exact test before the handler existed); with it the child runs one thread and is correct.
    """
    linneuron.set_num_threads(2)  # even on a one-core runner, so that the pool really exists
    x, w, b = (a.astype(np.float64) for a in _problems(np.float64)[-1])
    expected = lnp.linear(x, w, b)  # 2 * 256 * 64 * 64 FLOP: two threads in the parent
    result, hung, exitcode = _run_forked(_child_computes, x, w, b)
    assert not hung, f"the forked child hung for {HANG_TIMEOUT_S} s"
    assert exitcode == 0 and result is not None
    assert result["in_forked_child"] is True
    assert result["num_threads"] == 1
    np.testing.assert_array_equal(result["linear"], expected)  # one thread gives the same bits as two
    np.testing.assert_array_equal(result["step"], reference_step(x))
    assert _core.in_forked_child() is False
    assert linneuron.get_num_threads() == 2, "the parent keeps its thread count"


@needs_fork
@FORK_WARNING
def test_fork_from_a_forked_child_and_from_threads():
    """Nested fork (a child that forks again) and forks taken while other threads compute both finish."""
    linneuron.set_num_threads(2)
    x, w, b = _problems(np.float64)[0]
    expected = lnp.linear(x, w, b)

    busy = threading.Event()

    def spin() -> None:
        while not busy.is_set():
            lnp.linear(x, w, b)

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        results = [_run_forked(_child_computes, x, w, b) for _ in range(3)]
    finally:
        busy.set()
        spinner.join(HANG_TIMEOUT_S)
    for result, hung, exitcode in results:
        assert not hung and exitcode == 0
        np.testing.assert_array_equal(result["linear"], expected)

    result, hung, exitcode = _run_forked(_grandchild_computes, x, w, b)
    assert not hung and exitcode == 0, "nested fork hung or failed"
    np.testing.assert_array_equal(result, expected)


def _grandchild_computes(queue, x, w, b) -> None:
    lnp.linear(x, w, b)  # the child uses the kernels itself before forking again
    inner, hung, exitcode = _run_forked(_child_computes, x, w, b)
    queue.put(None if hung or exitcode != 0 else inner["linear"])


# ---- DataLoader workers ------------------------------------------------------------------------------------


class _LinearDataset:
    """Each item is computed by linneuron inside the worker: numpy linear of a 128 x 128 problem."""

    def __init__(self, weight: np.ndarray):
        self.weight = weight

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int):
        rng = np.random.default_rng(i)
        x = rng.standard_normal((128, self.weight.shape[1]))
        return lnp.linear(x, self.weight), lnp.step(x)


def _keep_items(items):
    return items


@needs_fork
@FORK_WARNING
def test_dataloader_fork_workers_after_openmp_work():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    linneuron.set_num_threads(2)
    rng = np.random.default_rng(12)
    weight = rng.standard_normal((32, 128))
    lnp.linear(rng.standard_normal((256, 128)), weight)  # the parent's pool is started before the workers fork
    dataset = _LinearDataset(weight)
    loader = DataLoader(
        dataset,
        batch_size=4,
        num_workers=2,
        multiprocessing_context="fork",
        timeout=HANG_TIMEOUT_S,  # a hung worker raises RuntimeError instead of blocking CI
        collate_fn=_keep_items,
    )
    seen = 0
    for batch in loader:
        for y, h in batch:
            idx = seen
            x = np.random.default_rng(idx).standard_normal((128, 128))
            assert_linear_close(np.asarray(y), x, weight)
            np.testing.assert_array_equal(np.asarray(h), reference_step(x))
            seen += 1
    assert seen == len(dataset)
    del torch


# ---- thread counts: follow torch, never oversubscribe ---------------------------------------------------------


def _run_python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=HANG_TIMEOUT_S,
        env={k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "LINNEURON_ISA")},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_default_thread_count_follows_torch():
    torch = pytest.importorskip("torch")
    linneuron.set_num_threads(None)
    before = torch.get_num_threads()
    try:
        assert linneuron.get_num_threads() == before
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            assert linneuron.get_num_threads() == n
        linneuron.set_num_threads(1)  # an explicit setting wins over torch's
        torch.set_num_threads(3)
        assert linneuron.get_num_threads() == 1
        linneuron.set_num_threads(None)  # and None goes back to following torch
        assert linneuron.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
        linneuron.set_num_threads(None)


def test_torch_and_linneuron_share_one_thread_pool():
    """In a fresh process: after torch and linneuron both ran parallel work, the process holds no more OS threads
    than one OpenMP team of torch's size (plus the main thread), in either import order: no oversubscription."""
    pytest.importorskip("torch")
    for first, second in [("torch", "linneuron"), ("linneuron", "torch")]:
        out = _run_python(
            f"""
            import os
            import {first}, {second}
            import numpy as np, torch, linneuron
            from linneuron import numpy as lnp
            tasks = lambda: len(os.listdir("/proc/self/task"))
            start = tasks()
            a = torch.randn(512, 512)
            (a @ a).sum(); torch.relu(torch.randn(1 << 21))
            lnp.linear(np.ones((512, 512)), np.ones((512, 512)))
            print(start, tasks(), torch.get_num_threads(), linneuron.get_num_threads(), os.cpu_count())
            """
        )
        start, end, torch_threads, ln_threads, cpus = map(int, out.split())
        assert ln_threads == torch_threads <= cpus
        assert end - start <= torch_threads - 1, f"{first} first: {end - start} new OS threads"


@pytest.mark.slow
@needs_fork
def test_control_torch_hangs_where_linneuron_does_not():
    """Control for the fork tests: in this runtime a forked child that starts an OpenMP team really hangs.

    One parent runs torch's parallel relu and a two-thread linneuron GEMM, then forks twice: the child running
    linneuron must finish; the child running torch's relu is expected to hang (libgomp is not fork-safe). If it
    does not, this torch/libgomp is fork-safe, the hazard cannot be shown here, and the test skips.
    """
    pytest.importorskip("torch")
    out = _run_python(
        """
        import multiprocessing as mp, numpy as np, torch, linneuron
        from linneuron import numpy as lnp
        torch.set_num_threads(2); linneuron.set_num_threads(2)
        torch.relu(torch.randn(1 << 22))
        x = np.ones((256, 256)); lnp.linear(x, x)
        def run(target):
            p = mp.get_context("fork").Process(target=target); p.start(); p.join(5)
            state = "hung" if p.is_alive() else f"exit{p.exitcode}"
            if p.is_alive(): p.kill()
            return state
        print(run(lambda: lnp.linear(x, x)), run(lambda: torch.relu(torch.randn(1 << 22))))
        """
    )
    linneuron_child, torch_child = out.split()
    assert linneuron_child == "exit0"
    if torch_child != "hung":
        pytest.skip(f"torch's forked child did not hang here ({torch_child}): this OpenMP runtime is fork-safe")


# ---- the same through the torch API ------------------------------------------------------------------------------


def _torch_problems():
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(13)
    return [
        (
            torch.randn(m, k, generator=g, dtype=torch.float64),
            torch.randn(n, k, generator=g, dtype=torch.float64),
            torch.randn(n, generator=g, dtype=torch.float64),
        )
        for m, n, k in _shapes()
    ]


def _torch_train_step(x, w, b):
    """Forward and backward of neuron (atan surrogate) and linear; returns the outputs and all gradients."""
    import linneuron.functional as LF

    w = w.detach().clone().requires_grad_()
    b = b.detach().clone().requires_grad_()
    xg = x.detach().clone().requires_grad_()
    y = LF.neuron(xg, w, b)
    z = LF.linear(xg, w, b)
    (y.sum() + (z * z).mean()).backward()
    return y.detach(), z.detach(), xg.grad, w.grad, b.grad


def test_many_python_threads_through_the_torch_api():
    """16 threads run forward + backward of linear/neuron at once; every tensor equals the serial one bit for bit."""
    torch = pytest.importorskip("torch")
    linneuron.set_num_threads(2)
    problems = _torch_problems()
    serial = [_torch_train_step(*p) for p in problems]

    def check(tid: int, r: int) -> list[str]:
        i = (tid + r) % len(problems)
        return [
            f"thread {tid} round {r} problem {i}: {name} differs"
            for name, got, want in zip(("y", "z", "dx", "dw", "db"), _torch_train_step(*problems[i]), serial[i])
            if not torch.equal(got, want)
        ]

    _run_together(n_threads=16, rounds=6, check=check)


def _child_trains(queue, x, w, b) -> None:
    import linneuron.functional as LF

    module = linneuron.Linear(x.shape[1], w.shape[0], dtype=x.dtype)
    queue.put(  # as numpy arrays: torch's queue pickling shares memory that dies with this child
        {
            "num_threads": linneuron.get_num_threads(),
            "train": [t.numpy() for t in _torch_train_step(x, w, b)],
            "step": LF.step(x).numpy(),
            "module": tuple(module(x).shape),
        }
    )


@needs_fork
@FORK_WARNING
def test_fork_after_torch_api_work_does_not_hang():
    pytest.importorskip("torch")
    linneuron.set_num_threads(2)
    x, w, b = _torch_problems()[-1]
    expected = _torch_train_step(x, w, b)  # forward and backward, multi-threaded, in the parent
    result, hung, exitcode = _run_forked(_child_trains, x, w, b)
    assert not hung, f"the forked child hung for {HANG_TIMEOUT_S} s"
    assert exitcode == 0 and result is not None
    assert result["num_threads"] == 1
    for got, want in zip(result["train"], expected):
        np.testing.assert_array_equal(got, want.numpy())
    np.testing.assert_array_equal(result["step"], (x >= 0).to(x.dtype).numpy())
    assert result["module"] == (x.shape[0], w.shape[0])


class _TorchNeuronDataset:
    """Each item runs a linneuron Neuron layer (torch API) inside the worker."""

    def __init__(self):
        import torch

        torch.manual_seed(0)
        self.layer = linneuron.Neuron(64, 16, dtype=torch.float64)

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int):
        import torch

        x = torch.randn(128, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            return x, self.layer(x)


@needs_fork
@FORK_WARNING
def test_dataloader_fork_workers_with_torch_modules():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    linneuron.set_num_threads(2)
    dataset = _TorchNeuronDataset()
    with torch.no_grad():
        dataset.layer(torch.randn(256, 64, dtype=torch.float64))  # the parent's pool exists before the fork
    loader = DataLoader(dataset, batch_size=3, num_workers=2, multiprocessing_context="fork", timeout=HANG_TIMEOUT_S)
    seen = 0
    for xs, ys in loader:
        expected = (torch.nn.functional.linear(xs, dataset.layer.weight, dataset.layer.bias) >= 0).to(xs.dtype)
        assert torch.equal(ys, expected)
        seen += xs.shape[0]
    assert seen == len(dataset)
