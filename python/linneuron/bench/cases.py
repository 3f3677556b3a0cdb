"""The comparisons of ``linneuron bench`` (and benchmarks/): each case builds a linneuron callable and its torch twin.

A case names an op, a shape and a dtype; ``Case.build()`` allocates the operands once and returns two zero-argument
callables that do the same work (same data, same dtype), the amount of work (flops or bytes), and its unit; the
large rows also get a numpy twin (numpy's BLAS, OpenBLAS in numpy's wheels). Every side is checked to agree before
anything is timed (``check``, ``check_numpy``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

# Goals from the issue, as the minimum speed-up (torch time / linneuron time) per kind of case.
GOAL_LARGE = 1.0
GOAL_SMALL = 1.5
GOAL_TUTORIAL_NO_GRAD = 1.0
GOAL_TUTORIAL_TRAIN = 0.8
GOAL_STEP = 5.0
GOAL_NEURON_SMALL_K = 1.5
GOAL_NEURON = 1.0
GOAL_F64 = 0.9
GOAL_BF16_LARGE = 1.0
GOAL_BF16_SMALL = 1.3
GOAL_FP16 = 3.0

LARGE = [(1024, 1024, 1024), (2048, 2048, 2048), (4096, 1024, 1024)]  # (batch, in_features, out_features)
LARGE_ODD = (3000, 500, 700)  # a large product whose sizes are no multiple of any tile or block
SMALL = [(1, 512, 512), (16, 256, 256), (64, 64, 64), (64, 512, 512), (65536, 2, 1), (8192, 784, 10), (8192, 64, 64)]
TUTORIAL = (3, 3, 1)
STEP_ELEMENTS = 16 * 1024 * 1024


@dataclass
class Built:
    linneuron: Callable[[], object]
    torch: Callable[[], object]
    work: float  # flops or bytes per call
    unit: str  # "GFLOP/s" or "GB/s"
    outputs: Callable[[], tuple[object, object]] = field(default=lambda: (None, None))
    # The same work done by numpy's BLAS (OpenBLAS in numpy's wheels) on the same data, for the large rows; its
    # result is compared with torch's before it is timed. None where the case has no numpy twin.
    numpy: Callable[[], object] | None = None
    # For GB/s rows, the probe their % column is of: "copy" (read + write streams, as the step) or "read" (one
    # large operand read, next to nothing written, as a matrix-vector product).
    bandwidth: str = "copy"


@dataclass
class Case:
    op: str  # linear | linear+bwd | neuron | neuron+bwd | module | module+bwd | step | step-out | linear-out
    shape: tuple[int, ...]  # (batch, in, out) or (elements,)
    dtype: torch.dtype
    goal: float | None = None
    numpy_peer: bool = False  # also time numpy's BLAS on the same work (linear and linear+bwd, float32/float64)

    @property
    def shape_text(self) -> str:
        if self.op.startswith("step"):
            n = self.shape[0]
            return f"{n // (1024 * 1024)}M" if n % (1024 * 1024) == 0 else str(n)
        b, i, o = self.shape
        return f"{b}x{i}->{o}"

    @property
    def dtype_text(self) -> str:
        return str(self.dtype).replace("torch.", "")

    @property
    def name(self) -> str:
        return f"{self.op} {self.shape_text} {self.dtype_text}"

    def build(self, seed: int = 0) -> Built:
        return _BUILDERS[self.op](self, torch.Generator().manual_seed(seed))


def _randn(gen: torch.Generator, *shape: int, dtype: torch.dtype, requires_grad: bool = False) -> torch.Tensor:
    t = torch.randn(*shape, generator=gen, dtype=dtype)
    return t.requires_grad_(requires_grad)


class _TorchAtanSpike(torch.autograd.Function):
    """What a torch user writes for a trainable threshold: heaviside forward, atan surrogate backward (alpha 2)."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return torch.heaviside(z, torch.ones((), dtype=z.dtype))

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        alpha = 2.0
        u = (math.pi / 2 * alpha) * z
        return grad * (alpha / 2) / (1 + u * u)


