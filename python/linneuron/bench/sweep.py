"""`linneuron bench --sweep`: speed-ups over a random, fixed-seed sample of (M, K, N), end to end or kernel to kernel.

Shapes: M log-uniform in 1..65536, K and N log-uniform in 1..1024 (each rounded to an integer), the same sample
for every dtype and thread count; ``--sweep-kn uniform`` draws K and N uniformly in 1..1024 instead, a sample of
mostly mid-sized and large products (where MKL runs near the FMA peak, so ratios sit nearer 1). Two modes, each a
ratio of medians of interleaved timings in one process at the same thread count (> 1 means linneuron is faster):

- ``end-to-end``: ``linneuron.functional.linear(x, w, b)`` against ``torch.nn.functional.linear(x, w, b)``.
- ``kernel``: ``_core.gemm`` on raw pointers into a preallocated output against ``torch.addmm(b, x, w.T, out=)``.
- ``training``: forward and backward (gradients of input, weight and bias) of ``functional.linear`` against
  ``F.linear``: the forward product and the two backward ones (dX = dY W, dW = dYᵀ X) and the bias gradient.
- ``kernel-dx`` and ``kernel-dw``: the two backward products kernel against kernel, each as linneuron's autograd
  calls ``_core.gemm`` (dX = dY W with W row-major; dW = dYᵀ X with dY read transposed in place) against the
  ``torch.mm(out=)`` of torch's autograd; M is the batch, K the layer's inputs, N its outputs, as in the other modes.
  (``--sweep both`` runs the first two; ``--sweep backward`` the last two; ``--sweep all`` all five.)

The function API (used by other tools, e.g. kernel work that wants the kernel mode alone)::

    from linneuron.bench.sweep import sample_shapes, sweep, summarize
    rows = sweep(sample_shapes(40, seed=0), dtypes=("float32",), threads=(1,), mode="kernel")
    print(summarize(rows))   # {'count', 'min', 'geomean', 'under_0_9', 'worst': [...]}
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from typing import Any

MODES = ("end-to-end", "kernel")  # what ``--sweep both`` runs
TRAINING = "training"
BACKWARD = ("kernel-dx", "kernel-dw")  # what ``--sweep backward`` runs
ALL_MODES = MODES + (TRAINING,) + BACKWARD
M_MAX, KN_MAX = 65536, 1024


KN_DISTRIBUTIONS = ("log", "uniform")


def sample_shapes(count: int, seed: int = 0, m_max: int = M_MAX, kn_max: int = KN_MAX,
                  kn: str = "log") -> list[tuple[int, int, int]]:  # fmt: skip
    """``count`` shapes (M, K, N), fixed by ``seed``: M log-uniform in 1..m_max, K and N in 1..kn_max, log-uniform
    (``kn="log"``) or uniform (``kn="uniform"``)."""
    if kn not in KN_DISTRIBUTIONS:
        raise ValueError(f"sample_shapes: kn must be one of {KN_DISTRIBUTIONS}, got {kn!r}")
    rng = random.Random(seed)

    def draw(top: int) -> int:
        return min(top, max(1, int(round(math.exp(rng.uniform(0.0, math.log(top)))))))

    def draw_kn() -> int:
        return draw(kn_max) if kn == "log" else rng.randint(1, kn_max)

    return [(draw(m_max), draw_kn(), draw_kn()) for _ in range(count)]


def _median_pair(fn_a, fn_b, budget: float) -> tuple[float, float]:
    """Median seconds per call of fn_a and fn_b, sampled alternately, about ``budget`` seconds in all."""
    fn_a(), fn_b()  # warm up (first-touch memory, workspaces)
    t0 = time.perf_counter()
    fn_a(), fn_b()
    per_pair = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(2e-3 / per_pair))  # samples of about 2 ms
    reps = int(min(15, max(3, budget / (per_pair * inner))))
    a: list[float] = []
    b: list[float] = []
    for r in range(reps):
        for fn, out in ((fn_a, a), (fn_b, b)) if r % 2 == 0 else ((fn_b, b), (fn_a, a)):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            out.append((time.perf_counter() - t0) / inner)
    return statistics.median(a), statistics.median(b)


def pair(mode: str, m: int, k: int, n: int, dtype: str):
    """``(linneuron_call, torch_call)`` for one shape in one mode (operands made here, seed fixed)."""
    import torch
    import torch.nn.functional as F

    from linneuron import _core
    from linneuron import functional as LF

    if mode not in ALL_MODES:
        raise ValueError(f"sweep: mode must be one of {ALL_MODES}, got {mode!r}")
    dt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(m * 1_000_003 + k * 1009 + n)
    x = torch.randn(m, k, generator=g, dtype=dt)
    w = torch.randn(n, k, generator=g, dtype=dt)
    b = torch.randn(n, generator=g, dtype=dt)
    if mode == "end-to-end":
        return (lambda: LF.linear(x, w, b)), (lambda: F.linear(x, w, b))
    if mode == TRAINING:
        leaves = [t.requires_grad_() for t in (x, w, b)]
        grad_out = torch.randn(m, n, generator=g, dtype=dt)

        def training(fn):
            def step():
                for t in leaves:
                    t.grad = None
                fn(x, w, b).backward(grad_out)
                return [t.grad for t in leaves]

            return step

        return training(LF.linear), training(F.linear)
    code = {torch.float32: _core.FLOAT32, torch.float64: _core.FLOAT64}[dt]
    if mode in BACKWARD:
        grad_out = torch.randn(m, n, generator=g, dtype=dt)
        rows, cols = (m, k) if mode == "kernel-dx" else (n, k)
        out_ours = torch.empty(rows, cols, dtype=dt)
        out_torch = torch.empty(rows, cols, dtype=dt)
        keep = (grad_out, w, x, out_ours)  # the closure holds the tensors: the raw pointers below must stay valid
        dy, wp, xp, cp = (t.data_ptr() for t in keep)

        def backward_ours():
            assert keep  # noqa: S101 - keeps the operands alive as long as this callable
            if mode == "kernel-dx":  # dX (m, k) = dY (m, n) W (n, k)
                _core.gemm(code, m, k, n, dy, n, 1, wp, k, 1, cp, k, 1, 0, 1, False, False)
            else:  # dW (n, k) = dYᵀ (n, m) X (m, k), dY read transposed in place
                _core.gemm(code, n, k, m, dy, 1, n, xp, k, 1, cp, k, 1, 0, 1, False, False)
            return out_ours

        def backward_torch():
            a = grad_out if mode == "kernel-dx" else grad_out.t()
            return torch.mm(a, w if mode == "kernel-dx" else x, out=out_torch)

        return backward_ours, backward_torch
    out_ours = torch.empty(m, n, dtype=dt)
    out_torch = torch.empty(m, n, dtype=dt)
    keep = (x, w, out_ours, b)  # the closure holds the tensors: the raw pointers below must stay valid
    ptrs = tuple(t.data_ptr() for t in keep)
    wt = w.t()

    def ours():
        assert keep  # noqa: S101 - keeps the operands alive as long as this callable
        _core.gemm(code, m, n, k, ptrs[0], k, 1, ptrs[1], 1, k, ptrs[2], n, 1, ptrs[3], 1, False, False)  # B = Wᵀ

    return ours, (lambda: torch.addmm(b, x, wt, out=out_torch))


def sweep(shapes, dtypes=("float32", "float64"), threads=(1, 2), mode: str = "end-to-end",
          budget: float = 0.05, progress=None) -> list[dict[str, Any]]:  # fmt: skip
    """One row per (shape, dtype, thread count): times in seconds and ``speedup`` = torch time / linneuron time."""
    import torch

    from linneuron._info import set_num_threads

    rows = []
    saved = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            set_num_threads(t)
            for dtype in dtypes:
                for m, k, n in shapes:
                    ours, theirs = pair(mode, m, k, n, dtype)
                    t_ours, t_torch = _median_pair(ours, theirs, budget)
                    rows.append({"mode": mode, "m": m, "k": k, "n": n, "dtype": dtype, "threads": t,
                                 "linneuron_s": t_ours, "torch_s": t_torch, "speedup": t_torch / t_ours})  # fmt: skip
                    if progress is not None:
                        progress(1)
    finally:
        torch.set_num_threads(saved)
        set_num_threads(None)  # follow torch again
    return rows


def rerun(row: dict[str, Any], times: int = 2, budget: float = 0.05) -> list[float]:
    """``times`` fresh speed-ups of one sweep row: its shape swept again, alone, at its dtype and thread count.

    Shared machines throw single timings off (a neighbour takes a core for a few milliseconds); the worst rows of a
    sweep are shown with these beside them, and the sweep's own figures are left as they were measured.
    """
    shape = [(row["m"], row["k"], row["n"])]
    return [sweep(shape, (row["dtype"],), (row["threads"],), row["mode"], budget)[0]["speedup"] for _ in range(times)]


def summarize(rows: list[dict[str, Any]], worst: int = 5) -> dict[str, Any]:
    """Minimum, geometric mean, count under 0.9 and the ``worst`` rows of a sweep."""
    speedups = [r["speedup"] for r in rows]
    if not speedups:
        return {"count": 0, "min": math.nan, "geomean": math.nan, "under_0_9": 0, "worst": []}
    return {
        "count": len(speedups),
        "min": min(speedups),
        "geomean": math.exp(sum(math.log(s) for s in speedups) / len(speedups)),
        "under_0_9": sum(s < 0.9 for s in speedups),
        "worst": sorted(rows, key=lambda r: r["speedup"])[:worst],
    }


def per_group_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One summary line per (dtype, thread count) of a sweep, in the order the sweep ran them."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dtype"], r["threads"]), []).append(r)
    lines = []
    for (dtype, threads), group in groups.items():
        s = summarize(group, worst=1)
        w = s["worst"][0]
        lines.append(f"  {dtype:<8} {threads}t: {s['count']} shapes, min x{s['min']:.2f} "
                     f"(M={w['m']} K={w['k']} N={w['n']}), geomean x{s['geomean']:.2f}, "
                     f"{s['under_0_9']} under 0.9")  # fmt: skip
    return lines


def plot_heatmap(rows: list[dict[str, Any]], path: str, title: str = "") -> None:
    """A heat map of the geometric-mean speed-up over log2 M (x) and log2 K·N (y) cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    mx = int(math.log2(M_MAX)) + 1
    ky = int(math.log2(KN_MAX * KN_MAX)) + 1
    logs = np.zeros((ky, mx))
    counts = np.zeros((ky, mx))
    for r in rows:
        i, j = int(math.log2(r["k"] * r["n"])), int(math.log2(r["m"]))
        logs[i, j] += math.log(r["speedup"])
        counts[i, j] += 1
    grid = np.where(counts > 0, np.exp(logs / np.maximum(counts, 1)), np.nan)
    fig, ax = plt.subplots(figsize=(8, 6))
    image = ax.imshow(grid, origin="lower", cmap="RdYlGn", norm=matplotlib.colors.LogNorm(0.25, 4.0), aspect="auto")
    ax.set_xlabel("log2 M")
    ax.set_ylabel("log2 (K·N)")
    ax.set_title(title or "linneuron speed-up (geometric mean per cell; > 1: faster than torch)")
    fig.colorbar(image, ax=ax, label="speed-up")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _format_row(r: dict[str, Any]) -> str:
    return (f"  M={r['m']:<6} K={r['k']:<5} N={r['n']:<5} {r['dtype']:<8} {r['threads']}t  "
            f"linneuron {r['linneuron_s'] * 1e6:10.1f} us  torch {r['torch_s'] * 1e6:10.1f} us  "
            f"x{r['speedup']:.2f}")  # fmt: skip


