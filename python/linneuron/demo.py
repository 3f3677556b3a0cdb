"""linneuron demo: the beginner's neuron tutorial as a program, on linneuron's kernels, checked against torch.

Six sections follow the tutorial's story: 1) one neuron with a threshold and a bias, 2) the tensor form
zhat = X w, 3) the layer form (linneuron.Linear as nn.Linear), 4) linear regression as a one-layer network,
5) the perceptron (AND, OR, and why not XOR), 6) logistic regression, a two-class classifier. Each step runs on
linneuron's kernels and is checked against torch or a closed form; the checks are printed, and the exit status
is 1 if one fails. The pictures need matplotlib (pip install 'linneuron[plot]'). Story: docs/tutorial.md.

  linneuron demo                        all sections, pictures into ./linneuron-demo
  linneuron demo --no-plot --section 4  one section, no pictures

In Python each section is a function returning its numbers as a dataclass with its ``checks``:
``one_neuron()``, ``tensor_form()``, ``layer_form()``, ``linear_regression()``, ``perceptron()``,
``logistic_regression()``; ``run_demo()`` prints and draws them.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, TypeVar

import numpy as np

HELP = "run the neuron tutorial step by step on linneuron's kernels, checking each step against torch"

__all__ = [
    "Check",
    "GateFit",
    "LayerForm",
    "Logistic",
    "OneNeuron",
    "Perceptron",
    "ProgressBar",
    "Regression",
    "TensorForm",
    "XorNetwork",
    "add_arguments",
    "layer_form",
    "linear_regression",
    "logistic_regression",
    "one_neuron",
    "perceptron",
    "run_demo",
    "tensor_form",
]

DEFAULT_SEED = 66  # the seed the tutorial uses for torch.manual_seed
DEFAULT_OUT = "linneuron-demo"


# --------------------------------------------------------------------------------------------------------------
# Checks and the progress bar


@dataclass(frozen=True)
class Check:
    """One comparison of a linneuron result with a reference no one here wrote (torch, or a closed form)."""

    claim: str
    max_abs_diff: float
    tolerance: float = 0.0

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance  # a NaN difference fails


def _as_float64(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def _max_abs_diff(ours: Any, reference: Any) -> float:
    """Largest absolute difference; infinite when the shapes differ, NaN where only one side is NaN."""
    a, b = _as_float64(ours), _as_float64(reference)
    if a.shape != b.shape:
        return math.inf
    if a.size == 0:
        return 0.0
    both_nan = np.isnan(a) & np.isnan(b)
    return float(np.max(np.where(both_nan, 0.0, np.abs(a - b))))


def _check(claim: str, ours: Any, reference: Any, tolerance: float = 0.0) -> Check:
    return Check(claim, _max_abs_diff(ours, reference), tolerance)


class ProgressBar:
    """A one-line progress bar for training loops, redrawn in place on a terminal and silent otherwise.

    It redraws only when the shown percentage changes, so a long loop costs at most 101 writes.

    >>> import io
    >>> stream = io.StringIO()
    >>> with ProgressBar(4, "fit", stream=stream, enabled=True, width=4) as bar:
    ...     for i in range(4):
    ...         bar.update(i + 1)
    >>> stream.getvalue().splitlines()[-1].split("\\r")[-1]
    'fit [####] 100%  4/4'
    """

    def __init__(
        self, total: int, label: str, *, stream: IO[str] | None = None, enabled: bool | None = None, width: int = 24
    ) -> None:
        if total < 1:
            raise ValueError(f"ProgressBar(): total must be at least 1, got {total}")
        self.total = total
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.width = width
        self._shown_percent = -1
        self._drawn = False
        self._last_length = 0

    def update(self, done: int, note: str = "") -> None:
        if not self.enabled:
            return
        percent = 100 * done // self.total
        if percent == self._shown_percent:
            return
        self._shown_percent = percent
        filled = self.width * done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        line = f"{self.label} [{bar}] {percent:3d}%  {done}/{self.total}"
        if note:
            line += f"  {note}"
        # Pad over the previous line's tail when this one is shorter (the note can shrink).
        self.stream.write("\r" + line.ljust(self._last_length))
        self._last_length = len(line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_F = TypeVar("_F", bound=Callable[..., Any])


def _keeps_global_rng(fn: _F) -> _F:
    """Run ``fn`` on a copy of torch's CPU random state: a section seeds torch, the caller's stream is untouched."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.random.fork_rng(devices=[]):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _bar(total: int, label: str, progress: bool | None) -> ProgressBar:
    return ProgressBar(total, label, enabled=None if progress is None else progress)


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

    from . import numpy as lnp

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

    from . import functional as lnf

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

    from . import Linear

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

    from . import Linear
    from ._datasets import city_profit

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

    from . import Neuron
    from . import functional as lnf

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


