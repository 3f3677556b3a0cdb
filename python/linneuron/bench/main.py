"""``linneuron bench``: linneuron's kernels against torch's, in one process, on this machine.

Compares linneuron.functional.linear / neuron / step and linneuron.Linear with F.linear, nn.Linear followed by
torch.heaviside, torch.heaviside and nn.Linear: forward and forward+backward, float32 and float64, on 1 and 2
threads (torch.set_num_threads and linneuron.set_num_threads set to the same count). Each case is checked for
agreement first, warmed up, then timed in interleaved repeats (linneuron, torch, torch, linneuron, ...); the
table shows medians, the speed-up (torch time / linneuron time), the rate, and the rate as a share of this
machine's measured FMA peak or memory bandwidth (small probes run at start-up). The large rows are also timed
against numpy's BLAS (OpenBLAS in numpy's wheels) at the same thread count, set with threadpoolctl
(``pip install threadpoolctl``; without it those columns are left out).

    linneuron bench                 # about a minute, with progress
    linneuron bench --quick         # a few seconds' smoke run
    linneuron bench --json out.json --plot out.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any

HELP = "time linneuron against torch (same process, interleaved medians) and print a table"

_RATE_PROBE_SECONDS = 0.15
_BANDWIDTH_BYTES = 64 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a few seconds' smoke run on small shapes")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default: 1,2)")
    parser.add_argument(
        "--dtype", choices=["float32", "float64", "bfloat16", "float16", "all"], default="all", help="dtypes to run"
    )
    parser.add_argument("--filter", default="", help="only cases whose name contains this text, e.g. 'neuron'")
    parser.add_argument("--seconds", type=float, default=None,
                        help="target wall time of the timed part (default: 50, or 4 with --quick)")  # fmt: skip
    parser.add_argument("--json", metavar="FILE", help="write the raw figures as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the speed-ups (needs matplotlib)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cpu (default) or cuda")
    sweeps = ["both", "all", "end-to-end", "kernel", "training", "backward", "kernel-dx", "kernel-dw"]
    parser.add_argument("--sweep", nargs="?", const="both", choices=sweeps,
                        help="random (M, K, N) sweep instead of the cases (see linneuron.bench.sweep)")  # fmt: skip
    parser.add_argument("--sweep-count", type=int, default=120, help="shapes in the sweep (default 120)")
    parser.add_argument("--sweep-seed", type=int, default=0, help="seed of the sweep's shapes (default 0)")
    parser.add_argument("--sweep-kn", choices=["log", "uniform"], default="log",
                        help="how the sweep draws K and N in 1..1024: log-uniform (default) or uniform")  # fmt: skip
    parser.add_argument("--sweep-budget", type=float, default=0.05, help="seconds per sweep timing (default 0.05)")
    parser.set_defaults(run=run)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _busy_warning(load: float | None, cpus: int | None) -> str | None:
    """A warning when other work competes for the CPUs: parallel timings then include waits for descheduled
    threads (both libraries suffer, but unevenly), and rates fall short of the probes."""
    if load is None or not cpus or load < 0.75 * cpus:
        return None
    return (f"warning: this machine is busy (1-minute load average {load:.1f} on {cpus} CPUs); timings are "
            "inflated and noisy, most of all at more than one thread")  # fmt: skip


def _blas_thread_limit(n: int):
    """A context manager that runs numpy's BLAS on n threads (threadpoolctl), or None without threadpoolctl.

    OPENBLAS_NUM_THREADS would only act before numpy is first imported, which has happened by now."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=n, user_api="blas")


def _numpy_blas() -> str | None:
    """numpy's BLAS as threadpoolctl names it, e.g. 'openblas 0.3.31 (Haswell kernels)'; None if unknown."""
    try:
        import numpy  # noqa: F401  (loads the BLAS so that threadpoolctl can see it)
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for lib in threadpool_info():
        if lib.get("user_api") == "blas" and "numpy" in lib.get("filepath", ""):
            arch = f" ({lib['architecture']} kernels)" if lib.get("architecture") else ""
            return f"{lib.get('internal_api')} {lib.get('version')}{arch}"
    return None


