"""The compiled eager fast path (src/cpp/fastpath.cpp): bit-identical to the general path, falls back for every
unusual case, and holds under 16 threads at once."""

from __future__ import annotations

import threading

import linneuron.functional as LF
import numpy as np
import pytest
import torch
from linneuron import _core, _fastpath
from torch.utils._python_dispatch import TorchDispatchMode

pytestmark = pytest.mark.skipif(not _fastpath.ENABLED, reason="fast path not enabled on this torch")

# Tensor readers of the compiled side: torch's DLPack exchange table (where this torch has one) and the C-level
# attributes (older torch versions). Every test below that takes `reader` runs on each.
READERS = ["attributes"] + (["dlpack"] if _fastpath._dlpack_api() is not None else [])
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


@pytest.fixture(params=READERS)
def reader(request):
    _fastpath.reinit(use_dlpack=request.param == "dlpack")
    assert _fastpath.reader() == request.param
    yield request.param
    _fastpath.reinit(use_dlpack=True)


def _operands(dtype=torch.float32, m=5, k=7, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(m, k, generator=g, dtype=dtype),
        torch.randn(n, k, generator=g, dtype=dtype),
        torch.randn(n, generator=g, dtype=dtype),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 3, 1), (1, 3, 7), (8, 16, 16), (33, 65, 17)])
