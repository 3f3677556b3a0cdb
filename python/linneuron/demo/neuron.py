"""Demo sections 1-3: one neuron with a threshold and a bias, the tensor form, the layer form."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .checks import DEFAULT_SEED, Check, _check, _keeps_global_rng

# --------------------------------------------------------------------------------------------------------------
# Section 1: one neuron, a threshold, and the bias


@dataclass(frozen=True)
class OneNeuron:
    """A neuron with three inputs, weights w and threshold theta, run on all eight 0/1 input patterns."""

    weights: np.ndarray  # (3,)
    theta: float
    bias: float  # b = -theta
    inputs: np.ndarray  # (8, 3), one pattern per row
    weighted_sum: np.ndarray  # (8,) w . x, by linneuron.numpy.linear
    fires_threshold: np.ndarray  # (8,) H(w . x - theta), by linneuron.numpy.step
    z: np.ndarray  # (8,) w . x + b, by linneuron.numpy.linear with a bias
    fires_bias: np.ndarray  # (8,) H(w . x + b), by the fused kernel linneuron.numpy.neuron
    fires_bias_input: np.ndarray  # (8,) the bias as a weight on a constant input x0 = 1
    checks: tuple[Check, ...]


def one_neuron(weights: Sequence[float] = (0.5, 0.25, 0.75), theta: float = 1.0) -> OneNeuron:
    """Section 1. The weights and threshold default to powers of two so every sum is exact and one pattern
    lands exactly on the threshold (where the step fires: H(0) = 1)."""
    import torch

    from .. import numpy as lnp

    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (3,):
        raise ValueError(f"one_neuron(): weights must be three numbers, got shape {w.shape}")
    inputs = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], dtype=np.float64)
    bias = -float(theta)

    weighted_sum = lnp.linear(inputs, w[None, :])[:, 0]
    fires_threshold = lnp.step(weighted_sum - theta)
    z = lnp.linear(inputs, w[None, :], np.array([bias]))[:, 0]
    fires_bias = lnp.neuron(inputs, w[None, :], np.array([bias]))[:, 0]
    with_x0 = np.hstack([np.ones((8, 1)), inputs])
    fires_bias_input = lnp.neuron(with_x0, np.concatenate([[bias], w])[None, :])[:, 0]

    tx, tw = torch.from_numpy(inputs), torch.from_numpy(w)
    one = torch.ones((), dtype=torch.float64)
    torch_sum = torch.mv(tx, tw)
    checks = (
        _check("weighted sum: linneuron.numpy.linear == torch.mv", weighted_sum, torch_sum),
        _check(
            "fires: linneuron.numpy.step(sum - theta) == torch.heaviside(sum - theta, 1)",
            fires_threshold,
            torch.heaviside(torch_sum - theta, one),
        ),
        # Exact for the default (dyadic) weights; other weights may round differently where the kernel adds b.
        _check(
            "z = sum + b: linneuron.numpy.linear(x, w, b) == torch.mv + b",
            z,
            torch_sum + bias,
            1e-12 * (1.0 + float(np.abs(w).sum()) + abs(bias)),
        ),
        _check(
            "fires: fused linneuron.numpy.neuron(x, w, b) == torch.heaviside(z, 1)",
            fires_bias,
            torch.heaviside(torch_sum + bias, one),
        ),
        _check("threshold form == bias form, for every pattern", fires_bias, fires_threshold),
        _check("bias as the weight of an input x0 = 1 == bias form", fires_bias_input, fires_bias),
    )
    return OneNeuron(
        w, float(theta), bias, inputs, weighted_sum, fires_threshold, z, fires_bias, fires_bias_input, checks
    )


# --------------------------------------------------------------------------------------------------------------
# Section 2: the tensor form


@dataclass(frozen=True)
class TensorForm:
    """The tutorial's data set: three samples (x0 = 1, x1, x2) and the weights that reproduce z exactly."""

    x: np.ndarray  # (3, 3) float32, first column x0 = 1
    w: np.ndarray  # (3,) float32, w0 plays the bias
    z: np.ndarray  # (3,) the targets
    zhat: np.ndarray  # (3,) linneuron.functional.linear(X, w)
    zhat_torch_mv: np.ndarray  # (3,) torch.mv(X, w)
    zhat_bias_form: np.ndarray  # (3,) linneuron.functional.linear(X[:, 1:], w[1:], bias=w[0])
    checks: tuple[Check, ...]


def tensor_form() -> TensorForm:
    """Section 2: ``zhat = X w`` for the whole data set at once, as ``torch.mv`` computes it."""
    import torch

    from .. import functional as lnf

    x = torch.tensor([[1, 0, 0], [1, 0, 1], [1, 1, 0]], dtype=torch.float32)
    z = torch.tensor([-0.1, 0.1, 0.1])
    w = torch.tensor([-0.1, 0.2, 0.2])
    zhat = lnf.linear(x, w.unsqueeze(0))[:, 0]
    zhat_mv = torch.mv(x, w)
    # The column of ones times w0 is exactly a bias: drop the column and pass w0 as the bias instead.
    # x[:, 1:] is a strided view (row stride 3); the kernels read it without a copy.
    zhat_bias = lnf.linear(x[:, 1:], w[1:].unsqueeze(0), w[:1])[:, 0]
    checks = (
        _check("zhat: linneuron.functional.linear == torch.mv (bit for bit)", zhat, zhat_mv),
        _check("zhat == the targets z = [-0.1, 0.1, 0.1] (float32, bit for bit)", zhat, z),
        _check("x0 = 1 column with weight w0 == bias b = w0 on the other columns", zhat_bias, zhat),
    )
    return TensorForm(x.numpy(), w.numpy(), z.numpy(), zhat.numpy(), zhat_mv.numpy(), zhat_bias.numpy(), checks)


# --------------------------------------------------------------------------------------------------------------
# Section 3: the layer form


@dataclass(frozen=True)
class LayerForm:
    """``linneuron.Linear(2, 1)`` and ``torch.nn.Linear(2, 1)`` built under the same seed, applied to X."""

    seed: int
    x: np.ndarray  # (3, 2)
    weight: np.ndarray  # (1, 2), as linneuron.Linear initialised it
    bias: np.ndarray  # (1,)
    zhat: np.ndarray  # (3, 1), linneuron.Linear(X)
    zhat_torch: np.ndarray  # (3, 1), nn.Linear(X)
    checks: tuple[Check, ...]


@_keeps_global_rng
def layer_form(seed: int = DEFAULT_SEED) -> LayerForm:
    """Section 3: a layer draws its own random w and b; the same seed gives the same layer and the same zhat."""
    import torch

    from .. import Linear

    x = torch.tensor([[0, 0], [0, 1], [1, 0]], dtype=torch.float32)
    torch.manual_seed(seed)
    ours = Linear(2, 1)
    torch.manual_seed(seed)
    reference = torch.nn.Linear(2, 1)
    with torch.no_grad():
        zhat = ours(x)
        zhat_torch = reference(x)
    checks = (
        _check("same seed, same draws: linneuron.Linear.weight == nn.Linear.weight", ours.weight, reference.weight),
        _check("linneuron.Linear.bias == nn.Linear.bias", ours.bias, reference.bias),
        _check("zhat: linneuron.Linear(X) == nn.Linear(X) (bit for bit)", zhat, zhat_torch),
    )
    return LayerForm(
        seed,
        x.numpy(),
        ours.weight.detach().numpy().copy(),
        ours.bias.detach().numpy().copy(),
        zhat.numpy(),
        zhat_torch.numpy(),
        checks,
    )
