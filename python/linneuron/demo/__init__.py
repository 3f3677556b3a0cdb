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
``logistic_regression()``; ``run_demo()`` prints and draws them. The package's modules: checks (Check,
ProgressBar), neuron (sections 1-3), regression, perceptron, logistic (sections 4-6), datasets, text (printing),
plots (pictures), command (run_demo and the options).
"""

from __future__ import annotations

# Besides __all__, the names the tests and the command use, as when the demo was one module (DEFAULT_SEED, ...).
from .checks import DEFAULT_SEED, Check, ProgressBar, _check, _max_abs_diff  # noqa: F401
from .command import DEFAULT_OUT, SECTIONS, add_arguments, run_demo  # noqa: F401
from .logistic import Logistic, logistic_regression
from .neuron import LayerForm, OneNeuron, TensorForm, layer_form, one_neuron, tensor_form
from .perceptron import GATES, GateFit, Perceptron, XorNetwork, perceptron  # noqa: F401
from .regression import Regression, linear_regression

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
