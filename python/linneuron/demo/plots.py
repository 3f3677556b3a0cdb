"""The demo's pictures, drawn with matplotlib's object API (no pyplot: no global state, no GUI backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .logistic import Logistic
from .neuron import OneNeuron
from .perceptron import Perceptron
from .regression import Regression

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
        from .. import numpy as lnp

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