def machine_info(threads: list[int]) -> dict[str, Any]:
    """This machine and build, with the measured FMA peaks and memory bandwidth used for the % column."""
    import torch

    import linneuron
    from linneuron import _core

    info = linneuron.info()
    measured = {}
    for n in sorted(set(threads) | {1}):
        measured[n] = {
            "float32_gflops": _core.fma_peak_gflops(_core.FLOAT32, n, _RATE_PROBE_SECONDS),
            "float64_gflops": _core.fma_peak_gflops(_core.FLOAT64, n, _RATE_PROBE_SECONDS),
            "bandwidth_gbs": _core.memory_bandwidth_gbs(n, _BANDWIDTH_BYTES, 10),
            "read_bandwidth_gbs": _core.memory_read_bandwidth_gbs(n, _BANDWIDTH_BYTES, 10),
        }
    # A multi-thread probe on a busy machine rarely gets all its cores at once, so the peaks used for the
    # "% peak" column are at least n times the 1-thread FMA rate (cores share no FMA units) and at least the
    # 1-thread bandwidth. The raw measurements are kept in "measured_peaks".
    peaks = {}
    for n in threads:
        one, mine = measured[1], measured[n]
        peaks[n] = {
            "float32_gflops": max(mine["float32_gflops"], n * one["float32_gflops"]),
            "float64_gflops": max(mine["float64_gflops"], n * one["float64_gflops"]),
            "bandwidth_gbs": max(mine["bandwidth_gbs"], one["bandwidth_gbs"]),
            "read_bandwidth_gbs": max(mine["read_bandwidth_gbs"], one["read_bandwidth_gbs"]),
        }
    return {
        "numpy_blas": _numpy_blas(),
        "load_average_at_start": _load_average(),
        "cpu": _cpu_name(),
        "logical_cpus": os.cpu_count(),
        "isa": info["isa"],
        "linneuron": info["version"],
        "torch": torch.__version__,
        "torch_blas": "MKL" if torch.backends.mkl.is_available() else "other",
        "python": platform.python_version(),
        "peaks": peaks,
        "measured_peaks": measured,
    }


def _calibrate(fn, target: float) -> tuple[int, float]:
    """How many calls make one sample of about `target` seconds, and the time of one call."""
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    if one >= target:
        return 1, one
    inner = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= target / 4 or inner >= 1 << 16:
            return max(1, int(inner * target / max(elapsed, 1e-9))), elapsed / inner
        inner *= 4


def time_pair(fn_a, fn_b, budget: float, min_reps: int = 5, max_reps: int = 41,
              settle: float = 0.0) -> tuple[float, float, int]:  # fmt: skip
    """Median seconds per call of fn_a and fn_b, sampled alternately (a b b a a b ...) within about `budget` s.

    ``settle`` > 0: before each sample that follows the other function's, wait that long and make one untimed call,
    so that the other library's idle threads have stopped spinning (OpenBLAS's spin about 0.1 s after each call,
    taking the cores a threaded call of the other library needs) and this one's are awake.
    """
    sample_target = 2e-3
    inner_a, one_a = _calibrate(fn_a, sample_target)
    inner_b, one_b = _calibrate(fn_b, sample_target)
    per_rep = inner_a * one_a + inner_b * one_b
    if per_rep > 0.25:  # the slowest cases: fewer repeats keep the default run near a minute
        min_reps = 3
    reps = int(min(max_reps, max(min_reps, budget / max(per_rep, 1e-9))))
    samples_a: list[float] = []
    samples_b: list[float] = []

    last = None  # the function sampled last

    def sample(fn, inner, out):
        nonlocal last
        if settle > 0 and last is not fn:
            time.sleep(settle)
            fn()
        last = fn
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        out.append((time.perf_counter() - t0) / inner)

    for r in range(reps):
        if r % 2 == 0:
            sample(fn_a, inner_a, samples_a)
            sample(fn_b, inner_b, samples_b)
        else:
            sample(fn_b, inner_b, samples_b)
            sample(fn_a, inner_a, samples_a)
    return statistics.median(samples_a), statistics.median(samples_b), reps


