"""Kernel against kernel: _core.gemm (forward layout, X (M,K) row-major, B = Wᵀ of W (N,K), bias) into a preallocated
output vs torch.addmm(out=). Random (M,K,N), fixed seed: M log-uniform 1..65536, K,N uniform 1..1024.

Usage: python benchmarks/sweep_kernels.py [--count 40] [--threads 1] [--shapes 4096x3x16,...]
Reports each shape's ratio (torch time / linneuron time, min of interleaved repeats), then min and geomean.
"""

import argparse
import math
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--count", type=int, default=40)
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--shapes", default=None)
parser.add_argument("--dtypes", default="float32,float64")
args = parser.parse_args()
os.environ["OMP_NUM_THREADS"] = str(args.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from linneuron import _core  # noqa: E402

torch.set_num_threads(args.threads)
_core.set_num_threads(args.threads)
rng = np.random.default_rng(args.seed)
if args.shapes:
    shapes = [tuple(map(int, s.split("x"))) for s in args.shapes.split(",")]
else:
    shapes = [
        (int(round(math.exp(rng.uniform(0, math.log(65536))))), int(rng.integers(1, 1025)), int(rng.integers(1, 1025)))
        for _ in range(args.count)
    ]


def timed(f, budget=0.02):
    f()
    t0 = time.perf_counter()
    f()
    once = max(time.perf_counter() - t0, 1e-7)
    reps = max(1, min(2000, int(budget / once)))
    t0 = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t0) / reps


ratios = []
for dtn in args.dtypes.split(","):
    tdt = getattr(torch, dtn)
    dt = _core.FLOAT32 if dtn == "float32" else _core.FLOAT64
    for m, k, n in shapes:
        x = torch.randn(m, k, dtype=tdt)
        w = torch.randn(n, k, dtype=tdt)
        b = torch.randn(n, dtype=tdt)
        out1 = torch.empty(m, n, dtype=tdt)
        out2 = torch.empty(m, n, dtype=tdt)
        wt = w.t()

        def lin(x=x, w=w, b=b, out1=out1, m=m, n=n, k=k, dt=dt):
            _core.gemm(
                dt,
                m,
                n,
                k,
                x.data_ptr(),
                k,
                1,
                w.data_ptr(),
                1,
                k,
                out1.data_ptr(),
                n,
                1,
                b.data_ptr(),
                1,
                False,
                False,
            )

        def ref(b=b, x=x, wt=wt, out2=out2):
            torch.addmm(b, x, wt, out=out2)

        tl, tr = [], []
        for _ in range(5):
            tl.append(timed(lin))
            tr.append(timed(ref))
        assert torch.allclose(out1, out2, rtol=1e-3, atol=1e-3 * math.sqrt(k)), (m, k, n)
        r = min(tr) / min(tl)
        ratios.append(r)
        print(
            f"{dtn} {m:>6}x{k:>4}->{n:<4} lin {min(tl) * 1e6:9.1f} us  torch {min(tr) * 1e6:9.1f} us  {r:5.2f}x",
            flush=True,
        )
g = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
print(
    f"threads={args.threads} count={len(ratios)} min {min(ratios):.2f} geomean {g:.2f} "
    f"below 0.9: {sum(r < 0.9 for r in ratios)} load={os.getloadavg()}"
)
