"""Fuzzes linneuron's NumPy entry points (linear, neuron, step) for crashes, stray exceptions and wrong results.

Each input is a byte string decoded into one call: the op, each argument's kind (array, list, scalar, None,
string), dtype (float32/float64, byte-swapped, and unsupported ones), shape (0 to 4 dims of 0..6), layout
(axis order, steps of ±1..3, broadcast stride-0 axes, a misaligned start, read-only) and values (any float64 bit
pattern: NaN, ±Inf, ±0, subnormals; or a palette of such specials). The oracle: the call either raises TypeError
or ValueError whose message starts with "<op>():", or returns a result of the right shape and dtype that agrees
with a float64 NumPy reference (NaN where it is NaN, equal infinities, finite values within eps*sqrt(K)*|x||w|).
Anything else is a finding: a crash (the process dies, libFuzzer or the sanitizer reports it), another exception
type, or a wrong result.

Engines:
  atheris     coverage-guided libFuzzer over the Python layer (pip install atheris); the native code runs
              uninstrumented unless linneuron was built with LINNEURON_SANITIZE (see tools/sanitize.sh).
  hypothesis  the same decoder fed by hypothesis' byte strategy (no extra dependency).

  python tools/fuzz.py --engine atheris --seconds 60 [--corpus build/fuzz-corpus]
  python tools/fuzz.py --engine hypothesis --runs 20000
  python tools/fuzz.py --api torch ...   # linneuron.functional on tensors made from the same arrays
  python tools/fuzz.py --api torch-grad ...  # the same with the float tensors requiring grad, then backward

With --api torch-grad the forward is checked as above, then backward runs with a fuzzer-chosen grad_output: for
linear each gradient is itself a product (dX = dY W, dW = dYᵀ X, db = column sums of dY) and goes through the same
oracle; for neuron and step (surrogate gradients) only the gradients' shapes and dtypes are checked.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time
import zlib

import numpy as np

OPS = ("linear", "neuron", "step")
GOOD_DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]
ODD_GOOD_DTYPES = (
    [np.dtype(">f4"), np.dtype(">f8")] if sys.byteorder == "little" else [np.dtype("<f4"), np.dtype("<f8")]
)
BAD_DTYPES = [np.dtype(t) for t in (np.int32, np.int64, np.bool_, np.float16, np.complex64, np.complex128, object)]
SPECIALS = [0.0, -0.0, 1.0, -1.0, 0.5, np.nan, np.inf, -np.inf, 5e-324, -5e-324, 1e-40, -1e-40, 3e38, -3e38,
            1.7e308, -1.7e308, 2.0**-126, 1e-300]  # fmt: skip


class ByteReader:
    """Reads small integers and floats from the fuzzer's bytes; reads past the end give zeros."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk + bytes(n - len(chunk))

    def byte(self) -> int:
        return self.take(1)[0]

    def below(self, n: int) -> int:
        return self.byte() % n

    def choice(self, seq):
        return seq[self.below(len(seq))]

    def flag(self, one_in: int = 2) -> bool:
        # True one time in `one_in`; zero bytes (also those past the end) read as False: the common path.
        return self.below(one_in) == one_in - 1

    def value(self) -> float:
        if self.flag(3):
            return self.choice(SPECIALS)
        if self.flag(2):
            return (self.byte() - 128) / 16.0  # small numbers with exact sums
        return struct.unpack("<d", self.take(8))[0]  # any bit pattern


def _layout(r: ByteReader, shape: tuple[int, ...], dtype: np.dtype, values: np.ndarray):
    """An array of ``shape`` holding ``values`` in a fuzzer-chosen memory layout."""
    if dtype.kind == "O":  # object arrays hold references: no byte-level layouts
        return values.reshape(shape).astype(object)
    ndim = len(shape)
    steps = [r.choice([1, 1, 2, 3, -1, -2]) for _ in shape]
    order = list(range(ndim))
    for i in range(ndim - 1, 0, -1):  # a fuzzer-chosen permutation (Fisher-Yates)
        j = r.below(i + 1)
        order[i], order[j] = order[j], order[i]
    misalign = r.flag(4)
    stored = [max(1, (s - 1) * abs(st) + 1) for s, st in zip(shape, steps)]
    mem_shape = [stored[i] for i in order]
    count = int(np.prod(mem_shape)) if mem_shape else 1
    raw = np.zeros(count * dtype.itemsize + 1, dtype=np.uint8)
    mem = raw[1 if misalign else 0 :][: count * dtype.itemsize].view(dtype).reshape(mem_shape)
    arr = mem.transpose(np.argsort(order)) if ndim > 1 else mem
    if ndim:
        arr = arr[tuple(slice(None, None, st) for st in steps)][tuple(slice(0, s) for s in shape)]
    with np.errstate(all="ignore"):
        if values.size:
            arr[...] = values.reshape(shape).astype(dtype)
    if ndim and r.flag(5):  # broadcast the first axis from a single row: stride 0
        arr = np.broadcast_to(arr[:1], shape) if shape[0] else arr
    elif r.flag(4):
        arr.flags.writeable = False
    return arr