def _fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:8.2f} ms"
    return f"{seconds:8.2f} s "


_HEADER = (
    f"{'shape':<18} {'op':<11} {'dtype':<8} {'thr':>3} {'linneuron':>11} {'torch':>11} {'speed-up':>8} "
    f"{'rate':>15} {'% peak':>6}  goal"
)


def format_row(row: dict[str, Any]) -> str:
    if row.get("error"):
        return f"{row['shape']:<18} {row['op']:<11} {row['dtype']:<8} {row['threads']:>3}  {row['error']}"
    goal = row["goal"]
    verdict = "" if goal is None else f">={goal:g} {'yes' if row['speedup'] >= goal else 'NO'}"
    rate = f"{row['rate']:8.1f} {row['unit']:<6}"
    pct = f"{row['percent_of_peak']:5.0f}%" if row["percent_of_peak"] is not None else "     -"
    text = (
        f"{row['shape']:<18} {row['op']:<11} {row['dtype']:<8} {row['threads']:>3} {_fmt_time(row['linneuron_s'])} "
        f"{_fmt_time(row['torch_s'])} {row['speedup']:8.2f} {rate:>15} {pct:>6}  {verdict}"
    )
    if row.get("numpy_s"):
        numpy_pct = row.get("numpy_percent_of_peak")
        numpy_pct_text = f" ({numpy_pct:.0f}% peak)" if numpy_pct is not None else ""
        # A pairing of its own (interleaved like torch's), so linneuron's time in it is shown too: on a shared
        # machine it can differ from the torch pairing's.
        text += (f"  | numpy {_fmt_time(row['numpy_s']).strip()}{numpy_pct_text} vs linneuron "
                 f"{_fmt_time(row['linneuron_s_vs_numpy']).strip()}: {row['vs_numpy']:.2f}x")  # fmt: skip
    elif row.get("numpy_note"):
        text += f"  | numpy: {row['numpy_note']}"
    return text


def run_cases(cases, threads: list[int], seconds: float, peaks: dict, progress=print) -> list[dict[str, Any]]:
    """Time every case at every thread count; returns one row per (case, thread count)."""
    import torch

    import linneuron
    from linneuron.bench.cases import check, check_numpy

    rows: list[dict[str, Any]] = []
    budget = seconds / max(1, len(cases) * len(threads))
    saved = (torch.get_num_threads(), linneuron.get_num_threads())
    total = len(cases) * len(threads)
    try:
        done = 0
        for case in cases:
            built = case.build()
            problem = check(case, built)
            numpy_problem = check_numpy(case, built) if not problem else None
            for n in threads:
                done += 1
                torch.set_num_threads(n)
                linneuron.set_num_threads(n)
                row: dict[str, Any] = {
                    "op": case.op, "shape": case.shape_text, "dtype": case.dtype_text, "threads": n,
                    "goal": case.goal,
                }  # fmt: skip
                if problem:
                    row["error"] = f"not timed: linneuron and torch disagree ({problem})"
                else:
                    t_ln, t_torch, reps = time_pair(built.linneuron, built.torch, budget)
                    rate = built.work / t_ln / 1e9
                    if built.unit == "GB/s":
                        peak = peaks[n]["read_bandwidth_gbs" if built.bandwidth == "read" else "bandwidth_gbs"]
                    else:
                        # bfloat16/float16 products run on the float32 FMAs: their % is of the float32 peak.
                        peak = peaks[n].get(f"{case.dtype_text}_gflops", peaks[n]["float32_gflops"])
                    row.update(
                        linneuron_s=t_ln, torch_s=t_torch, speedup=t_torch / t_ln, rate=rate, unit=built.unit,
                        percent_of_peak=100.0 * rate / peak if peak > 0 else None, reps=reps,
                    )  # fmt: skip
                    if built.numpy is not None:
                        row.update(_time_numpy(built, n, budget, peak, numpy_problem))
                rows.append(row)
                progress(f"[{done:>3}/{total}] {format_row(row)}")
            del built
    finally:
        torch.set_num_threads(saved[0])
        linneuron.set_num_threads(saved[1])
    return rows


