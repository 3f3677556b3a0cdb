"""Demo section 4: linear regression as a one-layer network, trained next to an nn.Linear twin."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checks import DEFAULT_SEED, Check, _bar, _check, _keeps_global_rng, _max_abs_diff

# --------------------------------------------------------------------------------------------------------------
# Section 4: linear regression as a one-layer network


@dataclass(frozen=True)
class Regression:
    """Profit against population fit by gradient descent on linneuron.Linear(1, 1), and by least squares."""

    population: np.ndarray  # (n,) in 10,000s
    profit: np.ndarray  # (n,) in $10,000s
    mean: float  # of population, used to standardise the input
    std: float
    epochs: int
    lr: float
    losses: np.ndarray  # (epochs,) mean squared error before each step, linneuron
    losses_torch: np.ndarray  # (epochs,) the same for nn.Linear trained side by side
    slope: float  # the fitted line in the data's own units: profit = slope * population + intercept
    intercept: float
    slope_exact: float  # closed-form least squares (float64)
    intercept_exact: float
    mse: float  # mean squared error of the trained model
    mse_exact: float  # the smallest mean squared error any line reaches
    predictions: tuple[tuple[float, float, float], ...]  # (people, profit in $ by the network, by least squares)
    checks: tuple[Check, ...]


@_keeps_global_rng
def linear_regression(
    seed: int = DEFAULT_SEED, epochs: int = 200, lr: float = 0.05, progress: bool | None = False
) -> Regression:
    """Section 4. The input is standardised (mean 0, standard deviation 1) so that one step size suits both
    parameters; the line is then converted back to the data's units."""
    import torch
    import torch.nn.functional as F

    from .. import Linear
    from .datasets import city_profit

    data = city_profit()
    mean, std = float(data.population.mean()), float(data.population.std())
    x = torch.tensor((data.population - mean) / std, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.profit, dtype=torch.float32).unsqueeze(1)

    torch.manual_seed(seed)
    model = Linear(1, 1)
    twin = torch.nn.Linear(1, 1)
    twin.load_state_dict(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=lr)

    losses, losses_torch = [], []
    grad_diff = 0.0
    with _bar(epochs, "4. regression  ", progress) as bar:
        for epoch in range(epochs):
            loss = F.mse_loss(model(x), y)
            twin_loss = F.mse_loss(twin(x), y)
            optimizer.zero_grad()
            twin_optimizer.zero_grad()
            loss.backward()
            twin_loss.backward()
            grad_diff = max(
                grad_diff,
                _max_abs_diff(model.weight.grad, twin.weight.grad),
                _max_abs_diff(model.bias.grad, twin.bias.grad),
            )
            optimizer.step()
            twin_optimizer.step()
            losses.append(loss.item())
            losses_torch.append(twin_loss.item())
            bar.update(epoch + 1, f"mse {losses[-1]:.4f}")

    with torch.no_grad():
        mse = F.mse_loss(model(x), y).item()
    w, b = model.weight.item(), model.bias.item()
    slope, intercept = w / std, b - w * mean / std

    # The closed form: least squares on [1, population] in float64 (the "normal equation").
    design = np.stack([np.ones_like(data.population), data.population], axis=1)
    (intercept_exact, slope_exact), *_ = np.linalg.lstsq(design, data.profit, rcond=None)
    mse_exact = float(np.mean((design @ np.array([intercept_exact, slope_exact]) - data.profit) ** 2))

    predictions = []
    with torch.no_grad():
        for people in (35_000, 70_000):
            x_new = torch.tensor([[(people / 10_000 - mean) / std]], dtype=torch.float32)
            by_network = model(x_new).item() * 10_000
            by_formula = (slope_exact * people / 10_000 + intercept_exact) * 10_000
            predictions.append((float(people), by_network, float(by_formula)))

    scale = max(1.0, abs(float(intercept_exact)), abs(float(slope_exact)))
    checks = (
        _check("every epoch's loss: linneuron.Linear == nn.Linear", losses, losses_torch, 1e-6 * max(losses)),
        Check("every epoch's gradients: linneuron backward == torch autograd", grad_diff, 1e-4),
        _check(
            "final weight and bias: linneuron == nn.Linear",
            [w, b],
            [twin.weight.item(), twin.bias.item()],
            1e-5 * scale,
        ),
        _check("slope: gradient descent == least squares", slope, slope_exact, 1e-4 * scale),
        _check("intercept: gradient descent == least squares", intercept, intercept_exact, 1e-4 * scale),
        _check("final mse == smallest possible mse", mse, mse_exact, 1e-5 * mse_exact),
        _check(
            "predictions ($): network == least-squares line",
            [p[1] for p in predictions],
            [p[2] for p in predictions],
            1.0,
        ),
    )
    return Regression(
        data.population,
        data.profit,
        mean,
        std,
        epochs,
        lr,
        np.array(losses),
        np.array(losses_torch),
        slope,
        intercept,
        float(slope_exact),
        float(intercept_exact),
        mse,
        mse_exact,
        tuple(predictions),
        checks,
    )
