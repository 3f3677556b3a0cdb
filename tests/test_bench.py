"""``linneuron bench``: the command runs end to end, checks agreement before timing, and reports what it measured."""

from __future__ import annotations

import json
import time

import pytest

torch = pytest.importorskip("torch")

from linneuron import cli  # noqa: E402
from linneuron.bench import time_pair  # noqa: E402
from linneuron.bench.cases import Built, Case, check, default_cases  # noqa: E402


def test_quick_run_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = cli.main(["bench", "--quick", "--threads", "1", "--filter", "256x256", "--seconds", "0.5",
                     "--json", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "speed-up" in printed and "256x256->256" in printed
    data = json.loads(out.read_text())
    assert data["machine"]["isa"] in ("avx512", "avx2", "portable")
    assert data["machine"]["peaks"]["1"]["float32_gflops"] > 0
    rows = data["results"]
    assert {r["op"] for r in rows} == {"linear", "linear+bwd"}
    for row in rows:
        assert row["linneuron_s"] > 0 and row["torch_s"] > 0
        assert row["speedup"] == pytest.approx(row["torch_s"] / row["linneuron_s"])


def test_every_default_case_agrees_with_torch_on_a_small_twin():
    """Each builder (op kind) on a small shape: linneuron and torch must agree before anything is timed."""
    seen = set()
    for case in default_cases() + default_cases(quick=True):
        if case.op in seen:
            continue
        seen.add(case.op)
        shape = (1 << 12,) if case.op.startswith("step") else (37, 19, 5)
        small = Case(case.op, shape, case.dtype, case.goal)
        assert check(small, small.build()) is None, small.name


def test_check_reports_a_disagreement():
    case = Case("linear", (8, 4, 3), torch.float32)
    good = case.build()
    wrong = Built(good.linneuron, good.torch, good.work, good.unit, lambda: (good.linneuron() + 1, good.torch()))
    assert check(case, wrong) is not None


def test_time_pair_interleaves_and_returns_medians():
    calls = []
    a_s, b_s, reps = time_pair(lambda: calls.append("a"), lambda: calls.append("b"), budget=0.01, min_reps=3)
    assert a_s > 0 and b_s > 0 and reps >= 3
    assert "a" in calls and "b" in calls


def test_time_pair_settles_before_switching_sides():
    """With ``settle``, the timed calls of one function start at least that long after the other's last call."""
    calls = []
    record = {side: (lambda side=side: calls.append((side, time.perf_counter()))) for side in "ab"}
    _, _, reps = time_pair(record["a"], record["b"], budget=0.01, min_reps=3, settle=0.02)
    switches = [t1 - t0 for (s0, t0), (s1, t1) in zip(calls, calls[1:]) if s0 != s1]
    # calibration (a then b, no pause), then a pause before the first sample and at each switch of side in the
    # repeats (a b | b a | a b ...: one a repeat)
    assert [gap >= 0.02 for gap in switches] == [False] + [True] * (reps + 1), (reps, switches)


def test_cuda_device_without_gpu_module_exits_cleanly(capsys):
    from linneuron import _cuda_loader

    _, reason = _cuda_loader.status()
    if reason is None:
        pytest.skip("a usable GPU is present; the GPU benchmark itself is tested with the CUDA module")
    assert cli.main(["bench", "--device", "cuda"]) == 2
    assert "linneuron bench --device cuda" in capsys.readouterr().err


def test_large_rows_are_timed_against_numpy_at_the_same_thread_count():
    """A case with a numpy twin: the twin agrees with torch, and the row carries numpy's time (or says why not)."""
    from linneuron.bench import run_cases
    from linneuron.bench.cases import check_numpy

    peaks = {1: {"float32_gflops": 100.0, "float64_gflops": 50.0, "bandwidth_gbs": 10.0}}
    for op in ("linear", "linear+bwd"):
        case = Case(op, (33, 17, 9), torch.float32, 1.0, numpy_peer=True)
        built = case.build()
        assert built.numpy is not None and check_numpy(case, built) is None
        (row,) = run_cases([case], [1], 0.05, peaks, progress=lambda line: None)
        pytest.importorskip("threadpoolctl")
        assert row["numpy_s"] > 0 and row["vs_numpy"] == pytest.approx(row["numpy_s"] / row["linneuron_s_vs_numpy"])


def test_bandwidth_rows_are_rated_against_the_probe_of_their_traffic():
    """A matrix-vector row (reads W, writes a few outputs) is a % of the read probe; a step row of the copy probe."""
    from linneuron.bench import run_cases

    peaks = {1: {"float32_gflops": 100.0, "float64_gflops": 50.0, "bandwidth_gbs": 10.0, "read_bandwidth_gbs": 40.0}}
    matvec = Case("linear-bw", (1, 64, 32), torch.float32)
    step = Case("step", (4096,), torch.float32)
    assert matvec.build().bandwidth == "read" and step.build().bandwidth == "copy"
    rows = run_cases([matvec, step], [1], 0.05, peaks, progress=lambda line: None)
    for row, peak in zip(rows, (40.0, 10.0)):
        assert row["unit"] == "GB/s"
        assert row["percent_of_peak"] == pytest.approx(100.0 * row["rate"] / peak)