def _time_numpy(built, n: int, budget: float, peak: float, problem: str | None) -> dict[str, Any]:
    """linneuron against numpy's BLAS on n threads (interleaved medians, like torch), or why it was not timed."""
    if problem:
        return {"numpy_note": f"not timed ({problem})"}
    limit = _blas_thread_limit(n)
    if limit is None:
        return {"numpy_note": "not timed (needs threadpoolctl to run numpy's BLAS on the same thread count)"}
    # Threaded OpenBLAS and linneuron each keep their idle threads spinning for a while after a call, on the cores the
    # other needs next: interleaved without a pause, each ran up to 2x slower on 2 threads (Xeon, 1024^3 float32).
    with limit:
        t_ln, t_np, _ = time_pair(built.linneuron, built.numpy, budget, settle=0.2 if n > 1 else 0.0)
    numpy_rate = built.work / t_np / 1e9
    return {"numpy_s": t_np, "vs_numpy": t_np / t_ln, "linneuron_s_vs_numpy": t_ln,
            "numpy_percent_of_peak": 100.0 * numpy_rate / peak if peak > 0 else None}  # fmt: skip


def _scaling_note(rows: list[dict[str, Any]]) -> str | None:
    """linneuron's 2-thread over 1-thread speed on the largest float32 forward case (goal >= 1.8)."""
    pick = {r["threads"]: r for r in rows if r["op"] == "linear" and r["shape"] == "2048x2048->2048"
            and r["dtype"] == "float32" and not r.get("error")}  # fmt: skip
    if 1 in pick and 2 in pick:
        ratio = pick[1]["linneuron_s"] / pick[2]["linneuron_s"]
        torch_ratio = pick[1]["torch_s"] / pick[2]["torch_s"]
        return (
            f"2 threads vs 1 on 2048x2048->2048 float32: linneuron {ratio:.2f}x, torch {torch_ratio:.2f}x "
            "(goal >= 1.8x)"
        )
    return None


