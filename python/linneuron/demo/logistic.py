"""Demo section 6: logistic regression, a two-class classifier, against Newton's float64 minimum."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checks import DEFAULT_SEED, Check, _bar, _check, _keeps_global_rng

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

    from .. import Linear
    from .. import functional as lnf
    from .datasets import exam_scores

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