def _forward(case: Case, gen: torch.Generator, fused_step: bool) -> Built:
    import torch.nn.functional as F

    import linneuron.functional as LF

    batch, k, n = case.shape
    x = _randn(gen, batch, k, dtype=case.dtype)
    w = _randn(gen, n, k, dtype=case.dtype) / math.sqrt(k)
    b = _randn(gen, n, dtype=case.dtype)
    one = torch.ones((), dtype=case.dtype)
    if fused_step:

        def ln():
            return LF.neuron(x, w, b)

        def ref():
            return torch.heaviside(F.linear(x, w, b), one)
    else:

        def ln():
            return LF.linear(x, w, b)

        def ref():
            return F.linear(x, w, b)

    built = Built(ln, ref, 2.0 * batch * k * n, "GFLOP/s", lambda: (ln(), ref()))
    if case.numpy_peer and not fused_step:
        x_np, w_np, b_np = x.numpy(), w.numpy(), b.numpy()
        y_np = torch.empty(batch, n, dtype=case.dtype).numpy()

        def with_numpy():
            np.matmul(x_np, w_np.T, out=y_np)
            np.add(y_np, b_np, out=y_np)
            return torch.from_numpy(y_np)

        built.numpy = with_numpy
    return built


def _forward_bytes(case: Case, gen: torch.Generator) -> Built:
    """The forward product rated by the bytes it must move (x, W, b read, y written): for matrix-vector products,
    which are bound by memory, so the % column is of the measured read bandwidth."""
    built = _forward(case, gen, fused_step=False)
    batch, k, n = case.shape
    size = torch.empty((), dtype=case.dtype).element_size()
    built.work, built.unit = float(size * (batch * k + n * k + n + batch * n)), "GB/s"
    built.bandwidth = "read"
    return built


def _training(case: Case, gen: torch.Generator, fused_step: bool) -> Built:
    """One forward and backward pass of a layer inside a network: gradients for input, weight and bias."""
    import torch.nn.functional as F

    import linneuron.functional as LF

    batch, k, n = case.shape
    x = _randn(gen, batch, k, dtype=case.dtype, requires_grad=True)
    w = (_randn(gen, n, k, dtype=case.dtype) / math.sqrt(k)).requires_grad_(True)
    b = _randn(gen, n, dtype=case.dtype, requires_grad=True)
    grad_out = _randn(gen, batch, n, dtype=case.dtype)
    leaves = (x, w, b)

    def run(forward):
        for t in leaves:
            t.grad = None
        forward().backward(grad_out)
        return tuple(t.grad for t in leaves)

    if fused_step:

        def ln():
            return run(lambda: LF.neuron(x, w, b, surrogate="atan", alpha=2.0))

        def ref():
            return run(lambda: _TorchAtanSpike.apply(F.linear(x, w, b)))
    else:

        def ln():
            return run(lambda: LF.linear(x, w, b))

        def ref():
            return run(lambda: F.linear(x, w, b))

    built = Built(ln, ref, 6.0 * batch * k * n, "GFLOP/s", lambda: (ln(), ref()))
    if case.numpy_peer and not fused_step:
        x_np, w_np, b_np = x.detach().numpy(), w.detach().numpy(), b.detach().numpy()
        g_np = grad_out.numpy()
        y_np = torch.empty(batch, n, dtype=case.dtype).numpy()
        dx_np = torch.empty(batch, k, dtype=case.dtype).numpy()
        dw_np = torch.empty(n, k, dtype=case.dtype).numpy()

        def with_numpy():
            # The forward product (its output is what a network would keep), then both backward products and
            # the bias gradient: the same work as F.linear forward + backward.
            np.matmul(x_np, w_np.T, out=y_np)
            np.add(y_np, b_np, out=y_np)
            np.matmul(g_np, w_np, out=dx_np)
            np.matmul(g_np.T, x_np, out=dw_np)
            db = g_np.sum(axis=0)
            return tuple(torch.from_numpy(a) for a in (dx_np, dw_np, db))

        built.numpy = with_numpy
    return built


def _module(case: Case, gen: torch.Generator, train: bool) -> Built:
    """The tutorial layer as a module call: nn.Linear against linneuron.Linear sharing the same parameters."""
    import linneuron

    batch, k, n = case.shape
    ref_layer = torch.nn.Linear(k, n, dtype=case.dtype)
    ln_layer = linneuron.Linear.from_torch(ref_layer)
    x = _randn(gen, batch, k, dtype=case.dtype)
    grad_out = _randn(gen, batch, n, dtype=case.dtype)
    params = list(ref_layer.parameters())
    if train:

        def call(layer):
            for p in params:
                p.grad = None
            layer(x).backward(grad_out)
            return tuple(p.grad.clone() for p in params)
    else:

        def call(layer):
            with torch.no_grad():
                return layer(x)

    return Built(lambda: call(ln_layer), lambda: call(ref_layer), (6.0 if train else 2.0) * batch * k * n,
                 "GFLOP/s", lambda: (call(ln_layer), call(ref_layer)))  # fmt: skip


