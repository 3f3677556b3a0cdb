"""Demo section 5: the perceptron rule on AND and OR, and a two-layer network for XOR."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checks import DEFAULT_SEED, Check, _bar, _check, _keeps_global_rng, _max_abs_diff

# --------------------------------------------------------------------------------------------------------------
# Section 5: the perceptron


@dataclass(frozen=True)
class GateFit:
    """A linneuron.Neuron(2, 1) trained on one logic gate with the perceptron rule."""

    name: str
    targets: np.ndarray  # (4,) for the inputs (0,0), (0,1), (1,0), (1,1)
    initial_weight: np.ndarray  # (2,)
    initial_bias: float
    weight: np.ndarray  # (2,) after training
    bias: float
    threshold: float  # Neuron.threshold, theta = -bias: section 1's form of the same neuron
    mistakes_per_epoch: tuple[int, ...]
    converged: bool  # an epoch went by without a mistake
    predictions: np.ndarray  # (4,) of the trained neuron, by the fused kernel


@dataclass(frozen=True)
class XorNetwork:
    """Two layers of hand-set neurons: hidden OR and NAND, then AND of the two, which is XOR."""

    hidden_weight: np.ndarray  # (2, 2)
    hidden_bias: np.ndarray  # (2,)
    output_weight: np.ndarray  # (1, 2)
    output_bias: np.ndarray  # (1,)
    hidden: np.ndarray  # (4, 2)
    output: np.ndarray  # (4,)


@dataclass(frozen=True)
class Perceptron:
    inputs: np.ndarray  # (4, 2)
    lr: float
    alpha: float  # the straight-through window |alpha * z| <= 1
    gates: tuple[GateFit, ...]  # AND, OR, XOR
    xor_network: XorNetwork
    checks: tuple[Check, ...]


GATES = {
    "AND": (0.0, 0.0, 0.0, 1.0),
    "OR": (0.0, 1.0, 1.0, 1.0),
    "XOR": (0.0, 1.0, 1.0, 0.0),
}


@_keeps_global_rng
def perceptron(
    seed: int = DEFAULT_SEED, lr: float = 0.25, max_epochs: int = 25, alpha: float = 0.1, progress: bool | None = False
) -> Perceptron:
    """Section 5. The classic perceptron rule ``w += lr * (t - y) * x``, ``b += lr * (t - y)``, one sample at a
    time, is exactly gradient descent on ``(y - t)^2 / 2`` when the step's derivative is taken as 1: the
    straight-through surrogate. linneuron.Neuron(surrogate="ste", alpha=0.1) uses 1 wherever |z| <= 10, which
    covers every z here, so its autograd step *is* the perceptron rule; a torch twin applies the rule by hand and
    every step is compared."""
    import torch

    from .. import Neuron
    from .. import functional as lnf

    x = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.float32)
    one = torch.ones(())
    gates = []
    param_diff = grad_diff = predict_diff = 0.0
    for name, truth in GATES.items():
        t = torch.tensor(truth).unsqueeze(1)
        torch.manual_seed(seed)  # every gate starts from the same neuron
        neuron = Neuron(2, 1, surrogate="ste", alpha=alpha)
        initial_weight = neuron.weight.detach().clone()[0].numpy()
        initial_bias = neuron.bias.item()
        twin_w = neuron.weight.detach().clone()
        twin_b = neuron.bias.detach().clone()
        optimizer = torch.optim.SGD(neuron.parameters(), lr=lr)
        mistakes_per_epoch = []
        with _bar(max_epochs, f"5. perceptron {name:<3}", progress) as bar:
            for epoch in range(max_epochs):
                mistakes = 0
                for i in range(4):
                    sample, target = x[i : i + 1], t[i : i + 1]
                    y = neuron(sample)
                    loss = 0.5 * ((y - target) ** 2).sum()
                    optimizer.zero_grad()
                    loss.backward()
                    # The twin: torch's own linear and heaviside, and the rule written out.
                    y_ref = torch.heaviside(torch.nn.functional.linear(sample, twin_w, twin_b), one)
                    error = target - y_ref
                    predict_diff = max(predict_diff, _max_abs_diff(y, y_ref))
                    grad_diff = max(
                        grad_diff,
                        _max_abs_diff(neuron.weight.grad, -error.T @ sample),
                        _max_abs_diff(neuron.bias.grad, -error.sum(0)),
                    )
                    optimizer.step()
                    twin_w += lr * error.T @ sample
                    twin_b += lr * error.sum(0)
                    param_diff = max(
                        param_diff, _max_abs_diff(neuron.weight, twin_w), _max_abs_diff(neuron.bias, twin_b)
                    )
                    mistakes += int(y.item() != target.item())
                mistakes_per_epoch.append(mistakes)
                bar.update(epoch + 1, f"mistakes {mistakes}")
                if mistakes == 0:
                    bar.update(max_epochs, "converged")
                    break
        with torch.no_grad():
            predictions = neuron(x)[:, 0]
            reference = torch.heaviside(torch.nn.functional.linear(x, twin_w, twin_b), one)[:, 0]
        predict_diff = max(predict_diff, _max_abs_diff(predictions, reference))
        gates.append(
            GateFit(
                name,
                np.array(truth),
                initial_weight,
                initial_bias,
                neuron.weight.detach()[0].numpy().copy(),
                neuron.bias.item(),
                float(neuron.threshold.item()),
                tuple(mistakes_per_epoch),
                mistakes_per_epoch[-1] == 0,
                predictions.numpy(),
            )
        )

    # XOR needs two layers: XOR(a, b) = AND(OR(a, b), NAND(a, b)). Weights set by hand, computed by the kernels.
    hidden_weight = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    hidden_bias = torch.tensor([-0.5, 1.5])
    output_weight = torch.tensor([[1.0, 1.0]])
    output_bias = torch.tensor([-1.5])
    hidden = lnf.neuron(x, hidden_weight, hidden_bias)
    output = lnf.neuron(hidden, output_weight, output_bias)[:, 0]
    hidden_ref = torch.heaviside(x @ hidden_weight.T + hidden_bias, one)
    output_ref = torch.heaviside(hidden_ref @ output_weight.T + output_bias, one)[:, 0]
    xor_network = XorNetwork(
        hidden_weight.numpy(),
        hidden_bias.numpy(),
        output_weight.numpy(),
        output_bias.numpy(),
        hidden.detach().numpy(),
        output.detach().numpy(),
    )

    checks = (
        Check("every prediction: linneuron.Neuron == torch.heaviside(F.linear)", predict_diff),
        Check("every gradient: linneuron backward (straight-through) == perceptron rule in torch", grad_diff),
        Check("every update: weights and bias == the torch twin", param_diff, 1e-6),
        _check("AND learned: predictions == truth table", gates[0].predictions, gates[0].targets),
        _check("OR learned: predictions == truth table", gates[1].predictions, gates[1].targets),
        _check(
            "two-layer XOR (linneuron.functional.neuron) == torch.heaviside layers",
            np.concatenate([xor_network.hidden.ravel(), xor_network.output]),
            np.concatenate([hidden_ref.numpy().ravel(), output_ref.numpy()]),
        ),
        _check("two-layer XOR == XOR truth table", xor_network.output, GATES["XOR"]),
    )
    return Perceptron(x.numpy(), lr, alpha, tuple(gates), xor_network, checks)
