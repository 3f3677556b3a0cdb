"""linneuron bench --sweep (linneuron.bench.sweep): the sample, the summary and both modes on a tiny run."""

from __future__ import annotations

import math

import pytest
from linneuron.bench import sweep as S


def test_sample_is_fixed_by_seed_and_in_range():
    a = S.sample_shapes(200, seed=3)
    assert a == S.sample_shapes(200, seed=3) and a != S.sample_shapes(200, seed=4)
    assert all(1 <= m <= 65536 and 1 <= k <= 1024 and 1 <= n <= 1024 for m, k, n in a)
    assert max(m for m, _, _ in a) > 4096 and min(m for m, _, _ in a) < 16  # log-uniform covers the range


def test_uniform_k_and_n_are_drawn_uniformly():
    a = S.sample_shapes(400, seed=3, kn="uniform")
    assert a == S.sample_shapes(400, seed=3, kn="uniform") and a != S.sample_shapes(400, seed=3)
    ks = [k for _, k, _ in a] + [n for _, _, n in a]
    assert all(1 <= v <= 1024 for v in ks)
    assert 0.4 < sum(v > 512 for v in ks) / len(ks) < 0.6  # half above the middle (log-uniform: about a tenth)
    assert max(m for m, _, _ in a) > 4096 and min(m for m, _, _ in a) < 16  # M stays log-uniform
    with pytest.raises(ValueError, match="kn"):
        S.sample_shapes(1, kn="normal")


def test_summary_figures():
    rows = [{"speedup": s} for s in (0.5, 2.0, 1.0, 0.8)]
    s = S.summarize(rows, worst=2)
    assert s["count"] == 4 and s["min"] == 0.5 and s["under_0_9"] == 2
    assert math.isclose(s["geomean"], (0.5 * 2.0 * 1.0 * 0.8) ** 0.25)
    assert [r["speedup"] for r in s["worst"]] == [0.5, 0.8]


def test_per_group_lines_one_per_dtype_and_thread_count():
    rows = [
        {"dtype": d, "threads": t, "m": m, "k": 2, "n": 3, "speedup": sp}
        for d, t, m, sp in [("float32", 1, 4, 0.5), ("float32", 1, 5, 2.0), ("float64", 2, 6, 1.0)]
    ]
    lines = S.per_group_lines(rows)
    assert len(lines) == 2
    assert "float32  1t: 2 shapes, min x0.50 (M=4 K=2 N=3), geomean x1.00, 1 under 0.9" in lines[0]
    assert "float64  2t: 1 shapes, min x1.00" in lines[1]


@pytest.mark.parametrize("mode", S.ALL_MODES)
def test_every_mode_computes_what_torch_computes(mode):
    import torch

    ours, theirs = S.pair(mode, 5, 7, 3, "float64")
    if mode == "end-to-end":
        torch.testing.assert_close(ours(), theirs())
    if mode == S.TRAINING:  # the gradients of input, weight and bias
        for got, want in zip(ours(), theirs(), strict=True):
            torch.testing.assert_close(got, want)
    if mode in S.BACKWARD:  # dX (5, 7) or dW (3, 7), linneuron's kernel against torch.mm
        got, want = ours().clone(), theirs()
        assert got.shape == ((5, 7) if mode == "kernel-dx" else (3, 7))
        torch.testing.assert_close(got, want)
    rows = S.sweep([(5, 7, 3), (2, 1, 9)], dtypes=("float32",), threads=(1,), mode=mode, budget=0.001)
    assert len(rows) == 2 and all(r["speedup"] > 0 and r["mode"] == mode for r in rows)
    with pytest.raises(ValueError, match="mode"):
        S.pair("nope", 1, 1, 1, "float32")


def test_rerun_times_the_row_again_at_its_thread_count():
    import torch

    row = S.sweep([(6, 5, 4)], dtypes=("float64",), threads=(1,), mode="kernel", budget=0.001)[0]
    before = torch.get_num_threads()
    again = S.rerun(row, times=3, budget=0.001)
    assert len(again) == 3 and all(x > 0 for x in again)
    assert torch.get_num_threads() == before  # restored
