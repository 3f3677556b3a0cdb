"""GPU benchmark: linneuron's CUDA kernels against torch (cuBLAS) in one process, for the goals of the CUDA issue.

Each case is first checked for agreement with torch, warmed up, then timed with CUDA events in interleaved
rounds (linneuron, torch, torch, linneuron, ...), several calls per sample; the table shows the medians, the ratio
torch time / linneuron time (> 1: linneuron is faster) and the goal for that row. TF32 is off for both sides.

    linneuron bench --device cuda            # about a minute
    python -m linneuron.bench.cuda --out DIR [--quick] [--filter TEXT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

_SAMPLE_SECONDS = 0.01  # target length of one timed sample (a batch of calls between two events)
_ROUNDS = 15  # interleaved samples per side (fewer with --quick)


def _events_time(fn: Callable[[], Any], calls: int) -> float:
    """Seconds per call of ``fn``, timed with CUDA events around ``calls`` back-to-back calls."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / calls


def _timed_pair(ours: Callable[[], Any], theirs: Callable[[], Any], rounds: int) -> tuple[float, float, float]:
    """(median seconds of ours, median of theirs, spread of ours as max/min - 1), interleaved."""
    for fn in (ours, theirs):  # warm-up: module load, allocator, cuBLAS handles and heuristics
        fn()
    import torch

    torch.cuda.synchronize()
    one = max(_events_time(ours, 1), _events_time(theirs, 1), 1e-6)
    calls = max(1, min(1000, int(_SAMPLE_SECONDS / one)))
    mine: list[float] = []
    other: list[float] = []
    for r in range(rounds):
        order = ((ours, mine), (theirs, other)) if r % 2 == 0 else ((theirs, other), (ours, mine))
        for fn, bucket in order:
            bucket.append(_events_time(fn, calls))
    return statistics.median(mine), statistics.median(other), max(mine) / min(mine) - 1


def _rel_err(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / max(float(b.norm()), 1e-300))


def _hbm_copy_rate(nbytes: int) -> float:
    """Bytes per second of a device-to-device copy, counting bytes read plus bytes written."""
    import torch

    src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    seconds = statistics.median(_events_time(lambda: dst.copy_(src), 5) for _ in range(5))
    return 2 * nbytes / seconds


def _cases(quick: bool) -> list[dict[str, Any]]:
    """The goal rows of the issue; shapes shrink with --quick."""
    big = 1024 if quick else 4096
    rows: list[dict[str, Any]] = []
    for dtype, goal in (("float32", 0.8), ("float16", 0.6), ("bfloat16", 0.6)):
        rows.append(dict(kind="linear", name=f"GEMM forward {big}^3", dtype=dtype, m=big, k=big, n=big, goal=goal))
        rows.append(dict(kind="linear", name=f"GEMM forward {2 * big}x{big}->{big}", dtype=dtype, m=2 * big, k=big,
                         n=big, goal=goal))  # fmt: skip
    rows.append(dict(kind="train", name=f"training step Linear({big},{big}), batch {2 * big}", dtype="float32",
                     m=2 * big, k=big, n=big, goal=0.8))  # fmt: skip
    elements = (16 if quick else 256) << 20
    rows.append(
        dict(kind="step", name=f"step on {elements >> 20}M elements", dtype="float32", numel=elements, goal=1.0)
    )
    rows_neuron = 16384 if quick else 65536
    for k, dtype in ((32, "float32"), (256, "float32"), (256, "float16")):
        rows.append(dict(kind="neuron", name=f"fused neuron K={k} vs linear+heaviside", dtype=dtype, m=rows_neuron,
                         k=k, n=1024, goal=1.2))  # fmt: skip
    for m in (1, 8, 64):
        rows.append(dict(kind="linear", name=f"small batch M={m}, {big}->{big}", dtype="float32", m=m, k=big, n=big,
                         goal=1.0))  # fmt: skip
    return rows


