"""linneuron.Linear / Neuron / Step / swap_linear as drop-ins: parameters, state_dict, repr, parity with nn.Linear,
torch.compile(fullgraph=True) of a model made of them, and torch.export."""

from __future__ import annotations

import copy
import io

import linneuron
import pytest
import torch
from torch import nn

# torch 2.4's export warns at pre-dispatch tracing about every op outside aten/prim, torch.library.custom_op ones
# included. Later torch (2.9, 2.13 checked) warns only for ops with a CompositeImplicitAutograd kernel, which
# linneuron's have not, in other words ("we assume"): this filter matches 2.4's blanket notice only.
_TORCH24_EXPORT_NOTICE = "ignore:At pre-dispatch tracing, we will assume:UserWarning"


def _roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [None, torch.float64])
def test_same_seed_same_parameters_keys_and_repr(bias, dtype):
    torch.manual_seed(7)
    ours = linneuron.Linear(5, 3, bias=bias, dtype=dtype)
    torch.manual_seed(7)
    theirs = nn.Linear(5, 3, bias=bias, dtype=dtype)
    assert isinstance(ours, nn.Linear)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (name, p), (name_ref, p_ref) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert name == name_ref and torch.equal(p, p_ref) and p.dtype == p_ref.dtype
    torch.manual_seed(3)
    ours.reset_parameters()
    torch.manual_seed(3)
    theirs.reset_parameters()
    assert torch.equal(ours.weight, theirs.weight)


def test_state_dict_round_trips_both_ways():
    torch.manual_seed(0)
    ours, theirs = linneuron.Linear(4, 2), nn.Linear(4, 2)
    theirs.load_state_dict(_roundtrip(ours.state_dict()))
    assert torch.equal(theirs.weight, ours.weight) and torch.equal(theirs.bias, ours.bias)
    torch.manual_seed(1)
    source = nn.Linear(4, 2)
    ours.load_state_dict(_roundtrip(source.state_dict()))
    x = torch.randn(3, 4)
    torch.testing.assert_close(ours(x), source(x))
    # A whole model saved with nn.Linear loads into its swapped copy.
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1))
    swapped = linneuron.swap_linear(copy.deepcopy(model))
    swapped.load_state_dict(_roundtrip(model.state_dict()))
    torch.testing.assert_close(swapped(x), model(x))


@pytest.mark.parametrize("shape", [(4,), (0, 4), (3, 4), (2, 5, 4)])
def test_forward_and_gradients_match_nn_linear(shape):
    torch.manual_seed(0)
    theirs = nn.Linear(4, 3, dtype=torch.float64)
    ours = linneuron.Linear.from_torch(copy.deepcopy(theirs))
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    out, ref = ours(x), theirs(x)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    gy = torch.randn_like(ref)
    grads = torch.autograd.grad(out, (x, ours.weight, ours.bias), gy)
    ref_grads = torch.autograd.grad(ref, (x, theirs.weight, theirs.bias), gy)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_from_torch_shares_parameters():
    source = nn.Linear(3, 2)
    layer = linneuron.Linear.from_torch(source)
    assert layer.weight is source.weight and layer.bias is source.bias
    with torch.no_grad():
        source.weight.add_(1.0)
    assert torch.equal(layer.weight, source.weight)
    no_bias = linneuron.Linear.from_torch(nn.Linear(3, 2, bias=False))
    assert no_bias.bias is None and no_bias(torch.ones(1, 3)).shape == (1, 2)
    with pytest.raises(TypeError, match="expected a torch.nn.Linear"):
        linneuron.Linear.from_torch(nn.ReLU())


