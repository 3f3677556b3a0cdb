"""pytest-benchmark versions of ``linneuron bench``: each case timed for linneuron and for torch, grouped by case.

Run: ``pytest benchmarks/ --benchmark-group-by=group --benchmark-columns=median,iqr,rounds`` (add
``--benchmark-json FILE`` to keep the figures). ``LINNEURON_BENCH_FULL=1`` runs the full case list of
``linneuron bench``; by default the quick set runs. Nothing here asserts a time: each test first checks that both
sides compute the same result, then records the timing.
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

import linneuron  # noqa: E402
from linneuron.bench.cases import check, default_cases  # noqa: E402

CASES = default_cases(quick=os.environ.get("LINNEURON_BENCH_FULL") != "1")
THREADS = [int(t) for t in os.environ.get("LINNEURON_BENCH_THREADS", "1,2").split(",")]


@pytest.fixture(scope="module")
def built_cases():
    """Operands are built once per case and shared by the linneuron and torch tests of that case."""
    cache = {}

    def get(case):
        if case.name not in cache:
            built = case.build()
            problem = check(case, built)
            assert problem is None, f"{case.name}: linneuron and torch disagree ({problem})"
            cache[case.name] = built
        return cache[case.name]

    return get


@pytest.fixture(params=THREADS, ids=lambda n: f"{n}thr")
def threads(request):
    saved = (torch.get_num_threads(), linneuron.get_num_threads())
    torch.set_num_threads(request.param)
    linneuron.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(saved[0])
    linneuron.set_num_threads(saved[1])


@pytest.mark.parametrize("side", ["linneuron", "torch"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name.replace(" ", "-"))
def test_speed(benchmark, built_cases, threads, case, side):
    built = built_cases(case)
    benchmark.group = f"{case.name} {threads}thr"
    benchmark.extra_info.update(work=built.work, unit=built.unit, threads=threads, side=side)
    result = benchmark(getattr(built, side))
    assert result is not None