# --------------------------------------------------------------------------------------------------------------
# Section 6: logistic regression, a two-class classifier


@dataclass(frozen=True)
class Logistic:
    """Admission from two exam scores: sigmoid(linneuron.Linear(2, 1)) trained on the cross-entropy."""

    scores: np.ndarray  # (n, 2)
    admitted: np.ndarray  # (n,)
    mean: np.ndarray  # (2,), used to standardise the scores
    std: np.ndarray  # (2,)
    epochs: int
    lr: float
    losses: np.ndarray  # (epochs,) binary cross-entropy before each step, linneuron
    losses_torch: np.ndarray  # (epochs,) nn.Linear trained side by side
    loss: float  # cross-entropy after training
    loss_best: float  # the minimum over all lines, by Newton's method in float64
    weight: np.ndarray  # (2,) in the scores' own units: z = weight . scores + bias
    bias: float
    accuracy: float  # share of applicants classified right, class = H(z), by the fused neuron kernel
    example: tuple[float, float]  # two scores
    example_probability: float  # sigmoid(z) for them
    checks: tuple[Check, ...]


@_keeps_global_rng
def logistic_regression(
    seed: int = DEFAULT_SEED, epochs: int = 300, lr: float = 1.0, progress: bool | None = False
) -> Logistic:
    """Section 6. Replace the step by the smooth sigmoid and the squared error by the cross-entropy, and the
    neuron becomes a probabilistic two-class classifier that plain gradient descent can train."""
    import torch
    import torch.nn.functional as F

    from . import Linear
    from . import functional as lnf
    from ._datasets import exam_scores

    data = exam_scores()
    mean, std = data.scores.mean(axis=0), data.scores.std(axis=0)
    x = torch.tensor((data.scores - mean) / std, dtype=torch.float32)
    t = torch.tensor(data.admitted, dtype=torch.float32).unsqueeze(1)

    torch.manual_seed(seed)
    model = Linear(2, 1)
    twin = torch.nn.Linear(2, 1)
    twin.load_state_dict(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=lr)
    losses, losses_torch = [], []
    with _bar(epochs, "6. logistic    ", progress) as bar:
        for epoch in range(epochs):
            loss = F.binary_cross_entropy_with_logits(model(x), t)
            twin_loss = F.binary_cross_entropy_with_logits(twin(x), t)
            optimizer.zero_grad()
            twin_optimizer.zero_grad()
            loss.backward()
            twin_loss.backward()
            optimizer.step()
            twin_optimizer.step()
            losses.append(loss.item())
            losses_torch.append(twin_loss.item())
            bar.update(epoch + 1, f"loss {losses[-1]:.4f}")

    w_std = model.weight.detach()[0].double().numpy()
    b_std = model.bias.item()
    weight = w_std / std
    bias = float(b_std - np.sum(w_std * mean / std))
    with torch.no_grad():
        decided = lnf.neuron(x, model.weight, model.bias)[:, 0]  # class 1 where z >= 0, i.e. sigmoid(z) >= 0.5
        decided_torch = (torch.sigmoid(twin(x)) >= 0.5).float()[:, 0]
        example = (45.0, 85.0)
        x_example = torch.tensor([[(example[i] - mean[i]) / std[i] for i in range(2)]], dtype=torch.float32)
        probability = torch.sigmoid(model(x_example)).item()
        probability_torch = torch.sigmoid(twin(x_example)).item()
        loss_final = F.binary_cross_entropy_with_logits(model(x), t).item()
    accuracy = float((decided.numpy() == data.admitted).mean())
    loss_best = _logistic_minimum(data.scores, data.admitted)

    checks = (
        _check("every epoch's loss: linneuron.Linear == nn.Linear", losses, losses_torch, 1e-5),
        _check(
            "final weights: linneuron == nn.Linear",
            torch.cat([model.weight.detach()[0], model.bias.detach()]),
            torch.cat([twin.weight.detach()[0], twin.bias.detach()]),
            1e-5,
        ),
        _check(
            "classes: fused linneuron.functional.neuron (z >= 0) == torch.sigmoid(z) >= 0.5", decided, decided_torch
        ),
        _check("P(admitted | 45, 85): linneuron == nn.Linear", probability, probability_torch, 1e-6),
        _check("final cross-entropy == the minimum (Newton's method, float64)", loss_final, loss_best, 1e-4),
    )
    return Logistic(
        data.scores,
        data.admitted,
        mean,
        std,
        epochs,
        lr,
        np.array(losses),
        np.array(losses_torch),
        loss_final,
        loss_best,
        weight,
        bias,
        accuracy,
        example,
        probability,
        checks,
    )