def _argument(r: ByteReader, shape: tuple[int, ...], dtype: np.dtype):
    """One argument: usually an array of ``shape``; sometimes a list, scalar, None, string or odd dtype."""
    kind = r.below(20)  # 0..12: an array of the expected dtype; the rest: the odd cases below
    if kind == 18:
        return None
    if kind == 19:
        return r.choice(["x", b"\x00", {"a": 1}, [[1.0], [2.0, 3.0]], object()])
    if kind == 17:
        return r.value()  # a Python float: a 0-d array
    if kind == 16:
        dtype = r.choice(BAD_DTYPES)
    elif kind in (14, 15):
        dtype = r.choice(ODD_GOOD_DTYPES)
    size = int(np.prod(shape)) if shape else 1
    palette = np.array([r.value() for _ in range(1 + r.below(8))], dtype=np.float64)
    values = np.resize(palette, size) if size else np.zeros(0)
    arr = _layout(r, shape, dtype, values)
    if kind == 13:
        return arr.tolist()
    return arr


def _shape(r: ByteReader, ndim: int) -> tuple[int, ...]:
    return tuple(r.below(7) for _ in range(ndim))


def decode(data: bytes):
    """The call the bytes describe: (op name, positional arguments)."""
    return _decode(ByteReader(data))


def _decode(r: ByteReader):
    op = r.choice(OPS)
    dtype = r.choice(GOOD_DTYPES)
    if op == "step":
        return op, [_argument(r, _shape(r, r.below(5)), dtype)]
    lead = _shape(r, r.below(4))
    k, n = r.below(7), r.below(7)
    if r.flag(6):  # a mismatch: features, output size, or ranks
        k2, n2 = r.below(7), r.below(7)
    else:
        k2, n2 = k, n
    x = _argument(r, lead + (k,), dtype if not r.flag(8) else r.choice(GOOD_DTYPES))
    w = _argument(r, (n, k2) if not r.flag(10) else _shape(r, r.below(4)), dtype)
    b = None if r.flag(3) else _argument(r, (n2,) if not r.flag(10) else _shape(r, r.below(3)), dtype)
    return op, [x, w, b]


# ---- the oracle ------------------------------------------------------------------------------------------------


class Finding(AssertionError):
    pass


def _check_linear_like(op: str, out: np.ndarray, x, w, b) -> None:
    """Checks ``out`` element by element wherever IEEE arithmetic fixes the answer whatever the summation order.

    A NaN term (NaN input, 0 * Inf) or Inf terms of both signs give NaN in any order, with or without FMA. Inf
    terms of one sign give that Inf, and finite terms a value within eps * sqrt(K) * sum|terms|, unless the finite
    terms are large enough that a partial sum may overflow: then the result depends on order and is not checked.
    """
    x64, w64 = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
    dtype = np.asarray(x).dtype.newbyteorder("=")
    if out.dtype != dtype or out.shape != x64.shape[:-1] + (w64.shape[0],):
        raise Finding(f"{op}: result {out.dtype} {out.shape} for x {x64.shape} weight {w64.shape}")
    b64 = np.zeros(w64.shape[0]) if b is None else np.asarray(b, dtype=np.float64)
    with np.errstate(all="ignore"):
        terms = x64[..., None, :] * w64  # (*, N, K)
        from_special_input = ~(np.isfinite(x64)[..., None, :] & np.isfinite(w64))
        finite_part = np.where(from_special_input, 0.0, np.abs(terms)).sum(-1) + np.where(
            np.isfinite(b64), np.abs(b64), 0.0
        )
        pos_inf = ((terms == np.inf) & from_special_input).any(-1) | (b64 == np.inf)
        neg_inf = ((terms == -np.inf) & from_special_input).any(-1) | (b64 == -np.inf)
        must_nan = np.isnan(terms).any(-1) | np.isnan(b64) | (pos_inf & neg_inf)
        may_overflow = ~(finite_part < np.finfo(dtype).max / 4)
        finite_ref = np.where(from_special_input, 0.0, terms).sum(-1) + np.where(np.isfinite(b64), b64, 0.0)
        tol = 8 * np.finfo(dtype).eps * np.sqrt(w64.shape[1] + 1) * finite_part + np.finfo(dtype).tiny
        got = out.astype(np.float64)
        checked_inf = ~must_nan & ~may_overflow & (pos_inf | neg_inf)
        checked_finite = ~must_nan & ~may_overflow & ~pos_inf & ~neg_inf
        if op == "linear":
            bad = must_nan & ~np.isnan(got)
            bad |= checked_inf & (got != np.where(pos_inf, np.inf, -np.inf))
            bad |= checked_finite & ~(np.abs(got - finite_ref) <= tol)
        else:
            bad = must_nan & ~np.isnan(got)
            bad |= checked_inf & (got != np.where(pos_inf, 1.0, 0.0))
            decided = checked_finite & (np.abs(finite_ref) > tol)
            bad |= decided & (got != (finite_ref >= 0))
            bad |= ~np.isnan(got) & (got != 0) & (got != 1)
    if bad.any():
        i = np.unravel_index(np.argmax(bad), bad.shape)
        raise Finding(f"{op}: wrong value at {i}: got {out[i]!r}, float64 reference {finite_ref[i]!r} (tol {tol[i]!r})")


