"""Large GEMMs: linneuron (_core.gemm) vs numpy OpenBLAS vs torch, interleaved medians, % of measured FMA peak.

Usage: python benchmarks/large_gemm.py [--threads 1] [--isa avx2] [--reps 5]
C = A Bᵀ-free plain product A (M, K) @ B (K, N), all row-major, into preallocated outputs.
"""

import argparse
import os
import statistics
import time

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--isa", default=None)
parser.add_argument("--reps", type=int, default=5)
parser.add_argument("--stat", default="median", choices=["median", "min"])
parser.add_argument("--shapes", default="1024x1024x1024,2048x2048x2048,4096x1024x1024,3000x500x700")
parser.add_argument("--dtypes", default="float32,float64")
parser.add_argument("--wt", action="store_true", help="B given as Wᵀ of a row-major W (the Linear forward)")
args = parser.parse_args()
os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
# OpenBLAS workers spin for 2^28 cycles after each call (its default), taking the core the next peer's threads
# need on a 2-CPU machine; 2^4 cycles lets them sleep at once.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ["OMP_NUM_THREADS"] = str(args.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from linneuron import _core  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

torch.set_num_threads(args.threads)
_core.set_num_threads(args.threads)
if args.isa:
    assert _core.set_active_isa(args.isa)
threadpool_limits(args.threads)


def lin_gemm(a, b, c, dt):
    m, k = a.shape
    n = c.shape[1]
    s = a.itemsize
    _core.gemm(
        dt,
        m,
        n,
        k,
        a.ctypes.data,
        a.strides[0] // s,
        a.strides[1] // s,
        b.ctypes.data,
        b.strides[0] // s,
        b.strides[1] // s,
        c.ctypes.data,
        c.strides[0] // s,
        c.strides[1] // s,
        0,
        1,
        False,
        False,
    )


print(f"threads={args.threads} isa={_core.active_isa()} load={os.getloadavg()}")
for dtn in args.dtypes.split(","):
    dtype = np.dtype(dtn)
    dt = _core.FLOAT32 if dtype == np.float32 else _core.FLOAT64
    peak = _core.fma_peak_gflops(dt, args.threads, 0.3)
    for shape in args.shapes.split(","):
        m, k, n = map(int, shape.split("x"))
        rng = np.random.default_rng(0)
        a = rng.standard_normal((m, k)).astype(dtype)
        if args.wt:
            w = rng.standard_normal((n, k)).astype(dtype)
            b = w.T
        else:
            b = rng.standard_normal((k, n)).astype(dtype)
        c1 = np.empty((m, n), dtype)
        c2 = np.empty((m, n), dtype)
        ta, tb, tc = (
            torch.from_numpy(a),
            torch.from_numpy(np.asarray(b)),
            torch.empty((m, n), dtype=torch.from_numpy(a).dtype),
        )
        fns = {
            "lin": lambda a=a, b=b, c1=c1, dt=dt: lin_gemm(a, b, c1, dt),
            "numpy": lambda a=a, b=b, c2=c2: np.matmul(a, b, out=c2),
            "torch": lambda ta=ta, tb=tb, tc=tc: torch.mm(ta, tb, out=tc),
        }
        times = {key: [] for key in fns}
        for f in fns.values():
            f()
        for _ in range(args.reps):
            for key, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[key].append(time.perf_counter() - t0)
        err = np.abs(c1 - c2).max() / max(1.0, np.abs(c2).max())
        flops = 2.0 * m * n * k
        stat = statistics.median if args.stat == "median" else min
        med = {key: stat(v) for key, v in times.items()}
        g = {key: flops / t / 1e9 for key, t in med.items()}
        print(
            f"{dtn} {shape:>16}  peak {peak:6.1f}  lin {g['lin']:6.1f} ({100 * g['lin'] / peak:4.1f}%)  "
            f"numpy {g['numpy']:6.1f} ({100 * g['numpy'] / peak:4.1f}%)  torch {g['torch']:6.1f} "
            f"({100 * g['torch'] / peak:4.1f}%)  vs numpy {g['lin'] / g['numpy']:.2f}x  "
            f"vs torch {g['lin'] / g['torch']:.2f}x"
            f"  err {err:.1e}",
            flush=True,
        )