def run(args, threads: list[int], dtypes: list[str]) -> int:
    """The ``--sweep`` command: sample, time each mode, print the summary (and draw ``--plot``)."""
    modes = {"both": MODES, "backward": BACKWARD, "all": ALL_MODES}.get(args.sweep, (args.sweep,))
    kn = getattr(args, "sweep_kn", "log")
    shapes = sample_shapes(args.sweep_count, seed=args.sweep_seed, kn=kn)
    total = len(shapes) * len(dtypes) * len(threads) * len(modes)
    try:
        from tqdm import tqdm

        bar = tqdm(total=total, disable=not sys.stderr.isatty(), desc="sweep")
        progress = bar.update
    except ImportError:
        bar, progress = None, None
    all_rows = []
    for mode in modes:
        rows = sweep(shapes, dtypes, threads, mode, budget=args.sweep_budget, progress=progress)
        all_rows += rows
        s = summarize(rows)
        kn_text = "log-uniform" if kn == "log" else "uniform"
        print(f"sweep {mode}: {s['count']} timings ({len(shapes)} shapes x {dtypes} x threads {threads}, "
              f"seed {args.sweep_seed}, K and N {kn_text}): min x{s['min']:.2f}, geomean x{s['geomean']:.2f}, "
              f"{s['under_0_9']} under 0.9")  # fmt: skip
        for r in s["worst"]:
            if r["speedup"] < 0.9:  # rerun: is it the shape, or a neighbour on the machine?
                r["reruns"] = rerun(r, budget=args.sweep_budget)
            reruns = " ".join(f"x{x:.2f}" for x in r.get("reruns", []))
            print(_format_row(r) + (f"  (reran: {reruns})" if reruns else ""))
        for line in per_group_lines(rows):
            print(line)
        if args.plot:
            path = args.plot if len(modes) == 1 else args.plot.replace(".png", f"-{mode}.png")
            try:
                plot_heatmap(rows, path, f"linneuron speed-up, {mode} (> 1: faster than torch)")
                print(f"  heat map: {path}")
            except ImportError:
                print("linneuron bench: --plot needs matplotlib: pip install 'linneuron[plot]'", file=sys.stderr)
                return 1
    if bar is not None:
        bar.close()
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump({"sweep": all_rows}, f, indent=1)
    return 0
