"""The _cuda module without a GPU: it imports, says why it cannot run, rejects bad arguments, matches the _core ABI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from linneuron import _build_config, _cuda_loader

pytestmark = pytest.mark.skipif(not _build_config.CUDA_BUILT, reason="linneuron was built without CUDA")

OPS = ("gemm", "step_forward", "step_backward", "bias_grad")


@pytest.fixture(scope="module")
def cuda():
    import linneuron._cuda as module

    return module


def _arg_names(fn) -> list[str]:
    """Parameter names from a pybind11 signature line, e.g. 'gemm(dtype: int, m: int, ...) -> None'."""
    first = fn.__doc__.splitlines()[0]
    inside = first[first.index("(") + 1 : first.rindex(")")]
    return re.findall(r"(\w+):", inside)


def test_module_exposes_the_abi(cuda):
    from linneuron import _core

    assert (cuda.FLOAT32, cuda.FLOAT64, cuda.FLOAT16, cuda.BFLOAT16) == (0, 1, 2, 3)
    assert (cuda.FLOAT32, cuda.FLOAT64) == (_core.FLOAT32, _core.FLOAT64)
    for op in OPS:
        # Same arguments as the CPU module, in the same order, plus the device index and the stream.
        assert _arg_names(getattr(cuda, op)) == _arg_names(getattr(_core, op)) + ["device", "stream"], op
    assert re.fullmatch(r"\d+\.\d+", cuda.runtime_version())


def test_availability_error_and_device_count_agree(cuda):
    reason = cuda.availability_error()
    assert isinstance(reason, str)
    assert (reason == "") == (cuda.device_count() > 0)
    if reason:
        # The reason names the CUDA error it came from, e.g. cudaErrorInsufficientDriver without a driver.
        assert re.search(r"\(cudaError\w+\)$", reason) or reason == "no CUDA device found", reason


def test_info_reports_the_build_and_the_reason(cuda):
    import linneuron

    info = linneuron.info()
    assert info["cuda_built"] is True
    assert info["cuda_archs"] == _build_config.CUDA_ARCHS
    assert "native" not in info["cuda_archs"]
    reason = cuda.availability_error()
    assert info["cuda_available"] is (reason == "")
    assert info["cuda_reason"] == (reason or None)
    assert info["cuda_devices"] == (cuda.device_count() if not reason else 0)


def test_import_needs_no_gpu_or_torch():
    # A fresh interpreter: the module must load with the statically linked runtime, whatever the machine has.
    code = (
        "import sys, linneuron, linneuron._cuda as c; r = c.availability_error(); "
        "assert 'torch' not in sys.modules; print(repr(r)); print(linneuron.info()['cuda_reason'])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    reason_repr, info_reason = done.stdout.splitlines()
    assert info_reason == (eval(reason_repr) or "None")


def test_bad_arguments_are_rejected_before_touching_a_device(cuda):
    # These checks run before any CUDA call, so they hold on machines without a GPU too (no memory is touched:
    # each call fails on its arguments first).
    gemm_args = dict(m=2, n=3, k=4, a=16, a_rs=4, a_cs=1, b=16, b_rs=1, b_cs=4, c=16, c_rs=3, c_cs=1, bias=0,
                     bias_stride=1, accumulate=False, step=False, device=0, stream=0)  # fmt: skip
    with pytest.raises(ValueError, match="dtype"):
        cuda.gemm(7, *gemm_args.values())
    with pytest.raises(ValueError, match="negative size"):
        cuda.gemm(0, *{**gemm_args, "m": -1}.values())
    with pytest.raises(ValueError, match="null output"):
        cuda.gemm(0, *{**gemm_args, "c": 0}.values())
    with pytest.raises(ValueError, match="null operand"):
        cuda.gemm(0, *{**gemm_args, "a": 0}.values())
    with pytest.raises(ValueError, match="negative size"):
        cuda.step_forward(0, -1, 2, 16, 2, 1, 16, 2, 1, 0, 0)
    with pytest.raises(ValueError, match="null pointer"):
        cuda.step_forward(0, 1, 2, 0, 2, 1, 16, 2, 1, 0, 0)
    with pytest.raises(ValueError, match="surrogate"):
        cuda.step_backward(0, 1, 2, 16, 2, 1, 16, 2, 1, 16, 2, 1, 9, 1.0, 0, 0)
    with pytest.raises(ValueError, match="null pointer"):
        cuda.bias_grad(0, 2, 3, 0, 3, 1, 16, 1, False, 0, 0)


def test_empty_calls_return_without_touching_a_device(cuda):
    # Nothing to compute: no device is selected, so these succeed even without a driver (and with null pointers).
    assert cuda.gemm(0, 0, 3, 4, 0, 4, 1, 0, 1, 4, 0, 3, 1, 0, 1, False, False, 0, 0) is None
    assert cuda.gemm(1, 5, 0, 4, 0, 4, 1, 0, 1, 4, 0, 3, 1, 0, 1, False, False, 0, 0) is None
    assert cuda.step_forward(2, 0, 5, 0, 5, 1, 0, 5, 1, 0, 0) is None
    assert cuda.step_backward(3, 4, 0, 0, 0, 1, 0, 0, 1, 0, 0, 1, 3, 2.0, 0, 0) is None
    assert cuda.bias_grad(0, 5, 0, 0, 0, 1, 0, 1, False, 0, 0) is None


def test_kernel_call_without_a_device_raises_runtime_error(cuda):
    if not cuda.availability_error():
        pytest.skip("a CUDA device is present: real launches are tested in test_cuda.py")
    # Selecting the device fails first (no driver or no device), so the fake pointers are never used.
    with pytest.raises(RuntimeError, match=r"linneuron\._cuda\.gemm: cannot select CUDA device 0: .*cudaError"):
        cuda.gemm(0, 2, 3, 4, 16, 4, 1, 16, 1, 4, 16, 3, 1, 0, 1, False, False, 0, 0)
    with pytest.raises(RuntimeError, match=r"linneuron\._cuda\.step_forward: cannot select CUDA device"):
        cuda.step_forward(0, 1, 2, 16, 2, 1, 16, 2, 1, 0, 0)
    with pytest.raises(ValueError, match="negative device"):
        cuda.bias_grad(0, 2, 3, 16, 3, 1, 16, 1, False, -1, 0)


def test_cuda_tensor_gets_the_reason():
    torch = pytest.importorskip("torch")
    _, reason = _cuda_loader.status()
    if reason is None:
        pytest.skip("linneuron's CUDA kernels are available here: CUDA tensors are tested in test_cuda.py")
    try:
        x = torch.ones(2, 3, device="cuda")
    except (RuntimeError, AssertionError) as err:
        pytest.skip(f"torch cannot make a CUDA tensor here: {err}")
    import linneuron.functional as LF

    with pytest.raises(RuntimeError, match=re.escape(reason)):
        LF.linear(x, torch.ones(4, 3, device="cuda"))


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("LINNEURON_CUDA_EMULATION") != "1", reason="opt-in: LINNEURON_CUDA_EMULATION=1")
def test_kernels_in_host_emulation():
    # The CUDA kernels compiled for the host (one thread per CUDA thread, barriers for __syncthreads) against a
    # float64 reference: indexing, bounds, staging and split-K logic, without a GPU. About a minute on 2 cores.
    script = Path(__file__).resolve().parents[1] / "src" / "cuda" / "emulation" / "run.sh"
    if not shutil.which(os.environ.get("CXX", "g++")):
        pytest.skip("no C++ compiler")
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert " 0 failures;" in done.stdout.splitlines()[-1]