def _logistic_minimum(features: np.ndarray, labels: np.ndarray, iterations: int = 50) -> float:
    """The smallest mean cross-entropy of sigmoid(w . x + b) over all w, b: Newton's method in float64.

    The loss is convex; with overlapping classes its minimum is finite and Newton converges quadratically.
    """
    design = np.hstack([np.ones((features.shape[0], 1)), features])
    params = np.zeros(design.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ params)))
        hessian = (design.T * (p * (1.0 - p))) @ design
        params -= np.linalg.solve(hessian, design.T @ (p - labels))
    z = design @ params
    # log(1 + e^z) - t z, written to stay finite for large |z|
    return float(np.mean(np.logaddexp(0.0, z) - labels * z))


# --------------------------------------------------------------------------------------------------------------
# Printing


def _fmt(values: Any, digits: int = 4) -> str:
    """Numbers as the tutorial writes them: fixed point, nested lists for arrays, no negative zero."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0:
        return f"{float(array) + 0.0:.{digits}f}"  # + 0.0 turns -0.0 into 0.0
    return "[" + ", ".join(_fmt(row, digits) for row in array) + "]"


def _plus(value: float, digits: int = 4) -> str:
    """``+ 1.2000`` or ``- 1.2000``: a signed term of a printed formula."""
    return f"{'-' if value < 0 else '+'} {abs(value):.{digits}f}"


def _bits(values: Any) -> str:
    return "".join(str(int(v)) for v in np.asarray(values).ravel())


def _print_checks(checks: Sequence[Check], out: IO[str]) -> None:
    for check in checks:
        verdict = "ok" if check.passed else "FAILED"
        bound = "" if check.tolerance == 0 else f" (tolerance {check.tolerance:.1e})"
        out.write(f"  check  {check.claim}: max |diff| = {check.max_abs_diff:.3g}{bound}  {verdict}\n")


def _print_one_neuron(r: OneNeuron, out: IO[str]) -> None:
    w1, w2, w3 = r.weights
    out.write(
        "A neuron adds up the signals x1, x2, x3 it receives, each weighted by how much it matters (w1, w2, w3),\n"
        "and fires (y = 1) when the sum reaches its threshold theta, else stays quiet (y = 0):\n"
        "    y = H(w1*x1 + w2*x2 + w3*x3 - theta),   H(z) = 1 if z >= 0 else 0   (the unit step)\n"
        f"Here w = ({w1:g}, {w2:g}, {w3:g}) and theta = {r.theta:g}. All eight input patterns:\n"
        "    x1 x2 x3   sum   fires?\n"
    )
    for row, s, y in zip(r.inputs, r.weighted_sum, r.fires_threshold):
        out.write(f"     {int(row[0])}  {int(row[1])}  {int(row[2])}   {s:4.2f}   {'yes' if y else 'no'}\n")
    out.write(
        f"Writing b = -theta = {r.bias:g} (the bias) turns the threshold into an ordinary term of the sum:\n"
        "    y = H(w1*x1 + w2*x2 + w3*x3 + b)\n"
        "The two are equal because sum >= theta and sum + b >= 0 are the same inequality (subtract theta on both\n"
        "sides); in floating point, sum - theta and sum + (-theta) are even the same operation, bit for bit.\n"
        "The bias is also the weight of an extra input x0 that is always 1, which is how the next section\n"
        "writes it. A large theta makes a sluggish neuron; a small one, an excitable neuron.\n"
        f"    z = sum + b: {_fmt(r.z, 2)}   fires (fused step kernel): {_bits(r.fires_bias)}\n"
    )
    _print_checks(r.checks, out)


def _print_tensor_form(r: TensorForm, out: IO[str]) -> None:
    out.write(
        "With x0 = 1 in front of each sample, the whole data set is one matrix X and one weight vector w,\n"
        "and every prediction at once is zhat = X w (forward propagation):\n"
    )
    for row, target in zip(r.x, r.z):
        out.write(f"    x = {_fmt(row, 0)}   z = {target:+.1f}\n")
    out.write(
        f"    w = {_fmt(r.w, 1)}\n"
        f"    zhat = linneuron.functional.linear(X, w) = {_fmt(r.zhat, 1)}\n"
        f"    torch.mv(X, w)                           = {_fmt(r.zhat_torch_mv, 1)}\n"
    )
    _print_checks(r.checks, out)


def _print_layer_form(r: LayerForm, out: IO[str]) -> None:
    out.write(
        "A layer (torch.nn.Linear, here linneuron.Linear) holds w and b itself and draws them at random when it\n"
        "is built: Linear(2, 1) takes 2 features (the neurons of the layer before) to 1 output neuron.\n"
        "X has no column of ones now: the layer adds its bias b.\n"
        f"    torch.manual_seed({r.seed}); layer = linneuron.Linear(2, 1)\n"
        f"    w = {_fmt(r.weight[0])}   b = {_fmt(r.bias[0])}\n"
        f"    zhat = layer(X) for X = [[0, 0], [0, 1], [1, 0]]: {_fmt(r.zhat[:, 0])}\n"
        f"    the same with torch.nn.Linear(2, 1) after torch.manual_seed({r.seed}): {_fmt(r.zhat_torch[:, 0])}\n"
        "Random weights, so zhat is not the z we wanted: that is what training fixes. The seed makes it repeatable.\n"
    )
    _print_checks(r.checks, out)


def _print_regression(r: Regression, out: IO[str]) -> None:
    out.write(
        f"Profit of a food truck against the population of {r.population.size} cities (generated data, "
        "units of 10,000). One input,\n"
        "one output neuron, no step: zhat = w * population + b, a straight line. Training = finding w and b by\n"
        "gradient descent on the mean squared error, with linneuron.Linear(1, 1) computing the forward pass and\n"
        "the gradients. Population is standardised first (mean "
        f"{r.mean:.4f}, std {r.std:.4f}) so one step size suits both.\n"
        f"    {r.epochs} epochs at learning rate {r.lr:g}: mse {r.losses[0]:.4f} -> {r.mse:.4f}\n"
        f"    gradient descent: profit = {r.slope:.4f} * population {_plus(r.intercept)}\n"
        f"    least squares   : profit = {r.slope_exact:.4f} * population {_plus(r.intercept_exact)}"
        f"   (smallest mse {r.mse_exact:.4f})\n"
    )
    for people, by_network, by_formula in r.predictions:
        out.write(
            f"    a city of {people:,.0f} people: predicted profit ${by_network:,.0f}"
            f" (least squares ${by_formula:,.0f})\n"
        )
    _print_checks(r.checks, out)


def _print_perceptron(r: Perceptron, out: IO[str]) -> None:
    out.write(
        "A single neuron y = H(w1*x1 + w2*x2 + b) learning logic gates with the perceptron rule:\n"
        f"    after each sample: w += lr * (t - y) * x,  b += lr * (t - y)   (lr = {r.lr:g})\n"
        "linneuron.Neuron(2, 1, surrogate='ste') trained by autograd on (y - t)^2 / 2 does exactly this: the\n"
        "straight-through surrogate takes dH/dz = 1 (for |z| <= 1/alpha = "
        f"{1 / r.alpha:g}), so the gradient is (y - t) * x.\n"
    )
    for gate in r.gates:
        epochs = len(gate.mistakes_per_epoch)
        state = f"learned in {epochs} epochs" if gate.converged else f"NOT learned in {epochs} epochs"
        out.write(
            f"  {gate.name:<3}: truth {_bits(gate.targets)}  predictions {_bits(gate.predictions)}  {state}\n"
            f"       mistakes per epoch {list(gate.mistakes_per_epoch)}\n"
            f"       w = {_fmt(gate.weight, 2)}  b = {gate.bias:.2f}  (threshold theta = -b = {gate.threshold:.2f})\n"
            f"       started at w = {_fmt(gate.initial_weight, 4)}, b = {gate.initial_bias:.4f}\n"
        )
    net = r.xor_network
    out.write(
        "Why not XOR: one neuron fires on one side of the line w1*x1 + w2*x2 + b = 0, so it can only learn\n"
        "classes a straight line separates (linearly separable). XOR needs (0,1) and (1,0) on one side and\n"
        "(0,0) and (1,1) on the other. Suppose a neuron did it: (0,0) -> 0 gives b < 0; (0,1) and (1,0) -> 1\n"
        "give w2 + b >= 0 and w1 + b >= 0; adding these, w1 + w2 + b >= -b > 0, so (1,1) would fire too.\n"
        "No line exists, and the perceptron rule never settles: it keeps making mistakes every epoch.\n"
        "Two layers do it: hidden neurons OR and NAND, then AND of the two:\n"
        f"    hidden w = {_fmt(net.hidden_weight, 0)}, b = {_fmt(net.hidden_bias, 1)}; "
        f"output w = {_fmt(net.output_weight, 0)}, b = {_fmt(net.output_bias, 1)}\n"
        f"    OR {_bits(net.hidden[:, 0])}  NAND {_bits(net.hidden[:, 1])}  ->  XOR {_bits(net.output)}\n"
    )
    _print_checks(r.checks, out)


def _print_logistic(r: Logistic, out: IO[str]) -> None:
    out.write(
        "The tutorial's next step: logistic regression, a two-class classifier. Keep the layer z = w . x + b, swap\n"
        "the step for the smooth sigmoid p = 1 / (1 + exp(-z)) (the probability of class 1) and the squared error\n"
        "for the cross-entropy. Now the output has a useful gradient everywhere. Admission from two exam\n"
        f"scores, {r.admitted.size} applicants (generated), {r.epochs} epochs of gradient descent at lr {r.lr:g}:\n"
        f"    cross-entropy {r.losses[0]:.4f} -> {r.loss:.4f}   (the best any line reaches: {r.loss_best:.4f},\n"
        "    found by Newton's method in float64)\n"
        f"    z = {r.weight[0]:.4f} * exam1 {_plus(r.weight[1])} * exam2 {_plus(r.bias)}\n"
        f"    class = H(z) (p >= 0.5): {100 * r.accuracy:.0f}% of applicants classified right\n"
        f"    P(admitted | scores {r.example[0]:g} and {r.example[1]:g}) = {r.example_probability:.4f}\n"
        "Beyond: several outputs with softmax (multi-class), hidden layers (as for XOR), convolutional and\n"
        "recurrent networks: the same layer, stacked and shaped differently.\n"
    )
    _print_checks(r.checks, out)


# --------------------------------------------------------------------------------------------------------------
# Pictures (matplotlib's object API, no pyplot: no global state, no GUI backend)


def _new_figure(columns: int, width: float = 4.0, height: float = 3.2) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * columns, height), layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    return figure, list(axes)


def _save(figure: Any, out_dir: Path, name: str) -> Path:
    path = out_dir / name
    figure.savefig(path, dpi=80, metadata={"Software": None})
    return path


def _plot_one_neuron(r: OneNeuron, out_dir: Path) -> list[Path]:
    figure, (left, right) = _new_figure(2)
    sums = np.linspace(-0.25, 2.0, 451)
    for axis, shift, xlabel, edge in (
        (left, 0.0, "weighted sum w . x", r.theta),
        (right, r.bias, "z = w . x + b", 0.0),
    ):
        below, above = sums[sums + shift < edge - 1e-12] + shift, sums[sums + shift >= edge] + shift
        axis.plot(below, np.zeros_like(below), color="tab:blue")
        axis.plot(above, np.ones_like(above), color="tab:blue")
        axis.plot([edge], [0], marker="o", markerfacecolor="white", color="tab:blue")
        axis.plot([edge], [1], marker="o", color="tab:blue")
        axis.axvline(edge, color="gray", linestyle=":", linewidth=1)
        axis.scatter(r.weighted_sum + shift, r.fires_bias, color="tab:red", zorder=3, label="the 8 input patterns")
        axis.set_xlabel(xlabel)
        axis.set_ylabel("y (fires)")
        axis.set_yticks([0, 1])
    left.set_title(f"fires when the sum reaches theta = {r.theta:g}")
    right.set_title(f"the same with b = -theta = {r.bias:g}: step at 0")
    left.legend(loc="upper left", fontsize="small")
    return [_save(figure, out_dir, "step.png")]


def _plot_regression(r: Regression, out_dir: Path) -> list[Path]:
    figure, (left, right) = _new_figure(2)
    left.scatter(r.population, r.profit, s=12, marker="x", color="tab:red", label="cities")
    line_x = np.array([r.population.min(), r.population.max()])
    left.plot(line_x, r.slope * line_x + r.intercept, color="tab:blue", label="gradient descent (linneuron)")
    left.plot(
        line_x,
        r.slope_exact * line_x + r.intercept_exact,
        color="black",
        linestyle="--",
        linewidth=1,
        label="least squares",
    )
    left.set_xlabel("population of city (10,000s)")
    left.set_ylabel("profit ($10,000s)")
    left.set_title("profit against population")
    left.legend(loc="upper left", fontsize="small")
    right.plot(np.arange(r.epochs), r.losses, color="tab:blue", label="linneuron.Linear")
    right.axhline(r.mse_exact, color="black", linestyle="--", linewidth=1, label="least-squares minimum")
    right.set_yscale("log")
    right.set_xlabel("epoch")
    right.set_ylabel("mean squared error")
    right.set_title("training loss")
    right.legend(loc="upper right", fontsize="small")
    return [_save(figure, out_dir, "regression.png")]


def _plot_perceptron(r: Perceptron, out_dir: Path) -> list[Path]:
    figure, axes = _new_figure(len(r.gates), width=3.0, height=3.2)
    grid = np.linspace(-0.5, 1.5, 201)
    gx, gy = np.meshgrid(grid, grid)
    for axis, gate in zip(axes, r.gates):
        from . import numpy as lnp

        points = np.stack([gx.ravel(), gy.ravel()], axis=1)
        region = lnp.neuron(points, gate.weight[None, :].astype(np.float64), np.array([gate.bias]))
        axis.contourf(gx, gy, region.reshape(gx.shape), levels=[-0.5, 0.5, 1.5], colors=["#dde6f5", "#f8dcc8"])
        w1, w2 = gate.weight
        if abs(w2) > 1e-12:
            axis.plot(grid, -(w1 * grid + gate.bias) / w2, color="black", linewidth=1)
        elif abs(w1) > 1e-12:
            axis.axvline(-gate.bias / w1, color="black", linewidth=1)
        for (p, q), target, predicted in zip(r.inputs, gate.targets, gate.predictions):
            color = "tab:orange" if target else "tab:blue"
            axis.scatter(
                [p],
                [q],
                s=90,
                color=color,
                edgecolors="red" if predicted != target else "black",
                linewidths=2.5 if predicted != target else 1,
                zorder=3,
            )
        axis.set_xlim(-0.5, 1.5)
        axis.set_ylim(-0.5, 1.5)
        axis.set_aspect("equal")
        axis.set_xlabel("x1")
        axis.set_ylabel("x2")
        wrong = int(np.sum(gate.predictions != gate.targets))
        verdict = "learned" if gate.converged else f"not learned ({wrong} wrong)"
        axis.set_title(f"{gate.name}: {verdict}", fontsize="medium")
    figure.suptitle(
        "orange: should fire, blue: should not; shaded orange: where the neuron fires; red ring: wrong",
        fontsize="small",
    )
    return [_save(figure, out_dir, "perceptron.png")]


def _plot_logistic(r: Logistic, out_dir: Path) -> list[Path]:
    figure, (left, right) = _new_figure(2)
    z = np.linspace(-6, 6, 241)
    left.plot(z, 1 / (1 + np.exp(-z)), color="tab:blue", label="sigmoid (logistic regression)")
    left.plot(z, (z >= 0).astype(float), color="tab:red", linestyle="--", label="step (perceptron)")
    left.set_xlabel("z = w . x + b")
    left.set_ylabel("output")
    left.set_title("a soft step has a gradient everywhere")
    left.legend(loc="upper left", fontsize="small")
    admitted = r.admitted == 1
    right.scatter(*r.scores[admitted].T, s=16, marker="+", color="tab:orange", label="admitted")
    right.scatter(
        *r.scores[~admitted].T, s=14, marker="o", facecolors="none", edgecolors="tab:blue", label="not admitted"
    )
    exam1 = np.array([30.0, 100.0])
    right.plot(
        exam1, -(r.weight[0] * exam1 + r.bias) / r.weight[1], color="black", linewidth=1, label="p = 0.5 boundary"
    )
    right.set_xlim(30, 100)
    right.set_ylim(30, 100)
    right.set_xlabel("exam 1")
    right.set_ylabel("exam 2")
    right.set_title("two-class classifier")
    right.legend(loc="upper right", fontsize="small", framealpha=0.9)
    return [_save(figure, out_dir, "logistic.png")]


# --------------------------------------------------------------------------------------------------------------
# The command


@dataclass(frozen=True)
class _Section:
    title: str
    compute: Callable[[int, bool | None], Any]  # (seed, progress) -> result
    show: Callable[[Any, IO[str]], None]
    plot: Callable[[Any, Path], list[Path]] | None


SECTIONS = {
    1: _Section(
        "One neuron: weights, threshold, bias", lambda seed, progress: one_neuron(), _print_one_neuron, _plot_one_neuron
    ),
    2: _Section("The tensor form: zhat = X w", lambda seed, progress: tensor_form(), _print_tensor_form, None),
    3: _Section("The layer form: linneuron.Linear", lambda seed, progress: layer_form(seed), _print_layer_form, None),
    4: _Section(
        "Linear regression: a one-layer network",
        lambda seed, progress: linear_regression(seed, progress=progress),
        _print_regression,
        _plot_regression,
    ),
    5: _Section(
        "The perceptron: AND, OR, and why not XOR",
        lambda seed, progress: perceptron(seed, progress=progress),
        _print_perceptron,
        _plot_perceptron,
    ),
    6: _Section(
        "Next steps: logistic regression, a two-class classifier",
        lambda seed, progress: logistic_regression(seed, progress=progress),
        _print_logistic,
        _plot_logistic,
    ),
}


def run_demo(
    sections: Sequence[int] = tuple(SECTIONS),
    seed: int = DEFAULT_SEED,
    out_dir: str | Path | None = None,
    progress: bool | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> tuple[dict[int, Any], list[Check], list[Path]]:
    """Run, print and (when ``out_dir`` is given and matplotlib is installed) draw the chosen sections.

    Returns the results by section number, every check, and the pictures written.
    """
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"run_demo(): no section {unknown}; sections are {list(SECTIONS)}")

    plot_dir: Path | None = None
    if out_dir is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            err.write(
                "linneuron demo: matplotlib is not installed, so no pictures are drawn "
                "(pip install 'linneuron[plot]' to get them, or pass --no-plot to skip them quietly)\n"
            )
        else:
            plot_dir = Path(out_dir)
            plot_dir.mkdir(parents=True, exist_ok=True)

    from . import __version__

    out.write(f"linneuron {__version__} demo: the neuron tutorial on linneuron's own kernels (seed {seed})\n")
    results: dict[int, Any] = {}
    checks: list[Check] = []
    pictures: list[Path] = []
    for number in sections:
        section = SECTIONS[number]
        out.write(f"\n== {number}. {section.title} ==\n")
        out.flush()
        result = section.compute(seed, progress)
        section.show(result, out)
        if plot_dir is not None and section.plot is not None:
            drawn = section.plot(result, plot_dir)
            for path in drawn:
                out.write(f"  picture: {path}\n")
            pictures.extend(drawn)
        results[number] = result
        checks.extend(result.checks)
    failed = [check for check in checks if not check.passed]
    out.write(f"\n{len(checks) - len(failed)} of {len(checks)} checks against torch or closed form passed.\n")
    for check in failed:
        out.write(f"FAILED: {check.claim} (max |diff| {check.max_abs_diff:.3g} > {check.tolerance:.1e})\n")
    out.flush()
    return results, checks, pictures


def _run(args: argparse.Namespace) -> int:
    _, checks, _ = run_demo(
        sections=tuple(dict.fromkeys(args.section)) if args.section else tuple(SECTIONS),
        seed=args.seed,
        out_dir=None if args.no_plot else args.out,
        progress=False if args.no_progress else None,
    )
    return 0 if all(check.passed for check in checks) else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``demo`` subcommand's options on ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the description's example lines
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=DEFAULT_OUT,
        help=f"folder for the pictures (PNG), created if needed (default: {DEFAULT_OUT})",
    )
    parser.add_argument("--no-plot", action="store_true", help="draw no pictures (matplotlib is then not needed)")
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"torch.manual_seed for the layers' random initial weights (default: {DEFAULT_SEED}, as in the tutorial)",
    )
    parser.add_argument(
        "--section",
        type=int,
        nargs="+",
        choices=sorted(SECTIONS),
        metavar="N",
        help="run only these sections (1-6; default: all)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (they show only on a terminal)")
    parser.set_defaults(run=_run)
