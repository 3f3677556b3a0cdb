"""The demo's printed story: each section's numbers as the tutorial writes them, and its checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO, Any

import numpy as np

from .checks import Check
from .logistic import Logistic
from .neuron import LayerForm, OneNeuron, TensorForm
from .perceptron import Perceptron
from .regression import Regression

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