def plot(rows: list[dict[str, Any]], path: str, machine: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = [r for r in rows if not r.get("error")]
    labels = sorted({f"{r['op']} {r['shape']} {r['dtype']}" for r in good}, key=lambda s: s)
    threads = sorted({r["threads"] for r in good})
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(labels) + 1.5))
    height = 0.8 / max(1, len(threads))
    for t_i, n in enumerate(threads):
        values = {f"{r['op']} {r['shape']} {r['dtype']}": r["speedup"] for r in good if r["threads"] == n}
        ys = [i + t_i * height for i in range(len(labels))]
        ax.barh(ys, [values.get(lab, 0) for lab in labels], height=height, label=f"{n} thread{'s' * (n > 1)}")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(labels))])
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("speed-up over torch (torch time / linneuron time, > 1 is faster)")
    ax.set_title(f"linneuron vs torch {machine['torch']} on {machine['cpu']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _run_cuda(args: argparse.Namespace) -> int:
    """Hands over to the GPU benchmark (linneuron.bench.cuda), or says clearly why it cannot run."""
    import importlib

    from linneuron import _cuda_loader

    try:
        bench_cuda = importlib.import_module("linneuron.bench.cuda")
    except ModuleNotFoundError as err:
        if err.name != "linneuron.bench.cuda":
            raise
        print(
            "linneuron bench --device cuda: this installation has no CUDA benchmark module "
            "(linneuron.bench.cuda); run it from a build that includes the CUDA part.",
            file=sys.stderr,
        )
        return 2
    _, reason = _cuda_loader.status()
    if reason is not None:
        print(f"linneuron bench --device cuda: no usable GPU: {reason}", file=sys.stderr)
        return 2
    return bench_cuda.run(args)


def run(args: argparse.Namespace) -> int:
    if args.device == "cuda":
        return _run_cuda(args)

    import torch

    from linneuron.bench.cases import default_cases

    try:
        threads = sorted({int(t) for t in args.threads.split(",") if t.strip()})
    except ValueError:
        print(f"linneuron bench: --threads must be comma-separated integers, got {args.threads!r}", file=sys.stderr)
        return 2
    if not threads or min(threads) < 1:
        print(f"linneuron bench: --threads must be positive, got {args.threads!r}", file=sys.stderr)
        return 2
    if getattr(args, "sweep", None):
        from linneuron.bench import sweep as _bench_sweep

        return _bench_sweep.run(args, threads, ["float32", "float64"] if args.dtype == "all" else [args.dtype])
    seconds = args.seconds if args.seconds is not None else (4.0 if args.quick else 50.0)
    cases = default_cases(quick=args.quick)
    if args.dtype != "all":
        cases = [c for c in cases if c.dtype_text == args.dtype]
    if args.filter:
        cases = [c for c in cases if args.filter in c.name]
    if not cases:
        print("linneuron bench: no case matches the filters", file=sys.stderr)
        return 2

    started = time.perf_counter()
    print("measuring this machine's FMA peak and memory bandwidth ...", file=sys.stderr, flush=True)
    machine = machine_info(threads)
    print(f"machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs; linneuron {machine['linneuron']} "
          f"({machine['isa']} kernels); torch {machine['torch']} ({machine['torch_blas']}); "
          f"numpy's BLAS {machine['numpy_blas'] or 'unknown (pip install threadpoolctl)'}")  # fmt: skip
    for n, p in machine["peaks"].items():
        print(f"  {n} thread{'s' * (n > 1)}: FMA peak {p['float32_gflops']:.0f} GFLOP/s float32, "
              f"{p['float64_gflops']:.0f} float64; memory {p['bandwidth_gbs']:.1f} GB/s copy (read + write), "
              f"{p['read_bandwidth_gbs']:.1f} GB/s read")  # fmt: skip
    busy = _busy_warning(machine["load_average_at_start"], machine["logical_cpus"])
    if busy:
        print(busy)
    print(f"{len(cases)} cases x {len(threads)} thread counts, medians of interleaved repeats "
          f"(speed-up = torch time / linneuron time)\n")  # fmt: skip
    print(_HEADER, flush=True)

    # Each finished row is printed as before; a tqdm bar over the cases (on stderr, only on a terminal) sits below.
    from tqdm import tqdm

    with tqdm(total=len(cases) * len(threads), desc="bench", unit="case", file=sys.stderr, disable=None,
              leave=False, dynamic_ncols=True) as bar:  # fmt: skip

        def progress(line: str) -> None:
            bar.write(line, file=sys.stdout)
            sys.stdout.flush()
            bar.update(1)

        with torch.inference_mode(False):
            rows = run_cases(cases, threads, seconds, machine["peaks"], progress)

    print("\n" + _HEADER)
    for row in rows:
        print(format_row(row))
    note = _scaling_note(rows)
    if note:
        print("\n" + note)
    against_numpy = [r["vs_numpy"] for r in rows if r.get("vs_numpy")]
    if against_numpy:
        geomean = math.exp(sum(math.log(v) for v in against_numpy) / len(against_numpy))
        print(f"against numpy's BLAS ({machine['numpy_blas']}), same thread counts: {len(against_numpy)} rows, "
              f"min {min(against_numpy):.2f}x, geomean {geomean:.2f}x (goal >= 1.0)")  # fmt: skip
    missed = [r for r in rows if not r.get("error") and r["goal"] is not None and r["speedup"] < r["goal"]]
    machine["load_average_at_end"] = _load_average()
    busy = _busy_warning(machine["load_average_at_end"], machine["logical_cpus"])
    if busy:
        print("\n" + busy)
    print(f"\n{len(rows) - len(missed)} of {len(rows)} rows meet their goal (or have none); "
          f"took {time.perf_counter() - started:.0f} s")  # fmt: skip

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "results": rows, "scaling": note}, f, indent=2)
        print(f"wrote {args.json}")
    if args.plot:
        try:
            plot(rows, args.plot, machine)
            print(f"wrote {args.plot}")
        except ModuleNotFoundError:
            print("linneuron bench --plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
            return 1
    return 1 if any(r.get("error") for r in rows) else 0