def test_swap_linear_replaces_every_plain_linear():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Sequential(nn.Tanh(), nn.Linear(5, 4)), nn.Linear(4, 1))
    model.train(False)
    x = torch.randn(7, 3)
    ref = model(x)
    params = list(model.parameters())
    out_model = linneuron.swap_linear(model)
    assert out_model is model
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 3 and all(type(m) is linneuron.Linear for m in linears)
    assert all(a is b for a, b in zip(model.parameters(), params))
    assert not model[0].training
    torch.testing.assert_close(model(x), ref)
    assert type(linneuron.swap_linear(nn.Linear(2, 2))) is linneuron.Linear


def test_neuron_layer_parameters_threshold_and_repr():
    torch.manual_seed(5)
    neuron = linneuron.Neuron(3, 2)
    torch.manual_seed(5)
    reference = nn.Linear(3, 2)
    assert torch.equal(neuron.weight, reference.weight) and torch.equal(neuron.bias, reference.bias)
    assert list(neuron.state_dict()) == ["weight", "bias"]
    neuron.load_state_dict(_roundtrip(reference.state_dict()))
    assert torch.equal(neuron.threshold, -reference.bias.detach())
    neuron.threshold = torch.tensor([0.5, -1.0])
    assert torch.equal(neuron.bias.detach(), torch.tensor([-0.5, 1.0]))
    assert "surrogate='atan', alpha=2.0" in repr(neuron)
    x = torch.randn(6, 3)
    assert torch.equal(neuron(x), (reference(x) - reference.bias + neuron.bias >= 0).float())
    without = linneuron.Neuron(3, 2, bias=False, surrogate="ste")
    assert torch.equal(without.threshold, torch.zeros(2))
    with pytest.raises(ValueError, match="no bias"):
        without.threshold = 1.0
    assert without.alpha == 1.0 and without.surrogate == "ste"


@pytest.mark.parametrize("model", [3, "model", None, torch.ones(2)], ids=["int", "str", "None", "tensor"])
def test_swap_linear_rejects_a_non_module(model):
    expected = r"swap_linear\(\): model must be a torch\.nn\.Module, got " + type(model).__name__
    with pytest.raises(TypeError, match=expected):
        linneuron.swap_linear(model)


def test_neuron_threshold_shape_is_checked():
    layer = linneuron.Neuron(3, 2)
    before = layer.bias.detach().clone()
    for bad in (torch.zeros(3), torch.zeros(2, 1), torch.zeros(1, 2), [1.0, 2.0, 3.0]):
        with pytest.raises(ValueError, match=r"Neuron\.threshold: expected a scalar or shape \(2,\)"):
            layer.threshold = bad
        assert torch.equal(layer.bias.detach(), before)  # a refused value changes nothing
    layer.threshold = 0.25  # a scalar, a one-element vector and one θ per output are all accepted
    assert torch.equal(layer.threshold, torch.full((2,), 0.25))
    layer.threshold = torch.tensor([1.5])
    assert torch.equal(layer.threshold, torch.full((2,), 1.5))
    layer.threshold = [0.5, -1.0]
    assert torch.equal(layer.bias.detach(), torch.tensor([-0.5, 1.0]))


def test_step_module():
    layer = linneuron.Step("sigmoid")
    assert layer.alpha == 4.0 and "sigmoid" in repr(layer)
    z = torch.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    out = layer(z)
    assert out.tolist() == [0.0, 1.0, 1.0]
    out.sum().backward()
    s = torch.sigmoid(4.0 * z.detach())
    torch.testing.assert_close(z.grad, 4.0 * s * (1 - s))
    with pytest.raises(ValueError):
        linneuron.Step("tanh")


def _small_model():
    torch.manual_seed(0)
    return nn.Sequential(
        linneuron.Linear(3, 8), nn.ReLU(), linneuron.Neuron(8, 6, surrogate="sigmoid"), linneuron.Linear(6, 2)
    )