def test_fast_equals_general_bitwise(dtype, shape, reader):
    x, w, b = _operands(dtype, *shape)
    fast = _core.fast_linear(x, w, b, False)
    assert fast is not None  # the plain case is taken
    assert torch.equal(fast, LF._linear_general(x, w, b))
    low = dtype in (torch.bfloat16, torch.float16)
    ref = torch.nn.functional.linear(x.double(), w.double(), b.double()).to(dtype) if low else None
    torch.testing.assert_close(fast, ref if low else torch.nn.functional.linear(x, w, b))
    assert torch.equal(_core.fast_linear(x, w, None, True), LF._neuron_general(x, w, None, 3, 2.0))
    assert torch.equal(_core.fast_step(x, 3, 2.0), LF._step_general(x, 3, 2.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_strided_and_nd_inputs_bitwise(dtype, reader):
    x, w, b = _operands(dtype, m=12, k=6, n=4)
    taken = (x.t().contiguous().t(), x[::2], x.reshape(3, 4, 6), x.reshape(2, 6, 6).transpose(0, 1)[:, :1])
    for xin in (*taken, x.reshape(3, 4, 6).transpose(0, 1)):  # the last: no single row stride, falls back
        for win in (w, w.t().contiguous().t()):
            fast = _core.fast_linear(xin, win, b, False)
            assert (fast is not None) == any(xin is t for t in taken)
            assert torch.equal(LF.linear(xin, win, b), LF._linear_general(xin, win, b))
    # parameters (nn.Parameter) are read like tensors; an expanded bias has stride 0
    wp, bp = torch.nn.Parameter(w), torch.nn.Parameter(b[:1].expand(4))
    with torch.no_grad():
        fast = _core.fast_linear(x, wp, bp, False)
        assert fast is not None and torch.equal(fast, LF._linear_general(x, wp, bp))


class _Sub(torch.Tensor):
    pass


class _Mode(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _fallback_cases():
    x, w, b = _operands()
    cases = {
        "subclass input": (x.as_subclass(_Sub), w, b),
        "subclass weight": (x, w.as_subclass(_Sub), b),
        "negative bit": (x, torch._neg_view(w), b),
        "negative bit bias": (x, w, torch._neg_view(b)),
        "conj of complex": (x.to(torch.complex64).conj(), w.to(torch.complex64), None),
        "misaligned": (None, w, b),  # made by _misaligned_f32 in the test
        "sparse input": (x.to_sparse(), w, b),
        "complex dtype": (x.to(torch.complex64), w.to(torch.complex64), None),
        "int dtype": (x.int(), w.int(), b.int()),
        "mixed low precision": (x.half(), w.bfloat16(), b.half()),
        "mixed dtype": (x, w.double(), b),
        "empty rows": (x[:0], w, b),
        "empty features": (x[:, :0], w[:, :0], b),
        "zero tensor": (torch._efficientzerotensor(x.shape), w, b),
        "uncollapsible rows": (torch.randn(4, 6, 7).transpose(0, 1)[:, ::2], w, b),
        "bias wrong shape": (x, w, torch.randn(4)),
        "weight 1-D": (x, w[0], None),
        "not a tensor": (x.tolist(), w, b),
        "meta device": (x.to("meta"), w.to("meta"), b.to("meta")),
        "mkldnn input": (x.to_mkldnn(), w, b),
        "0-d input": (torch.tensor(1.0), w[:, :1], b),
        "17 dims": (x.reshape(*([1] * 15), 5, 7), w, b),  # more dims than the compiled side holds
    }
    return cases


def _misaligned_f32(m, k):
    """A float32 tensor at an address 2 bytes off its element size (torch.from_numpy of an offset numpy view)."""
    raw = np.zeros(m * k * 4 + 2, np.uint8)
    arr = raw[2:].view(np.float32).reshape(m, k)
    arr[...] = np.arange(m * k, dtype=np.float32).reshape(m, k) / 7
    return torch.from_numpy(arr)


@pytest.mark.parametrize("name", list(_fallback_cases()))
def test_fallback_conditions(name, reader):
    x, w, b = _fallback_cases()[name]
    if name == "misaligned":
        x = _misaligned_f32(5, 7)
        assert x.data_ptr() % 4
    assert _core.fast_linear(x, w, b, False) is None  # falls back: the general path decides
    try:
        want = LF._linear_general(x, w, b)
    except (TypeError, ValueError, RuntimeError) as error:  # the general path's error is the public one
        with pytest.raises(type(error)) as got:
            LF.linear(x, w, b)
        assert str(got.value) == str(error)
        return
    got = LF.linear(x, w, b)
    if want.is_meta:  # no values to compare
        assert got.is_meta and got.shape == want.shape and got.dtype == want.dtype
    elif want.is_mkldnn:
        assert torch.equal(got.to_dense(), want.to_dense())
    else:
        assert torch.equal(got, want)


def test_fallback_under_dispatch_mode_function_mode_functorch_forward_ad(reader):
    x, w, b = _operands()
    with _Mode():
        assert _core.fast_linear(x, w, b, False) is None
        assert _core.fast_step(x, 3, 2.0) is None
    with torch.overrides.TorchFunctionMode():
        assert _core.fast_linear(x, w, b, False) is None
    seen = []
    torch.func.vmap(lambda xi: seen.append(_core.fast_linear(xi, w, b, False)) or xi)(x)
    assert seen == [None]
    import torch.autograd.forward_ad as fwad

    with fwad.dual_level():
        assert _core.fast_linear(x, w, b, False) is None
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fx = mode.from_tensor(x)
        assert _core.fast_linear(fx, mode.from_tensor(w), None, False) is None


def test_fallback_under_cpu_autocast_keeps_the_autocast_dtype():
    x, w, b = _operands()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _core.fast_linear(x, w, b, False) is None
        got, want = LF.linear(x, w, b), torch.nn.functional.linear(x, w, b)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, atol=0.05, rtol=0.02)
    assert _core.fast_linear(x, w, b, False) is not None  # and the fast path is back once autocast ends


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_grad_mode_bitwise_and_saved_only_what_is_needed(dtype, reader):
    x, w, b = _operands(dtype)
    for req in [(True, True, True), (False, True, True), (True, False, False), (False, False, True)]:
        ins = [t.clone().requires_grad_(r) for t, r in zip((x, w, b), req)]
        ref = [t.clone().requires_grad_(r) for t, r in zip((x, w, b), req)]
        y = LF.linear(*ins)
        assert type(y.grad_fn).__name__ == "_FastLinearBackward"
        saved_x, saved_w = y.grad_fn.saved_tensors  # X only for dW, W only for dX
        assert (saved_x is None) != req[1] and (saved_w is None) != req[0]
        y_ref = LF._LinearFunction.apply(*ref)
        assert torch.equal(y, y_ref)
        g = torch.randn_like(y)
        y.backward(g)
        y_ref.backward(g)
        for a, r in zip(ins, ref):
            assert (a.grad is None) == (r.grad is None)
            if a.grad is not None:
                assert torch.equal(a.grad, r.grad)
    if dtype != torch.float64:
        return
    # gradcheck through the fast path, twice differentiable (create_graph falls back to the formulas)
    xs = x[:3, :4].clone().requires_grad_()
    ws = w[:2, :4].clone().requires_grad_()
    assert torch.autograd.gradcheck(LF.linear, (xs, ws))
    assert torch.autograd.gradgradcheck(LF.linear, (xs, ws))


def test_zero_dim_step_falls_back():
    z = torch.tensor(-0.5)
    assert _core.fast_step(z, 3, 2.0) is None
    assert _core.fast_step_backward(z, z, 3, 2.0) is None
    out = LF.step(z)
    assert out.shape == () and out.item() == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_step_grad_bitwise(dtype, reader):
    z = torch.randn(6, 5, dtype=torch.float64).to(dtype)
    a, r = z.clone().requires_grad_(), z.clone().requires_grad_()
    y = LF.step(a, "sigmoid", 3.0)
    assert type(y.grad_fn).__name__ == "_FastStepBackward"
    y_ref = LF._StepFunction.apply(r, 2, 3.0)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    assert torch.equal(y, y_ref) and torch.equal(a.grad, r.grad)
    with torch.no_grad():  # in grad mode (double backward) it falls back to the differentiable formula
        assert torch.equal(_core.fast_step_backward(g, z, 2, 3.0), LF._kernels.step_backward(g, z, 2, 3.0))
    assert _core.fast_step_backward(g, z, 2, 3.0) is None


def test_sixteen_threads_at_once(reader):
    x, w, b = _operands(m=64, k=48, n=40)
    want = LF._linear_general(x, w, b)
    barrier = threading.Barrier(16)
    errors = []

    def work():
        try:
            barrier.wait()
            for _ in range(200):
                out = LF.linear(x, w, b)
                if not torch.equal(out, want):
                    errors.append("mismatch")
                    return
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(error))

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_in_place_change_after_forward_is_caught_as_by_torch(reader):
    # The operands are saved through ctx.to_save, so autograd's version counters still guard them.
    x, w, b = (t.clone().requires_grad_() for t in _operands(torch.float64))
    for fn in (LF.linear, torch.nn.functional.linear):
        y = fn(x, w, b)
        with torch.no_grad():
            w.add_(1.0)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()


def test_appliers_need_the_fast_path_to_record():
    x, w, b = _operands()
    with pytest.raises(RuntimeError, match="nothing to record"):
        _core.fast_take()
    with pytest.raises(RuntimeError, match="nothing to record"):
        LF._FastLinear.apply(x.requires_grad_(), w, b)
    y = LF.linear(x, w, b)  # and the path still records afterwards
    assert type(y.grad_fn).__name__ == "_FastLinearBackward"


def test_inference_mode_and_module_forward_take_the_fast_path(reader):
    import linneuron

    x, w, b = _operands()
    with torch.inference_mode():
        got, want = LF.linear(x, w, b), torch.nn.functional.linear(x, w, b)
        assert got.is_inference() == want.is_inference()
    layer = linneuron.Linear(7, 3)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            y = layer(x)
            assert torch.equal(y, LF._linear_general(x, layer.weight, layer.bias))
            assert (type(y.grad_fn).__name__ == "_FastLinearBackward") == grad


def test_sixteen_threads_recording_at_once(reader):
    # Each thread's recording hands its result to forward through a thread-local slot.
    x, w, b = _operands(m=6, k=5, n=4)
    ref = [t.clone().requires_grad_() for t in (x, w, b)]
    LF._LinearFunction.apply(*ref).backward(torch.ones(6, 4))
    barrier = threading.Barrier(16)
    errors = []

    def work(seed):
        try:
            barrier.wait()
            for _ in range(50):
                ins = [t.clone().requires_grad_() for t in (x, w, b)]
                y = LF.linear(*ins)
                y.backward(torch.ones_like(y))
                if not all(torch.equal(a.grad, r.grad) for a, r in zip(ins, ref)):
                    errors.append("mismatch")
                    return
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(error))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_init_rejects_a_configuration_it_cannot_use_and_keeps_the_old_one():
    descriptors, parameter_same = _fastpath._descriptors()
    assert parameter_same  # nn.Parameter resolves torch.Tensor's C attributes (else Parameters would fall back)
    bad = dict(descriptors, is_neg=lambda t: False)  # a Python function: not a C method
    with pytest.raises(TypeError, match="is_neg"):
        _core.fastpath_init({"tensor_type": torch.Tensor, "parameter_type": None, "descriptors": bad,
                             **{k: None for k in ("dtypes", "grad_enabled", "dispatch_stack_len", "function_mode_on",
                                                  "functorch_peek", "forward_ad", "compiler", "linear_apply",
                                                  "step_apply", "autocast_enabled", "dlpack_api")}})  # fmt: skip
    x, w, b = _operands()
    assert torch.equal(_core.fast_linear(x, w, b, False), LF._linear_general(x, w, b))