def _step(case: Case, gen: torch.Generator) -> Built:
    import linneuron.functional as LF

    (n,) = case.shape
    z = _randn(gen, n, dtype=case.dtype)
    one = torch.ones((), dtype=case.dtype)
    nbytes = 2.0 * n * z.element_size()  # read z, write H(z)
    return Built(lambda: LF.step(z), lambda: torch.heaviside(z, one), nbytes, "GB/s",
                 lambda: (LF.step(z), torch.heaviside(z, one)))  # fmt: skip


def _linear_into(case: Case, gen: torch.Generator) -> Built:
    """The GEMM kernel alone: ``_core.gemm`` (pointers prepared once) against ``torch.addmm(..., out=)``.

    Both write into an existing output, so this shows what the kernels deliver at sizes where the Python layer's
    per-call cost would otherwise decide the comparison.
    """
    from linneuron import _core

    batch, k, n = case.shape
    x = _randn(gen, batch, k, dtype=case.dtype)
    w = _randn(gen, n, k, dtype=case.dtype) / math.sqrt(k)
    b = _randn(gen, n, dtype=case.dtype)
    out_ln = torch.empty(batch, n, dtype=case.dtype)
    out_torch = torch.empty(batch, n, dtype=case.dtype)
    w_t = w.t()
    code = {torch.float32: _core.FLOAT32, torch.float64: _core.FLOAT64}[case.dtype]
    # B = Wᵀ: B(k, n) = W(n, k), so B's row stride is W's column stride and vice versa.
    args = (code, batch, n, k, x.data_ptr(), k, 1, w.data_ptr(), 1, k, out_ln.data_ptr(), n, 1, b.data_ptr(), 1)
    gemm = _core.gemm

    def ln():
        gemm(*args, False, False)
        return out_ln

    def ref():
        return torch.addmm(b, x, w_t, out=out_torch)

    return Built(ln, ref, 2.0 * batch * k * n, "GFLOP/s", lambda: (ln().clone(), ref().clone()))


def _step_into(case: Case, gen: torch.Generator) -> Built:
    """The step kernel alone, writing into an existing output (torch.heaviside(..., out=) on the torch side).

    This isolates the kernel from the allocation of a fresh output, whose first-touch page faults cost more than
    the step itself at this size, so its rate can be compared with the measured memory bandwidth.
    """
    from linneuron import _core

    (n,) = case.shape
    z = _randn(gen, n, dtype=case.dtype)
    out_ln = torch.empty_like(z)
    out_torch = torch.empty_like(z)
    one = torch.ones((), dtype=case.dtype)
    code = {torch.float32: _core.FLOAT32, torch.float64: _core.FLOAT64}[case.dtype]

    def ln():
        _core.step_forward(code, 1, n, z.data_ptr(), 0, 1, out_ln.data_ptr(), 0, 1)
        return out_ln

    def ref():
        return torch.heaviside(z, one, out=out_torch)

    return Built(ln, ref, 2.0 * n * z.element_size(), "GB/s", lambda: (ln().clone(), ref().clone()))


_BUILDERS: dict[str, Callable[[Case, torch.Generator], Built]] = {
    "linear": lambda c, g: _forward(c, g, fused_step=False),
    "linear-bw": _forward_bytes,
    "neuron": lambda c, g: _forward(c, g, fused_step=True),
    "linear+bwd": lambda c, g: _training(c, g, fused_step=False),
    "neuron+bwd": lambda c, g: _training(c, g, fused_step=True),
    "module": lambda c, g: _module(c, g, train=False),
    "module+bwd": lambda c, g: _module(c, g, train=True),
    "step": _step,
    "step-out": _step_into,
    "linear-out": _linear_into,
}


def _close(a, b, dtype: torch.dtype, k: int) -> bool:
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_close(x, y, dtype, k) for x, y in zip(a, b))
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    eps = torch.finfo(dtype).eps
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    return bool(torch.allclose(a, b, rtol=0, atol=64 * eps * math.sqrt(max(k, 1)) * scale))


def check_numpy(case: Case, built: Built) -> str | None:
    """None if the numpy twin agrees with torch on this case's data (or there is none), else what differs."""
    if built.numpy is None:
        return None
    k = case.shape[1] if len(case.shape) == 3 else 1
    return None if _close(built.numpy(), built.torch(), case.dtype, k) else "numpy and torch outputs differ"


