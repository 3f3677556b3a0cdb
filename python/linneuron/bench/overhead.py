"""Per-call cost of the torch registration styles on the 3 -> 1 tutorial layer: ``python -m linneuron.bench.overhead``.

The layer (4 rows x 3 inputs -> 1 output, the AND/OR truth table) does ~12 multiply-adds, so its time is all
call overhead. Compared, in one process, interleaved, median of repeats, same thread count:

- ``F.linear``                        torch's own op (reference);
- ``custom_op``                       the kernel wrapped with ``torch.library.custom_op`` (+ register_autograd);
- ``Library.define/impl``             ``torch.ops.linneuron.linear`` as registered in ops.py (its
                                      register_autograd kernel runs in Python on every call, grad or not),
                                      and, inference only, the same op with no autograd kernel at all;
- ``linneuron.functional.linear``     the eager fast path (direct kernel call / autograd.Function), which
                                      falls back to the registered op under compile/export/fake tensors.
Two regimes: inference (no grad) and training (forward + backward with every input requiring grad).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as TF

from .. import _kernels, ops
from .. import functional as LF


def _make_custom_op():
    @torch.library.custom_op("linneuron_overhead::linear", mutates_args=())
    def linear_custom(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        _kernels.check_linear(input, weight, bias, "linear")
        return _kernels.linear(input, weight, bias, False, "linear")

    @linear_custom.register_fake
    def _(input, weight, bias):
        return input.new_empty((*input.shape[:-1], weight.shape[0]))

    def setup(ctx, inputs, output):
        input, weight, bias = inputs
        ctx.save_for_backward(input, weight)
        ctx.has_bias = bias is not None

    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        return ops.linear_backward(ctx.needs_input_grad, grad_output, input, weight, ctx.has_bias)

    linear_custom.register_autograd(backward, setup_context=setup)
    return linear_custom


def _make_plain_library_op():
    """The op as Library.define/impl with no autograd kernel: the dispatcher plus a Python kernel, nothing else."""
    lib = torch.library.Library("linneuron_overhead", "FRAGMENT")
    lib.define("linear_plain(Tensor input, Tensor weight, Tensor? bias=None) -> Tensor")

    def kernel(input, weight, bias=None):
        _kernels.check_linear(input, weight, bias, "linear")
        return _kernels.linear(input, weight, bias, False, "linear")

    lib.impl("linear_plain", kernel, "CPU")
    _keep_alive.append(lib)
    return torch.ops.linneuron_overhead.linear_plain.default


_keep_alive: list = []


def measure(rows: int = 4, k: int = 3, n: int = 1, calls: int = 2000, repeats: int = 15) -> dict[str, dict[str, float]]:
    """Median µs per call for each style, ``{"inference": {...}, "training": {...}}``."""
    torch.manual_seed(0)
    styles = {
        "F.linear (torch)": TF.linear,
        "torch.library.custom_op": _make_custom_op(),
        "Library.define/impl (torch.ops.linneuron.linear)": ops.linear,
        "Library.define/impl, no autograd kernel": _make_plain_library_op(),
        "linneuron.functional.linear (fast path)": LF.linear,
    }
    results: dict[str, dict[str, float]] = {}
    for regime in ("inference", "training"):
        grad = regime == "training"
        if grad:  # an op without an autograd kernel cannot be trained through
            styles.pop("Library.define/impl, no autograd kernel")
        x = torch.randn(rows, k, requires_grad=grad)
        w = torch.randn(n, k, requires_grad=grad)
        b = torch.randn(n, requires_grad=grad)

        def run(fn, x=x, w=w, b=b, grad=grad):
            if grad:
                for _ in range(calls):
                    fn(x, w, b).sum().backward()
            else:
                with torch.no_grad():
                    for _ in range(calls):
                        fn(x, w, b)

        samples: dict[str, list[float]] = {name: [] for name in styles}
        for fn in styles.values():  # warm-up
            run(fn)
        for _ in range(repeats):
            for name, fn in styles.items():  # interleaved, so drifts in machine load hit every style alike
                start = time.perf_counter_ns()
                run(fn)
                samples[name].append((time.perf_counter_ns() - start) / calls / 1e3)
        results[regime] = {name: statistics.median(values) for name, values in samples.items()}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    results = measure(calls=args.calls, repeats=args.repeats)
    print(f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, 4x3 -> 1, median µs per call")
    for regime, table in results.items():
        label = "forward (no grad)" if regime == "inference" else "forward + backward (sum().backward())"
        print(f"\n{label}")
        for name, us in table.items():
            print(f"  {name:52s} {us:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