def test_saved_tensor_hooks_see_what_the_general_path_saves():
    x, w, b = (t.clone().requires_grad_() for t in _operands(torch.float64))
    packed = {"fast": 0, "general": 0}
    for name, fn in (("fast", LF.linear), ("general", LF._LinearFunction.apply)):

        def pack(t, name=name):
            packed[name] += 1
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = fn(x, w, b)
        y.sum().backward()
    assert packed["fast"] == packed["general"] == 2


@pytest.mark.parametrize("surrogate", ["atan", "sigmoid", None])
def test_neuron_training_on_the_fast_path_bitwise(surrogate, reader):
    x, w, b = _operands(torch.float64)
    ins = [t.clone().requires_grad_() for t in (x, w, b)]
    ref = [t.clone().requires_grad_() for t in (x, w, b)]
    code, alpha = LF._resolve(surrogate, None, "neuron")
    y = LF.neuron(*ins, surrogate=surrogate)
    y_ref = LF._neuron_general(*ref, code, alpha)
    if surrogate is not None:
        assert type(y.grad_fn).__name__ == "_FastStepBackward"
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    assert torch.equal(y, y_ref)
    for a, r in zip(ins, ref):
        assert torch.equal(a.grad, r.grad)


# The forwards of the grad-mode appliers: the C ones from _core (setting ctx.to_save through torch's C property, or
# by name where that property is not found) and the Python ones (torch versions whose save_for_backward does more
# than assign ctx.to_save). Each must record the same graph.
FORWARDS = ["c", "c-by-name", "python"]