API = "numpy"  # set by --api: "numpy" (linneuron.numpy), "torch" (linneuron.functional on tensors), "torch-grad"


def _to_tensor(value):
    """A numpy argument as the tensor a torch user would pass (torch needs native, writable, non-negative strides:
    other arrays are copied first); anything else unchanged."""
    import torch

    if not isinstance(value, np.ndarray) or value.dtype.kind == "O":
        return value
    if not (value.dtype.isnative and value.flags.writeable) or any(st < 0 for st in value.strides):
        value = np.array(value, dtype=value.dtype.newbyteorder("="))
    return torch.from_numpy(value)


def _known_torch_bug(args) -> str | None:
    """The torch layer's known bugs (recorded as strict xfails in tests/test_bad_input.py), so that fuzzing goes on
    past them: empty inputs with non-mergeable leading strides, and tensors over misaligned memory."""
    for a in args:
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            if a.size == 0 and a.ndim > 2:
                return "empty input with odd strides"
            if not a.flags.aligned:
                return "misaligned tensor"
    return None


def check_one(data: bytes) -> str:
    """Runs one decoded call through the oracle; returns "ok", "rejected" or "known"; raises Finding otherwise."""
    r = ByteReader(data)
    op, args = _decode(r)
    if API in ("torch", "torch-grad"):
        import linneuron.functional as fn_module
        import torch

        call_args = [_to_tensor(a) for a in args]
        if API == "torch-grad":
            call_args = [_requiring_grad(a) for a in call_args]
        errors: tuple[type[BaseException], ...] = (TypeError, ValueError, RuntimeError)
    else:
        from linneuron import numpy as fn_module

        call_args = args
        errors = (TypeError, ValueError)
    try:
        out = getattr(fn_module, op)(*call_args)
    except errors as err:
        if not str(err).startswith(f"{op}(): "):
            if API != "numpy" and _known_torch_bug(args):
                return "known"
            raise Finding(f"{op}: {type(err).__name__} without the op's name: {err}") from err
        return "rejected"
    except Exception as err:
        raise Finding(f"{op}: unexpected {type(err).__name__}: {err}") from err
    if API != "numpy":
        if not isinstance(out, torch.Tensor):
            raise Finding(f"{op}: returned {type(out).__name__}")
        result = out
        out = out.detach().numpy()
        # torch promotes nothing and accepts no numpy dtypes beyond these: compare against the numpy-side inputs
        args = [a.detach().numpy() if isinstance(a, torch.Tensor) else a for a in call_args]
    if not isinstance(out, np.ndarray):
        raise Finding(f"{op}: returned {type(out).__name__}")
    if op == "step":
        z = np.asarray(args[0])
        expected = np.heaviside(z.astype(np.float64), 1.0)
        if (
            out.shape != z.shape
            or out.dtype != z.dtype.newbyteorder("=")
            or not np.array_equal(out.astype(np.float64), expected, equal_nan=True)
        ):
            raise Finding(f"step: wrong result for z {z.dtype} {z.shape}")
    else:
        _check_linear_like(op, out, *args)
    if API == "torch-grad" and result.requires_grad:
        _check_backward(r, op, result, call_args, args)
    return "ok"


def _requiring_grad(value):
    """A floating-point tensor as a leaf that requires grad; anything else unchanged."""
    import torch

    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().requires_grad_()
    return value


