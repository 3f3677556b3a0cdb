"""Modules: ``Linear`` (a drop-in nn.Linear), ``Neuron`` (threshold layer H(xWᵀ + b)), ``Step``, ``swap_linear``.

>>> import torch, linneuron
>>> model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
>>> model = linneuron.swap_linear(model)   # same parameters, linneuron kernels
>>> type(model[0]).__name__, model(torch.ones(2, 3)).shape
('Linear', torch.Size([2, 1]))
"""

from __future__ import annotations

import torch
from torch import nn

from . import functional as F
from ._surrogate import DEFAULT_SURROGATE, SURROGATE_NAMES, resolve
from .functional import _dynamo_compiling, _fast_linear

__all__ = ["Linear", "Neuron", "Step", "swap_linear"]


def _weight_and_bias(module: nn.Module):
    """``(module.weight, module.bias)``, read from ``module._parameters`` where both are registered there.

    Each of ``module.weight`` and ``module.bias`` goes through nn.Module.__getattr__, reached only after the
    ordinary lookup has failed and raised (measured ~0.4 µs each, as long as a tiny layer's whole kernel call). A
    name registered in ``_parameters`` resolves to that entry: Module.__setattr__ keeps it out of the instance
    ``__dict__`` and register_parameter refuses a name the class defines. Where either name is not registered
    (parametrizations, pruning and weight_norm move ``weight`` out of ``_parameters``), the ordinary lookup.
    """
    params = module._parameters
    try:
        return params["weight"], params["bias"]
    except KeyError:
        return module.weight, module.bias


class Linear(nn.Linear):
    """``torch.nn.Linear`` computed by linneuron's kernels.

    A subclass of nn.Linear: the same constructor, parameters (drawn identically under the same seed),
    ``state_dict`` keys, ``reset_parameters`` and ``repr``; only ``forward`` differs.

    >>> layer = Linear(3, 1)
    >>> isinstance(layer, torch.nn.Linear), layer(torch.ones(5, 3)).shape
    (True, torch.Size([5, 1]))
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        # F.linear's body, inlined: one Python call less on the tiny layers where the call is the whole cost.
        if not _dynamo_compiling():
            weight, bias = _weight_and_bias(self)
            out = _fast_linear(input, weight, bias, False)
            if out is not None:
                return out
            return F._linear_general(input, weight, bias)
        return F._linear_general(input, self.weight, self.bias)  # what torch.compile traces, as nn.Linear

    @classmethod
    def from_torch(cls, linear: nn.Linear) -> Linear:
        """A ``Linear`` that SHARES ``linear``'s parameters (the same Parameter objects, no copy).

        Optimizers and anything else holding those parameters keep working; updating one layer updates the
        other. For an independent copy use ``copy.deepcopy`` first.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"Linear.from_torch(): expected a torch.nn.Linear, got {type(linear).__name__}")
        # Built on the meta device so that no parameters are drawn and then thrown away.
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        new.weight = linear.weight
        new.bias = linear.bias
        new.train(linear.training)
        return new


def swap_linear(model: nn.Module) -> nn.Module:
    """Replace every ``torch.nn.Linear`` in ``model`` (in place) by a ``linneuron.Linear`` sharing its parameters.

    Only modules whose type is exactly nn.Linear are swapped: subclasses may override ``forward`` (and
    modules such as nn.MultiheadAttention read their weights directly). Returns the model, or the new layer
    if ``model`` itself is an nn.Linear.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"swap_linear(): model must be a torch.nn.Module, got {type(model).__name__}")
    if type(model) is nn.Linear:
        return Linear.from_torch(model)
    for name, child in model.named_children():
        if type(child) is nn.Linear:
            setattr(model, name, Linear.from_torch(child))
        else:
            swap_linear(child)
    return model


class Step(nn.Module):
    """The unit step H(x) as a layer (exact forward, ``surrogate`` gradient; see linneuron.functional.step)."""

    def __init__(self, surrogate: str | None = DEFAULT_SURROGATE, alpha: float | None = None) -> None:
        super().__init__()
        self._code, self.alpha = resolve(surrogate, alpha, "Step")
        self.surrogate = SURROGATE_NAMES[self._code]

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.step(input, self.surrogate, self.alpha)

    def extra_repr(self) -> str:
        return f"surrogate={self.surrogate!r}, alpha={self.alpha}"


class Neuron(nn.Module):
    """A layer of threshold neurons (perceptrons): ``H(x Wᵀ + b)``, fires 1 where the weighted sum reaches θ = -b.

    Parameters are initialised and named exactly like nn.Linear's (``weight``, ``bias``). Training uses the
    ``surrogate`` gradient (see linneuron.functional.step); inference runs the fused GEMM + step kernel.

    >>> layer = Neuron(2, 1)
    >>> with torch.no_grad():
    ...     _ = layer.weight.fill_(1.0)
    ...     layer.threshold = torch.tensor([1.5])   # AND
    >>> layer(torch.tensor([[0.0, 1.0], [1.0, 1.0]])).flatten().tolist()
    [0.0, 1.0]
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        surrogate: str | None = DEFAULT_SURROGATE,
        alpha: float | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty((out_features, in_features), **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self._code, self.alpha = resolve(surrogate, alpha, "Neuron")
        self.surrogate = SURROGATE_NAMES[self._code]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation of nn.Linear (same draws under the same seed)."""
        nn.Linear.reset_parameters(self)  # type: ignore[arg-type]  # uses only weight, bias

    @property
    def threshold(self) -> torch.Tensor:
        """θ = -bias (a detached tensor): neuron j fires when w_j · x >= θ_j. Zeros when there is no bias."""
        if self.bias is None:
            return torch.zeros(self.out_features, device=self.weight.device, dtype=self.weight.dtype)
        return -self.bias.detach()

    @threshold.setter
    def threshold(self, value) -> None:
        if self.bias is None:
            raise ValueError("Neuron.threshold: this layer has no bias (bias=False), so its threshold is fixed at 0")
        theta = torch.as_tensor(value, dtype=self.bias.dtype, device=self.bias.device)
        if theta.dim() > 1 or theta.numel() not in (1, self.out_features):
            raise ValueError(
                f"Neuron.threshold: expected a scalar or shape ({self.out_features},) (one θ per output), "
                f"got shape {tuple(theta.shape)}"
            )
        with torch.no_grad():
            self.bias.copy_(-theta)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if _dynamo_compiling():
            return F.neuron(input, self.weight, self.bias, self.surrogate, self.alpha)
        weight, bias = _weight_and_bias(self)
        return F.neuron(input, weight, bias, self.surrogate, self.alpha)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"surrogate={self.surrogate!r}, alpha={self.alpha}"
        )