@pytest.fixture(params=FORWARDS)
def forwards(request, monkeypatch):
    if request.param == "python":
        monkeypatch.setattr(LF._FastLinear, "forward", staticmethod(LF._py_linear_forward))
        monkeypatch.setattr(LF._FastStep, "forward", staticmethod(LF._py_step_forward))
    elif not LF._C_FORWARDS:
        pytest.skip("this torch's save_for_backward does more than assign ctx.to_save: Python forwards only")
    elif request.param == "c-by-name":
        monkeypatch.setattr(_fastpath, "_to_save_property", lambda *classes: None)
        _fastpath.reinit(use_dlpack=True)
    yield request.param
    _fastpath.reinit(use_dlpack=True)


def test_c_forwards_are_the_ones_used_where_saving_is_assigning_to_save():
    assert LF._C_FORWARDS == (_fastpath.save_is_to_save() and hasattr(_core, "fast_linear_forward"))
    if not LF._C_FORWARDS:
        pytest.skip("this torch's save_for_backward does more than assign ctx.to_save")
    assert LF._FastLinear.forward is _core.fast_linear_forward
    assert LF._FastStep.forward is _core.fast_step_forward
    prop = _fastpath._to_save_property(LF._FastLinear, LF._FastStep)
    assert prop is torch._C._FunctionBase.__dict__["to_save"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_forward_records_gradients_of_f_linear(dtype, forwards):
    x, w, b = _operands(dtype)
    for req in [(True, True, True), (False, True, False), (True, False, True)]:
        ins = [t.clone().requires_grad_(r) for t, r in zip((x, w, b), req)]
        ref = [t.clone().requires_grad_(r) for t, r in zip((x, w, b), req)]
        gen = [t.clone().requires_grad_(r) for t, r in zip((x, w, b), req)]
        y = LF.linear(*ins)
        assert type(y.grad_fn).__name__ == "_FastLinearBackward"
        saved_x, saved_w = y.grad_fn.saved_tensors
        assert (saved_x is None) != req[1] and (saved_w is None) != req[0]
        y_gen = LF._LinearFunction.apply(*gen)
        y_ref = torch.nn.functional.linear(*ref)
        g = torch.randn_like(y)
        for out in (y, y_gen, y_ref):
            out.backward(g)
        assert torch.equal(y, y_gen)
        torch.testing.assert_close(y, y_ref)
        for a, r, q in zip(ins, ref, gen):
            assert (a.grad is None) == (r.grad is None) == (q.grad is None)
            if a.grad is not None:
                assert torch.equal(a.grad, q.grad)  # bit for bit as the general path
                torch.testing.assert_close(a.grad, r.grad)


def test_every_forward_keeps_the_in_place_check_and_double_backward(forwards):
    x, w, b = (t.clone().requires_grad_() for t in _operands(torch.float64))
    for modified in (x, w):
        y = LF.linear(x, w, b)
        with torch.no_grad():
            modified.mul_(1.0)  # bumps the version counter
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()
    xs, ws = x[:3, :4].detach().requires_grad_(), w[:2, :4].detach().requires_grad_()
    assert torch.autograd.gradgradcheck(LF.linear, (xs, ws))


def test_every_forward_records_step_with_its_surrogate(forwards):
    z = torch.randn(6, 5, dtype=torch.float64)
    a, r = z.clone().requires_grad_(), z.clone().requires_grad_()
    y = LF.step(a, "sigmoid", 3.0)
    assert type(y.grad_fn).__name__ == "_FastStepBackward"
    assert (y.grad_fn.surrogate, y.grad_fn.alpha) == (2, 3.0)
    y_ref = LF._StepFunction.apply(r, 2, 3.0)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    assert torch.equal(y, y_ref) and torch.equal(a.grad, r.grad)


def test_c_forwards_refuse_calls_the_fast_path_did_not_prepare():
    if not hasattr(_core, "fast_linear_forward"):
        pytest.skip("no C forwards in this build")
    with pytest.raises(TypeError, match="expected 4 arguments"):
        _core.fast_linear_forward(None, None)
    with pytest.raises(RuntimeError, match="nothing to record"):
        _core.fast_step_forward(None, None, 0, 1.0)
