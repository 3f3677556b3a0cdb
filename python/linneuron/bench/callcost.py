"""Per-call cost against torch on the issue's tiny shapes: ``python -m linneuron.bench.callcost``.

The rows of the call-path goals (tiny functional calls 1x1->1, 3x3->1, 1x3->7, 8x16->16 and the 3 -> 1 module),
each timed against its torch twin in one process, interleaved (ours, torch, torch, ours, ...), median of repeats,
at one thread count (torch.set_num_threads and linneuron.set_num_threads both set). Regimes:

- ``no-grad``   forward under torch.no_grad();
- ``grad``      forward with every operand requiring grad (the graph is built, no backward run);
- ``fwd+bwd``   forward and ``backward(grad_out)`` with gradients for input, weight and bias.

Printed: median µs per call for each side and the speed-up, the median over repeats of torch time / linneuron
time (> 1: linneuron is faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

FUNCTIONAL_SHAPES = [(1, 1, 1), (3, 3, 1), (1, 3, 7), (8, 16, 16)]  # (rows, in_features, out_features)
MODULE_SHAPE = (4, 3, 1)  # the AND/OR truth table through a 3 -> 1 layer
REGIMES = ("no-grad", "grad", "fwd+bwd")


def _pair(kind: str, shape, dtype, regime: str):
    """``(linneuron_call, torch_call)`` doing the same work."""
    import linneuron
    import linneuron.functional as LF

    rows, k, n = shape
    g = torch.Generator().manual_seed(rows * 1009 + k * 31 + n)
    grad = regime != "no-grad"
    x = torch.randn(rows, k, generator=g, dtype=dtype).requires_grad_(grad)
    grad_out = torch.randn(rows, n, generator=g, dtype=dtype)
    if kind == "module":
        ref = torch.nn.Linear(k, n, dtype=dtype).requires_grad_(grad)
        ours = linneuron.Linear.from_torch(ref)
        fns = (ours, ref)
        leaves = [x, ref.weight, ref.bias]
    else:
        w = torch.randn(n, k, generator=g, dtype=dtype).requires_grad_(grad)
        b = torch.randn(n, generator=g, dtype=dtype).requires_grad_(grad)
        fns = ((lambda t: LF.linear(t, w, b)), (lambda t: F.linear(t, w, b)))
        leaves = [x, w, b]

    def make(fn):
        if regime != "fwd+bwd":  # no-grad: the timing loop runs inside torch.no_grad() (see _median_pair)

            def call():
                return fn(x)
        else:

            def call():
                for t in leaves:
                    t.grad = None
                fn(x).backward(grad_out)

        return call

    return make(fns[0]), make(fns[1])


def _median_pair(a, b, calls: int, repeats: int, grad: bool) -> tuple[float, float, float]:
    with torch.set_grad_enabled(grad):  # once around the loop: its own cost is no part of either call
        return _median_pair_here(a, b, calls, repeats)


def _median_pair_here(a, b, calls: int, repeats: int) -> tuple[float, float, float]:
    """Medians of a's and b's µs per call, and the median of the per-repeat ratios b / a (each repeat times the
    two back to back, so a load that comes and goes shifts both of a pair; on a busy machine that median moves
    less than the ratio of the two medians)."""
    for _ in range(max(50, calls // 10)):  # warm-up
        a(), b()
    ta: list[float] = []
    tb: list[float] = []
    for r in range(repeats):
        for fn, out in ((a, ta), (b, tb)) if r % 2 == 0 else ((b, tb), (a, ta)):
            t0 = time.perf_counter_ns()
            for _ in range(calls):
                fn()
            out.append((time.perf_counter_ns() - t0) / calls / 1e3)
    return statistics.median(ta), statistics.median(tb), statistics.median(y / x for x, y in zip(ta, tb))


def measure(dtypes=("float32", "float64"), regimes=REGIMES, calls: int = 300, repeats: int = 31, kinds=None):
    """One row per (kind, shape, dtype, regime): µs per call of each side and the speed-up."""
    rows = []
    cases = [("functional", s) for s in FUNCTIONAL_SHAPES] + [("module", MODULE_SHAPE)]
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        for regime in regimes:
            for kind, shape in cases:
                if kinds and kind not in kinds:
                    continue
                ours, theirs = _pair(kind, shape, dtype, regime)
                t_ours, t_torch, speedup = _median_pair(ours, theirs, calls, repeats, regime != "no-grad")
                rows.append({"kind": kind, "shape": shape, "dtype": dtype_name, "regime": regime,
                             "linneuron_us": t_ours, "torch_us": t_torch, "speedup": speedup})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32,float64", help="comma-separated dtypes")
    parser.add_argument("--regime", default=",".join(REGIMES), help=f"comma-separated, of {REGIMES}")
    parser.add_argument("--kind", default="", help="functional or module (default both)")
    parser.add_argument("--calls", type=int, default=300, help="calls per timed sample")
    parser.add_argument("--repeats", type=int, default=31, help="samples per side")
    args = parser.parse_args(argv)
    from linneuron._info import set_num_threads

    torch.set_num_threads(args.threads)
    set_num_threads(args.threads)
    kinds = [args.kind] if args.kind else None
    rows = measure(args.dtype.split(","), args.regime.split(","), args.calls, args.repeats, kinds)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median µs per call, "
          "speed-up = median of torch / linneuron over repeats")  # fmt: skip
    for r in rows:
        shape = "{}x{}->{}".format(*r["shape"])
        print(f"  {r['kind']:10s} {shape:9s} {r['dtype']:8s} {r['regime']:8s} "
              f"linneuron {r['linneuron_us']:7.2f}  torch {r['torch_us']:7.2f}  x{r['speedup']:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