def _run_case(case: dict[str, Any], rounds: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as TF

    import linneuron
    import linneuron.functional as LF

    dtype = getattr(torch, case["dtype"])
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    torch.manual_seed(0)
    out: dict[str, Any] = dict(case)
    if case["kind"] in ("linear", "neuron"):
        m, k, n = case["m"], case["k"], case["n"]
        x = torch.randn(m, k, device="cuda", dtype=dtype)
        w = torch.randn(n, k, device="cuda", dtype=dtype) / k**0.5
        b = torch.randn(n, device="cuda", dtype=dtype)
        if case["kind"] == "linear":
            ours, theirs = (lambda: LF.linear(x, w, b)), (lambda: TF.linear(x, w, b))
            out["check"] = _rel_err(ours(), theirs()) <= tol
        else:
            one = torch.ones((), device="cuda", dtype=dtype)
            ours, theirs = (lambda: LF.neuron(x, w, b)), (lambda: torch.heaviside(TF.linear(x, w, b), one))
            z = TF.linear(x.double(), w.double(), b.double())
            flips = (ours().double() != (z >= 0).double()) & (z.abs() > 1e-2)
            out["check"] = not bool(flips.any())
        flops = 2.0 * m * n * k
    elif case["kind"] == "train":
        m, k, n = case["m"], case["k"], case["n"]
        x = torch.randn(m, k, device="cuda", dtype=dtype, requires_grad=True)
        gy = torch.randn(m, n, device="cuda", dtype=dtype)
        ref_layer = torch.nn.Linear(k, n, device="cuda", dtype=dtype)
        our_layer = linneuron.Linear.from_torch(ref_layer)

        def step_fn(layer):
            def run():
                x.grad = None
                layer.weight.grad = layer.bias.grad = None
                layer(x).backward(gy)

            return run

        ours, theirs = step_fn(our_layer), step_fn(ref_layer)
        ours()
        mine = [t.grad.clone() for t in (x, our_layer.weight, our_layer.bias)]
        theirs()
        ref = [t.grad for t in (x, ref_layer.weight, ref_layer.bias)]
        out["check"] = all(_rel_err(a, r) <= tol for a, r in zip(mine, ref))
        flops = 3 * 2.0 * m * n * k
    else:  # step
        z = torch.randn(case["numel"], device="cuda", dtype=dtype)
        one = torch.ones((), device="cuda", dtype=dtype)
        ours, theirs = (lambda: LF.step(z)), (lambda: torch.heaviside(z, one))
        out["check"] = bool(torch.equal(ours(), theirs()))
        flops = 0.0
    t_ours, t_torch, spread = _timed_pair(ours, theirs, rounds)
    out.update(ours_ms=t_ours * 1e3, torch_ms=t_torch * 1e3, ratio=t_torch / t_ours, spread=spread)
    if flops:
        out["ours_tflops"] = flops / t_ours / 1e12
        out["torch_tflops"] = flops / t_torch / 1e12
    if case["kind"] == "step":
        out["ours_gbs"] = 2 * z.numel() * z.element_size() / t_ours / 1e9
    out["met"] = bool(out["check"] and out["ratio"] >= case["goal"])
    return out


def benchmark(quick: bool = False, name_filter: str = "", dtype_filter: str = "all") -> dict[str, Any]:
    import torch

    import linneuron

    info = linneuron.info()
    if not info["cuda_available"]:
        raise RuntimeError(f"linneuron's CUDA kernels are unavailable: {info['cuda_reason']}")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    props = torch.cuda.get_device_properties(0)
    copy_rate = _hbm_copy_rate((256 if quick else 2048) << 20)
    machine = dict(gpu=props.name, sms=props.multi_processor_count, torch=torch.__version__,
                   torch_cuda=torch.version.cuda, linneuron=info["version"], cuda_archs=info["cuda_archs"],
                   hbm_copy_gbs=copy_rate / 1e9)  # fmt: skip
    rounds = 5 if quick else _ROUNDS
    results = []
    for case in _cases(quick):
        if name_filter and name_filter not in case["name"]:
            continue
        if dtype_filter not in ("all", case["dtype"]):
            continue
        try:
            row = _run_case(case, rounds)
        except Exception as err:  # report the failure in the table and go on with the other rows
            row = dict(case, error=f"{type(err).__name__}: {err}", met=False)
        if "ours_gbs" in row:
            row["hbm_share"] = row["ours_gbs"] * 1e9 / copy_rate
            row["met"] = bool(row["met"] and row["hbm_share"] >= 0.8)
        results.append(row)
        print(_format_row(row), flush=True)
        torch.cuda.empty_cache()
    return dict(machine=machine, results=results, when=time.strftime("%Y-%m-%d %H:%M:%S"))


_HEADER = f"{'case':<46} {'dtype':<9} {'linneuron':>10} {'torch':>10} {'ratio':>6} {'goal':>5} {'met':>4}  detail"


def _format_row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['name']:<46} {r['dtype']:<9} ERROR {r['error']}"
    if "ours_tflops" in r:
        detail = f"{r['ours_tflops']:.1f} vs {r['torch_tflops']:.1f} TFLOP/s"
    else:
        detail = f"{r['ours_gbs']:.0f} GB/s = {100 * r['hbm_share']:.0f}% of copy rate"
    detail += f", spread {100 * r['spread']:.0f}%" + ("" if r["check"] else ", RESULTS DIFFER")
    return (f"{r['name']:<46} {r['dtype']:<9} {r['ours_ms']:>8.3f}ms {r['torch_ms']:>8.3f}ms {r['ratio']:>6.2f} "
            f"{r['goal']:>5.1f} {'yes' if r['met'] else 'NO':>4}  {detail}")  # fmt: skip