@pytest.mark.parametrize(
    "backend",
    [
        "aot_eager",
        # Inductor generates and compiles C++ (about 30 s on a cold cache, 5 s warm), hence "slow". Inductor in
        # torch 2.13 itself touches the deprecated torch.jit.script_method while compiling (not our code).
        pytest.param(
            "inductor",
            marks=[
                pytest.mark.slow,
                pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
            ],
        ),
    ],
)
def test_compiled_model_matches_eager(backend):
    model = _small_model()
    x = torch.randn(10, 3)
    ref = model(x)
    ref.square().sum().backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    try:
        out = compiled(x)
        out.square().sum().backward()
    finally:
        # torch 2.4's inductor compiles its C++ with -ffast-math; linked by GCC < 13, that brings crtfastmath.o,
        # whose constructor turns on flush-to-zero and denormals-are-zero in this thread when the compiled kernel is
        # loaded (pytorch/pytorch#126848, #135758; later torch passes -ffast-math's parts instead, 2.9 and 2.13
        # checked). It is not linneuron's doing and would flush every later computation here, NumPy's too: undo it.
        torch.set_flush_denormal(False)
    torch.testing.assert_close(out, ref)
    for p, g in zip(model.parameters(), ref_grads):
        torch.testing.assert_close(p.grad, g)


@pytest.mark.filterwarnings(_TORCH24_EXPORT_NOTICE)
def test_export_model_with_dynamic_batch():
    model = _small_model()
    batch = torch.export.Dim("batch")
    with torch.no_grad():
        program = torch.export.export(model, (torch.randn(4, 3),), dynamic_shapes=({0: batch},))
    for rows in (1, 4, 9):
        x = torch.randn(rows, 3)
        torch.testing.assert_close(program.module()(x), model(x).detach())


def _moved_weight(kind: str):
    """A way of taking ``weight`` out of ``_parameters`` (or swapping it there), and what it is then."""
    import torch.nn.utils.parametrize as parametrize
    from torch.nn.utils import prune

    class Doubled(nn.Module):
        def forward(self, w):
            return 2 * w

    def apply(layer):
        if kind == "parametrize":
            parametrize.register_parametrization(layer, "weight", Doubled())
        elif kind == "prune":
            prune.l1_unstructured(layer, "weight", amount=0.5)
        elif kind == "weight_norm":
            torch.nn.utils.parametrizations.weight_norm(layer)
        elif kind == "plain-tensor":  # a plain tensor in place of the Parameter (weight_norm's old style)
            del layer.weight
            layer.weight = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
        return layer

    return apply


@pytest.mark.parametrize("kind", ["parametrize", "prune", "weight_norm", "plain-tensor"])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_reads_weight_wherever_it_lives(kind, bias):
    # Linear/Neuron.forward read the parameters from _parameters where both are registered there; every way torch
    # moves ``weight`` elsewhere must still be seen.
    torch.manual_seed(0)
    theirs = _moved_weight(kind)(nn.Linear(4, 3, bias=bias))
    ours = _moved_weight(kind)(linneuron.Linear(4, 3, bias=bias))
    with torch.no_grad():
        ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 4)
    assert "weight" not in ours._parameters
    torch.testing.assert_close(ours(x), theirs(x))
    assert torch.equal(ours(x), linneuron.functional.linear(x, ours.weight, ours.bias))
    neuron = _moved_weight(kind)(linneuron.Neuron(4, 3, bias=bias))
    assert torch.equal(neuron(x), linneuron.functional.neuron(x, neuron.weight, neuron.bias))


def test_forward_sees_functional_call_and_swapped_parameters():
    layer = linneuron.Linear(4, 3)
    x = torch.randn(5, 4)
    w, b = torch.randn(3, 4), torch.randn(3)
    got = torch.func.functional_call(layer, {"weight": w, "bias": b}, (x,))
    assert torch.equal(got, linneuron.functional.linear(x, w, b))
    layer.weight = nn.Parameter(w.clone())
    layer.bias = None  # a registered parameter set to None: no bias
    assert torch.equal(layer(x), linneuron.functional.linear(x, w))
    torch.testing.assert_close(layer(x), x @ w.t())
