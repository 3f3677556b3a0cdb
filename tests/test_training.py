"""Training end to end: SGD linear regression reaching the least-squares solution, same trajectory as nn.Linear, and
threshold neurons learning AND / OR through surrogate gradients."""

from __future__ import annotations

import copy

import linneuron
import numpy as np
import pytest
import torch
from torch import nn


def _regression_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([[1.5], [-2.0], [0.25]], dtype=torch.float64) + 0.7
    y = y + 0.1 * torch.randn(256, 1, generator=g, dtype=torch.float64)
    return x, y


def _fit(layer, x, y, steps=300, lr=0.2):
    opt = torch.optim.SGD(layer.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(layer(x), y)
        loss.backward()
        opt.step()
    return layer


def test_sgd_linear_regression_reaches_least_squares_solution():
    x, y = _regression_data()
    torch.manual_seed(1)
    layer = _fit(linneuron.Linear(3, 1, dtype=torch.float64), x, y)
    design = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(design, y).solution.flatten()
    numpy_solution = np.linalg.lstsq(design.numpy(), y.numpy(), rcond=None)[0].flatten()
    fitted = torch.cat([layer.weight.detach().flatten(), layer.bias.detach()])
    torch.testing.assert_close(fitted, solution, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fitted.numpy(), numpy_solution, rtol=0, atol=1e-8)


def test_training_trajectory_matches_nn_linear():
    x, y = _regression_data()
    torch.manual_seed(2)
    reference = nn.Linear(3, 1, dtype=torch.float64)
    ours = linneuron.Linear.from_torch(copy.deepcopy(reference))
    _fit(reference, x, y, steps=25)
    _fit(ours, x, y, steps=25)
    torch.testing.assert_close(ours.weight, reference.weight, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours.bias, reference.bias, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gate", ["AND", "OR"])
@pytest.mark.parametrize("surrogate", ["atan", "sigmoid", "ste"])
def test_neuron_learns_logic_gate_with_surrogate(gate, surrogate):
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    target = torch.tensor([[0.0], [0.0], [0.0], [1.0]]) if gate == "AND" else torch.tensor([[0.0], [1.0], [1.0], [1.0]])
    torch.manual_seed(0)
    neuron = linneuron.Neuron(2, 1, surrogate=surrogate)
    opt = torch.optim.SGD(neuron.parameters(), lr=0.1)
    initial = neuron(x).detach()
    for _ in range(200):
        opt.zero_grad()
        nn.functional.mse_loss(neuron(x), target).backward()
        opt.step()
    with torch.no_grad():
        assert torch.equal(neuron(x), target)  # inference runs the fused GEMM + step kernel
    assert not torch.equal(initial, target)  # it had to learn something
    # The learned unit is a perceptron: w · x >= θ exactly where the gate is 1.
    sums = x @ neuron.weight.detach().t()
    assert torch.equal((sums >= neuron.threshold).float(), target)