def _check_backward(r: ByteReader, op: str, result, call_args, args) -> None:
    """Runs backward with a grad_output drawn from the remaining bytes and checks the gradients."""
    import torch

    if r.pos < len(r.data):
        palette = np.array([r.value() for _ in range(1 + r.below(8))], dtype=np.float64)
    else:  # the bytes are spent (often, on short inputs): small exact values seeded by them, not all zeros
        palette = np.random.default_rng(zlib.crc32(r.data)).integers(-64, 64, size=8) / 16.0
    dtype = args[0].dtype
    with np.errstate(all="ignore"):
        g = np.resize(palette, result.numel()).reshape(result.shape).astype(dtype)
    try:
        result.backward(torch.from_numpy(g))
    except Exception as err:
        raise Finding(f"{op}: backward raised {type(err).__name__}: {err}") from err
    leaves = [a for a in call_args if isinstance(a, torch.Tensor) and a.requires_grad]
    for leaf in leaves:
        if leaf.grad is None or leaf.grad.shape != leaf.shape or leaf.grad.dtype != leaf.dtype:
            got = None if leaf.grad is None else (leaf.grad.dtype, tuple(leaf.grad.shape))
            raise Finding(f"{op}: gradient {got} for an input {leaf.dtype} {tuple(leaf.shape)}")
    if op != "linear":
        return
    x, w, b = args
    n, k = w.shape
    rows = int(np.prod(x.shape[:-1]))
    g2, x2 = g.reshape(rows, n), x.reshape(rows, k)
    x_t, w_t, b_t = call_args
    try:
        _check_linear_like("linear", x_t.grad.numpy(), g, np.ascontiguousarray(w.T), None)
        _check_linear_like("linear", w_t.grad.numpy(), g2.T, x2.T, None)
        if b is not None:
            ones = np.ones((1, rows), dtype=dtype)
            _check_linear_like("linear", b_t.grad.numpy().reshape(n, 1), g2.T, ones, None)
    except Finding as finding:
        raise Finding(f"backward of {finding}") from None


# ---- engines -----------------------------------------------------------------------------------------------------


class Stats:
    def __init__(self):
        self.start = time.monotonic()
        self.counts = {"ok": 0, "rejected": 0, "known": 0}

    def record(self, outcome: str) -> None:
        self.counts[outcome] += 1
        total = sum(self.counts.values())
        if total % 20000 == 0:
            self.report()

    def report(self, final: bool = False) -> None:
        total = sum(self.counts.values())
        print(
            f"[fuzz] {'done' if final else 'progress'}: {total} executions in {time.monotonic() - self.start:.0f} s "
            f"({self.counts['ok']} computed and checked, {self.counts['rejected']} rejected with a clear error, "
            f"{self.counts['known']} hit a known torch-layer bug), 0 findings",
            flush=True,
        )


def run_atheris(args) -> int:
    import atheris
    import linneuron.numpy  # noqa: F401

    if API != "numpy":
        import linneuron.functional  # noqa: F401

    # Coverage feedback from every Python function loaded now: linneuron's layer, this decoder and oracle, and the
    # parts of numpy they call. (instrument_imports() misses linneuron under an editable install's import hook.)
    atheris.instrument_all()

    stats = Stats()

    def one_input(data: bytes) -> None:
        stats.record(check_one(data))

    libfuzzer_args = [sys.argv[0], f"-max_total_time={args.seconds}", "-print_final_stats=1"]
    if args.runs:
        libfuzzer_args.append(f"-runs={args.runs}")
    if args.corpus:
        os.makedirs(args.corpus, exist_ok=True)
        libfuzzer_args.append(args.corpus)
    atheris.Setup(libfuzzer_args, one_input)
    atheris.Fuzz()  # exits the process when done; libFuzzer prints the run count ("Done N runs in S second(s)")
    return 0


def run_hypothesis(args) -> int:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    stats = Stats()

    @settings(
        max_examples=args.runs or 20000,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=args.seed is not None,
    )
    @given(st.binary(min_size=0, max_size=400))
    def fuzz(data: bytes) -> None:
        stats.record(check_one(data))

    fuzz()
    stats.report(final=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=["atheris", "hypothesis", "auto"], default="auto")
    parser.add_argument("--seconds", type=int, default=60, help="atheris: total time")
    parser.add_argument("--runs", type=int, default=0, help="executions (hypothesis default 20000)")
    parser.add_argument("--corpus", default=None, help="atheris: corpus directory to read and grow")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis: derandomize")
    parser.add_argument(
        "--api", choices=["numpy", "torch", "torch-grad"], default="numpy", help="which entry points to fuzz"
    )
    args = parser.parse_args(argv)
    global API
    API = args.api
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    print(f"[fuzz] engine {engine}, api {API}", flush=True)
    return run_atheris(args) if engine == "atheris" else run_hypothesis(args)


if __name__ == "__main__":
    sys.exit(main())