def check(case: Case, built: Built) -> str | None:
    """None if both sides agree on this case's data, else a description of the disagreement.

    Step outputs (0/1) are compared only where z is not within rounding of 0, since the two GEMMs may round
    such a z to opposite signs.
    """
    ours, theirs = built.outputs()
    k = case.shape[1] if len(case.shape) == 3 else 1
    if case.op == "neuron":
        if ours.shape != theirs.shape:
            return f"shape {tuple(ours.shape)} vs {tuple(theirs.shape)}"
        mismatch = (ours != theirs).float().mean().item()
        return None if mismatch < 1e-3 else f"{mismatch:.2%} of the outputs differ"
    if not _close(ours, theirs, case.dtype, k):
        return "outputs differ beyond rounding"
    return None


def default_cases(quick: bool = False) -> list[Case]:
    """The cases of the default run (about a minute on two cores), or a few seconds' smoke set."""
    f32, f64 = torch.float32, torch.float64
    if quick:
        return [
            Case("linear", (256, 256, 256), f32, GOAL_LARGE),
            Case("linear", (64, 64, 64), f32, GOAL_SMALL),
            Case("neuron", (1024, 64, 64), f32, GOAL_NEURON_SMALL_K),
            Case("linear+bwd", (256, 256, 256), f32, GOAL_LARGE),
            Case("module", TUTORIAL, f32, GOAL_TUTORIAL_NO_GRAD),
            Case("module+bwd", TUTORIAL, f32, GOAL_TUTORIAL_TRAIN),
            Case("step", (1 << 20,), f32, GOAL_STEP),
            Case("linear", (256, 256, 256), f64, GOAL_F64),
        ]
    cases = [Case("linear", s, f32, GOAL_LARGE, numpy_peer=True) for s in LARGE + [LARGE_ODD]]
    cases += [Case("linear+bwd", s, f32, GOAL_LARGE, numpy_peer=True) for s in LARGE]
    cases += [Case("linear", s, f32, GOAL_SMALL) for s in SMALL]
    cases += [
        Case("module", TUTORIAL, f32, GOAL_TUTORIAL_NO_GRAD),
        Case("module+bwd", TUTORIAL, f32, GOAL_TUTORIAL_TRAIN),
    ]
    # The same small products kernel against kernel (no torch layer, outputs preallocated): not a goal row.
    cases += [Case("linear-out", s, f32, None) for s in [TUTORIAL, (1, 512, 512), (16, 256, 256), (64, 64, 64)]]
    cases += [Case("step", (STEP_ELEMENTS,), f32, GOAL_STEP), Case("step-out", (STEP_ELEMENTS,), f32, GOAL_STEP)]
    for s in [(64, 64, 64), (8192, 64, 64), (65536, 2, 1), (8192, 784, 10), (1024, 1024, 1024)]:
        cases.append(Case("neuron", s, f32, GOAL_NEURON_SMALL_K if s[1] <= 64 else GOAL_NEURON))
    cases += [Case("neuron+bwd", (8192, 64, 64), f32, None), Case("linear+bwd", (8192, 64, 64), f32, None)]
    cases += [Case("linear", s, f64, GOAL_F64, numpy_peer=True) for s in LARGE + [LARGE_ODD]]
    # The matrix-vector product, rated in GB/s against the measured read bandwidth (W: 64 MB float32, 128 MB float64).
    cases += [Case("linear-bw", MATVEC, dt, None) for dt in (f32, f64)]
    cases += [Case("linear+bwd", LARGE[0], f64, GOAL_F64, numpy_peer=True)]
    cases += low_precision_cases()
    return cases


LOWP_LARGE = [(1024, 1024, 1024), (2048, 2048, 2048)]
LOWP_SMALL = [(1, 512, 512), (16, 256, 256), (64, 64, 64), (16, 4096, 4096), (8192, 784, 10), (65536, 2, 1)]
MATVEC = (1, 4096, 4096)


def low_precision_cases() -> list[Case]:
    """bfloat16 and float16 rows (torch's float16 CPU GEMM is slow, so its goal is 3x; one large shape suffices)."""
    bf16, fp16 = torch.bfloat16, torch.float16
    cases = [Case("linear", s, bf16, GOAL_BF16_LARGE) for s in LOWP_LARGE]
    cases += [Case("linear", s, bf16, GOAL_BF16_SMALL) for s in LOWP_SMALL]
    cases += [Case("linear-bw", MATVEC, bf16, None), Case("linear+bwd", LOWP_LARGE[0], bf16, GOAL_BF16_LARGE)]
    cases += [Case("linear+bwd", (8192, 64, 64), bf16, GOAL_BF16_LARGE)]
    cases += [
        Case("linear", s, fp16, GOAL_FP16) for s in [LOWP_LARGE[0], (16, 256, 256), (64, 64, 64), (8192, 784, 10)]
    ]
    cases += [Case("linear-bw", MATVEC, fp16, None)]
    return cases