def _markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"GPU: {m['gpu']} ({m['sms']} SMs), torch {m['torch']} (CUDA {m['torch_cuda']}), linneuron "
             f"{m['linneuron']} built for {m['cuda_archs']}; device-to-device copy {m['hbm_copy_gbs']:.0f} GB/s; "
             f"TF32 off; medians of interleaved CUDA-event samples; ratio = torch time / linneuron time.", "",
             "| case | dtype | linneuron ms | torch ms | ratio | goal | met | detail |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['dtype']} | error | | | {r['goal']} | no | {r['error']} |")
            continue
        detail = _format_row(r).split("  ")[-1]
        lines.append(f"| {r['name']} | {r['dtype']} | {r['ours_ms']:.3f} | {r['torch_ms']:.3f} | {r['ratio']:.2f} | "
                     f"{r['goal']} | {'yes' if r['met'] else 'no'} | {detail} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """Entry point of ``linneuron bench --device cuda`` (and of ``python -m linneuron.bench.cuda``)."""
    try:
        import torch
    except ImportError:
        print("linneuron bench --device cuda needs torch", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("linneuron bench --device cuda: torch sees no CUDA device", file=sys.stderr)
        return 2
    dtype_filter = getattr(args, "dtype", "all") or "all"
    if dtype_filter == "float64":
        print("linneuron bench --device cuda: the CUDA goals have no float64 rows; use --dtype float32 or all")
        return 2
    print(_HEADER, flush=True)
    try:
        report = benchmark(bool(getattr(args, "quick", False)), getattr(args, "filter", "") or "", dtype_filter)
    except RuntimeError as err:
        print(f"linneuron bench --device cuda: {err}", file=sys.stderr)
        return 2
    print()
    print(_markdown(report))
    paths = []
    if getattr(args, "json", None):
        paths.append(args.json)
    out_dir = getattr(args, "out", None)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        paths.append(os.path.join(out_dir, "bench_cuda.json"))
        with open(os.path.join(out_dir, "bench_cuda.md"), "w") as f:
            f.write(_markdown(report))
    for path in paths:
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if all("error" not in r and r["check"] for r in report["results"]) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linneuron.bench.cuda", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--out", metavar="DIR", help="write bench_cuda.json and bench_cuda.md here")
    parser.add_argument("--quick", action="store_true", help="small shapes and few rounds (seconds)")
    parser.add_argument("--filter", default="", help="only cases whose name contains this text")
    parser.add_argument("--json", metavar="FILE", help="also write the raw figures here")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
